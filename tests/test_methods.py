"""The method registry: a user's own method, patterns and options checked up front,
tied weights skipped, an earlier mask replaced, hooks intact after a failure."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from torch import nn  # noqa: E402
from torch_models import digits, loader, trained  # noqa: E402

from layertrim.bindings.methods import (  # noqa: E402
    Method,
    Solution,
    get_method,
    register_method,
    registered_methods,
    squared_error,
    unregister_method,
)
from layertrim.bindings.torch import prune, sparsity  # noqa: E402
from layertrim.solvers import GramStats, ParameterError  # noqa: E402


@pytest.fixture(scope="module")
def calib():
    X, y, _, _ = digits()
    return loader(X[:300], y[:300])


def _keep_largest_per_column(problem, spec):
    """Toy method: keep the ``ceil((1 - s) N)`` largest ``|W0|`` of every output column, scaled."""
    W0 = problem.W0
    keep = W0.shape[0] - int(np.ceil(spec.sparsity * W0.shape[0]))
    order = np.argsort(-np.abs(W0), axis=0, kind="stable")[:keep]
    W = np.zeros_like(W0)
    np.put_along_axis(W, order, np.take_along_axis(W0, order, axis=0), axis=0)
    return Solution(W=W * spec.options.get("scale", 1.0), b=problem.b0, refit=False)


@pytest.fixture
def toy():
    method = register_method(Method(
        name="toy_columns", data="gram", targets=("sparsity",), patterns=("unstructured",),
        options=frozenset({"scale"}), solve=_keep_largest_per_column, summary="toy: largest |W| per column",
    ))
    yield method
    unregister_method("toy_columns")


def test_user_method_is_registered_and_used_by_prune(toy, calib):
    assert "toy_columns" in registered_methods() and get_method("toy_columns") is toy
    model = trained("mlp")
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    report = prune(model, calib, method="toy_columns", sparsity=0.75, scale=2.0, refit=False, progress=False)
    assert [r.method for r in report.layers] == ["toy_columns"] * 3
    for name, W in dense.items():
        # brute force on the torch layout: each output row keeps its n_in // 4 largest |w|
        keep = W.shape[1] // 4
        expected = torch.zeros_like(W)
        idx = W.abs().argsort(dim=1, descending=True, stable=True)[:, :keep]
        expected.scatter_(1, idx, 2.0 * W.gather(1, idx))
        torch.testing.assert_close(dict(model.named_modules())[name].weight, expected, rtol=0, atol=0)
        assert report[name].zeros == W.numel() - keep * W.shape[0]


def test_registry_rejects_bad_methods_and_duplicates(toy):
    with pytest.raises(ParameterError, match="already registered"):
        register_method(toy)
    with pytest.raises(ParameterError, match="data must be one of"):
        Method(name="bad", data="pixels", targets=("sparsity",), patterns=("unstructured",),
               options=frozenset(), solve=_keep_largest_per_column)
    with pytest.raises(ParameterError, match="targets"):
        Method(name="bad", data="gram", targets=("budget",), patterns=("unstructured",),
               options=frozenset(), solve=_keep_largest_per_column)
    with pytest.raises(ParameterError, match="solve_groups, if given"):
        Method(name="bad", data="gram", targets=("sparsity",), patterns=("unstructured",),
               options=frozenset(), solve=_keep_largest_per_column, solve_groups="all at once")
    with pytest.raises(ParameterError, match="method must be one of"):
        get_method("no_such_method")


@pytest.mark.parametrize("method", ["lasso", "nettrim", "feta"])
def test_pattern_a_method_cannot_honour_is_rejected_before_any_work(method, calib):
    model = trained("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ParameterError, match="cannot honour pattern '2:4'"):
        prune(model, calib, method=method, sparsity=0.5, pattern="2:4", progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_misspelled_option_names_the_close_match(calib):
    with pytest.raises(ParameterError, match=r"no option 'max_iters' \(did you mean 'max_iter'\?\)"):
        prune(trained("mlp"), calib, method="iht", sparsity=0.5, max_iters=10, progress=False)


class _Tied(nn.Module):
    """The trained MLP plus a head that shares the weight of its second layer (not called)."""

    def __init__(self):
        super().__init__()
        self.net = trained("mlp")
        self.twin = nn.Linear(48, 32, bias=False)
        self.twin.weight = self.net[3].weight

    def forward(self, x):
        return self.net(x)


def test_tied_weights_are_skipped_and_reported(calib):
    with torch.random.fork_rng():
        model = _Tied()
    shared = model.net[3].weight.detach().clone()
    report = prune(model, calib, method="magnitude", sparsity=0.5, layers=["net.1", "net.3", "net.5"],
                   progress=False)
    assert report.skipped == {"net.3": "weight tied to twin.weight"}
    assert [r.name for r in report.layers] == ["net.1", "net.5"]
    torch.testing.assert_close(model.net[3].weight, shared, rtol=0, atol=0)
    assert model.twin.weight is model.net[3].weight
    assert "skipped net.3: weight tied to twin.weight" in str(report)


def test_pruning_a_pruned_model_replaces_the_mask(calib):
    model = trained("mlp")
    prune(model, calib, method="magnitude", sparsity=0.9, progress=False)
    report = prune(model, calib, method="lasso", sparsity=0.5, progress=False)
    counted = sparsity(model)
    for r in report.layers:
        assert counted.layers[r.name].zeros == r.zeros
        assert int((dict(model.named_modules())[r.name].weight_mask == 0).sum()) == r.zeros


def test_user_hook_handles_work_after_a_failed_prune(calib, monkeypatch):
    import importlib

    prune_module = importlib.import_module("layertrim.bindings.torch.prune")
    real_write, written = prune_module._write_layer, []

    def fail_on_second(module, W, b):
        written.append(module)
        if len(written) == 2:
            raise RuntimeError("disk full")
        real_write(module, W, b)

    model = trained("mlp")
    calls = []
    handle = model[1].register_forward_hook(lambda *a: calls.append(1))
    monkeypatch.setattr(prune_module, "_write_layer", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):  # the first layer was already written
        prune(model, calib, method="magnitude", sparsity=0.5, progress=False)
    monkeypatch.undo()
    assert not hasattr(model[1], "weight_mask")
    calls.clear()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=gen)
    model(x)
    assert calls == [1]
    handle.remove()
    model(x)
    assert calls == [1], "the user's handle no longer removes the hook"


@pytest.mark.parametrize("with_bias", [True, False])
def test_squared_error_from_statistics_equals_the_rows(rng, with_bias):
    X = rng.standard_normal((300, 6)) * 3.0 + 5.0  # far from centered: the uncentered form would cancel
    X[:, 2] = 1.5  # a constant input
    Y = X @ rng.standard_normal((6, 4)) + rng.standard_normal((300, 4))
    W, b = rng.standard_normal((6, 4)), rng.standard_normal(4) if with_bias else None
    stats = GramStats()
    for part in np.array_split(np.arange(300), 3):
        stats.update(X[part], Y[part])
    got, got_norm = squared_error(stats, W, b)
    want, want_norm = squared_error((X, Y), W, b)  # the residuals themselves
    # float64 moments against float64 residuals: rounding of 300 O(100) terms
    np.testing.assert_allclose([got, got_norm], [want, want_norm], rtol=1e-10)
