"""Layer problems on executors: column-split solves equal the whole solve, a thread pool and a
two-worker Dask LocalCluster give the serial result, a worker killed mid-run changes nothing,
and bad settings are refused before the model changes."""
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.methods import Method, get_method, register_method, unregister_method  # noqa: E402
from layertrim.bindings.torch import prune  # noqa: E402
from layertrim.bindings.torch.tasks import column_blocks  # noqa: E402
from layertrim.solvers import ParameterError  # noqa: E402
from layertrim.solvers.base.gram import GramStats  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402


def mlp(seed):
    with torch_seed(seed):
        return nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 6))


def batches(seed, n=3, size=40):
    gen = torch_generator(seed)
    return [torch.randn(size, 24, generator=gen) for _ in range(n)]


def pruned(seed, **kwargs):
    model = mlp(seed)
    report = prune(model, batches(seed + 1), progress=False, **kwargs)
    return model, report


def assert_same_weights(a, b):
    """Same support exactly; values to float32 rounding (the float64 solves may differ in the last bits)."""
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        if name.endswith("_mask"):
            assert torch.equal(pa, pb), name
        else:
            torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-6, msg=name)


def test_column_blocks_cover_the_outputs_once():
    for M in (1, 2, 7, 16):
        for k in (1, 2, 3, 20):
            blocks = column_blocks(M, k)
            cover = np.concatenate([np.arange(M)[slice(None) if b is None else b] for b in blocks])
            assert np.array_equal(cover, np.arange(M))
            assert len(blocks) == (1 if k == 1 or M == 1 else min(k, M))


def test_gram_columns_are_the_statistics_of_those_outputs(rng):
    X, Y = rng.standard_normal((50, 5)), rng.standard_normal((50, 7))
    sub = GramStats.from_arrays(X, Y).columns(slice(2, 5))
    ref = GramStats.from_arrays(X, Y[:, 2:5])
    for a, b in ((sub.xtx(), ref.xtx()), (sub.xty(), ref.xty()), (sub.yty_diag(), ref.yty_diag())):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["cascade", "parallel"])
@pytest.mark.parametrize("method, pattern", [("magnitude", "per_output"), ("magnitude", "2:4"),
                                             ("sparsegpt", "per_output"), ("wanda", "unstructured")])
def test_column_split_equals_the_whole_solve(scheme, method, pattern, seed):
    target = dict(sparsity=None if pattern == "2:4" else 0.6)
    whole, _ = pruned(seed, method=method, pattern=pattern, scheme=scheme, **target)
    split, report = pruned(seed, method=method, pattern=pattern, scheme=scheme, column_blocks=3, **target)
    assert_same_weights(whole, split)
    assert all(layer.info["column_blocks"] == 3 for layer in report.layers)


@pytest.mark.parametrize("scheme", ["cascade", "parallel"])
def test_thread_pool_gives_the_serial_result(scheme, seed):
    serial, _ = pruned(seed, method="iht", sparsity=0.7, scheme=scheme)
    with ThreadPoolExecutor(2) as pool:
        threaded, _ = pruned(seed, method="iht", sparsity=0.7, scheme=scheme, executor=pool)
    assert_same_weights(serial, threaded)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="l0", sparsity=0.5, column_blocks=2), "couples its output columns"),
    (dict(method="magnitude", sparsity=0.5, column_blocks=2), "couples its output columns"),
    (dict(method="magnitude", sparsity=0.5, column_blocks=0), "column_blocks"),
    (dict(method="magnitude", sparsity=0.5, executor=object()), "submit"),
])
def test_bad_split_settings_are_refused_before_any_change(kwargs, match, seed):
    model = mlp(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ParameterError, match=match):
        prune(model, batches(seed + 1), progress=False, **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    state = random.getstate()  # Dask draws its names from Python's global generator
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    random.setstate(state)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def client(dask_client):
    """The cluster's client; Python's global RNG is put back after the test, since the scheduler,
    which runs in this process, draws from it to place tasks (test data never does)."""
    state = random.getstate()
    yield dask_client
    random.setstate(state)


@pytest.mark.parametrize("scheme, kwargs", [
    ("parallel", dict(method="iht", sparsity=0.7)),
    ("cascade", dict(method="magnitude", pattern="per_output", sparsity=0.6, column_blocks=2)),
])
def test_dask_cluster_gives_the_serial_result(client, scheme, kwargs, seed):
    serial, _ = pruned(seed, scheme=scheme, **kwargs)
    spread, _ = pruned(seed, scheme=scheme, executor=client, **kwargs)
    assert_same_weights(serial, spread)


def _dies_once(problem, spec):
    """magnitude, but the first call (marked by a file) kills its worker process."""
    marker = spec.options["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return get_method("magnitude").solve(problem, spec.__class__(method="magnitude", sparsity=spec.sparsity))


def test_a_killed_worker_is_replaced_and_the_result_unchanged(client, tmp_path, seed):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    register_method(Method(name="dies_once", data="gram", targets=("sparsity",), patterns=("unstructured",),
                           options=frozenset({"marker"}), solve=_dies_once))
    try:
        marker = str(tmp_path / "killed")
        spread, _ = pruned(seed, method="dies_once", sparsity=0.6, scheme="parallel", executor=client,
                           marker=marker)
        assert os.path.exists(marker)  # a worker did die
        serial, _ = pruned(seed, method="magnitude", sparsity=0.6, scheme="parallel")
        assert_same_weights(serial, spread)
    finally:
        unregister_method("dies_once")
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
