"""Structured pruning: physical removal through torch-pruning's graph, consumer refit."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import structured  # noqa: E402
from layertrim.bindings.torch.structured import prune_structured  # noqa: E402
from layertrim.solvers import InfeasibleError, ParameterError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

# float32 forward passes of the same function computed in another order (a
# shrunk matmul, a float64 refit cast back): relative differences ~1e-6 of
# activations of size O(1); rtol 1e-4 with atol 1e-4 leaves margin for ~100-term sums.
RTOL, ATOL = 1e-4, 1e-4


def _mlp(seed):
    with torch_seed(seed):
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3)).eval()


class Block(nn.Module):
    """Residual block with BatchNorm and a depthwise conv."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c)
        self.dw, self.bn2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c)
        self.conv2, self.bn3 = nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.dw(y)))
        return torch.relu(x + self.bn3(self.conv2(y)))


def _convnet(seed):
    with torch_seed(seed):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8), Block(8),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return net.eval()


def test_zero_neurons_are_removed_exactly(seed):
    model = _mlp(seed)
    dead = [1, 4, 5, 9, 13]
    with torch.no_grad():
        model[0].weight[dead] = 0
        model[0].bias[dead] = 0
    x = torch.randn(200, 12, generator=torch_generator(seed + 1))
    report = prune_structured(model, x, target={"0": len(dead) / 16}, unit="neurons", method="lsq")
    assert sorted(set(range(16)) - set(report.group("0").kept)) == dead
    assert report.model[0].out_features == 11 and report.model[2].in_features == 11
    with torch.no_grad():
        torch.testing.assert_close(report.model(x), model(x), rtol=RTOL, atol=ATOL)


def test_consumer_refit_is_lstsq_on_kept_inputs(seed):
    model = _mlp(seed)
    x = torch.randn(300, 12, generator=torch_generator(seed + 1))
    report = prune_structured(model, x, target={"0": 0.5}, unit="neurons", method="lsq", ridge=0.0)
    kept = report.group("0").kept
    with torch.no_grad():
        H = torch.relu(model[0](x)).double().numpy()
        Y = model[2](torch.relu(model[0](x))).double().numpy()
    A = np.hstack([H[:, kept], np.ones((len(H), 1))])
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    new = report.model[2]
    # the refit solves the normal equations in float64 and is stored in float32
    np.testing.assert_allclose(new.weight.detach().double().numpy().T, sol[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new.bias.detach().double().numpy(), sol[-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lsq", "group_lasso", "magnitude", "taylor"])
def test_residual_bn_depthwise_couplings(seed, method):
    model = _convnet(seed)
    x = torch.randn(16, 3, 8, 8, generator=torch_generator(seed + 1))
    report = prune_structured(model, x, target=0.4, method=method, min_keep=0.25)
    net = report.model
    for m in net.modules():
        if isinstance(m, Block):
            assert m.bn1.num_features == m.conv1.out_channels == m.dw.in_channels == m.dw.groups
            assert m.conv2.in_channels == m.bn2.num_features and m.bn3.num_features == m.conv2.out_channels
    assert net[-1].in_features == net[0].out_channels  # the residual stream is pruned together
    with torch.no_grad():
        assert net(x).shape == model(x).shape
    assert 0.3 <= report.flops_removed <= 0.5
    assert report.params[1] < report.params[0]


def test_lsq_beats_magnitude_before_fine_tuning(seed):
    model = _mlp(seed)
    x = torch.randn(400, 12, generator=torch_generator(seed + 1))
    with torch.no_grad():
        ref = model(x)
        err = {m: float((prune_structured(model, x, target={"0": 0.5, "2": 0.5}, unit="neurons", method=m)
                         .model(x) - ref).norm()) for m in ("lsq", "magnitude")}
    # the refit minimises each consumer's error over the calibration set; magnitude keeps dense weights
    assert err["lsq"] <= err["magnitude"]


@pytest.mark.parametrize("target, error, match", [
    (0.0, ParameterError, "target"), (1.5, ParameterError, "target"), ({"0": 1.0}, ParameterError, "0"),
    ({"nope": 0.5}, ParameterError, "nope"), ({}, ParameterError, "target"), (0.99, InfeasibleError, "min_keep"),
])
def test_bad_targets(seed, target, error, match):
    x = torch.randn(50, 12, generator=torch_generator(seed))
    with pytest.raises(error, match=match):
        prune_structured(_mlp(seed), x, target=target, unit="neurons", min_keep=0.5)


def test_bad_unit_and_method(seed):
    x = torch.randn(50, 12, generator=torch_generator(seed))
    with pytest.raises(ParameterError, match="unit"):
        prune_structured(_mlp(seed), x, target=0.3, unit="heads")
    with pytest.raises(ParameterError, match="method"):
        prune_structured(_mlp(seed), x, target=0.3, unit="neurons", method="random")


def test_failure_leaves_model_bit_identical(seed, monkeypatch):
    model = _convnet(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 8, 8, generator=torch_generator(seed + 1))

    def boom(*args, **kwargs):
        raise RuntimeError("refit failed")

    monkeypatch.setattr(structured, "_refit_consumer", boom)
    with pytest.raises(RuntimeError, match="refit failed"):
        prune_structured(model, x, target=0.4)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in model.modules())


# ---- ridge of the consumer refit chosen on held-out samples ----

def _ridge_fit(X, Y, W0, r):
    """Closed form of min (1/2P)||X W + 1b^T - Y||^2 + (delta/2)||W - W0||^2, delta = r mean diag(cov X)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    G = Xc.T @ Xc / len(X)
    delta = r * np.mean(np.diag(G))
    W = np.linalg.solve(G + delta * np.eye(len(G)), Xc.T @ Yc / len(X) + delta * W0)
    return W, Y.mean(0) - X.mean(0) @ W


def _stats(X, Y):
    from layertrim.solvers import GramStats
    return GramStats.from_arrays(X, Y)


def test_candidate_errors_are_ridge_fits_scored_on_held_out_rows(rng):
    from layertrim.bindings.torch.structured_refit import RIDGES, candidate_errors
    Xf, Xv = rng.standard_normal((40, 6)), rng.standard_normal((25, 6))
    Wt, W0, b0 = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.standard_normal(3)
    Yf, Yv = Xf @ Wt + 0.5 * rng.standard_normal((40, 3)), Xv @ Wt + 0.5 * rng.standard_normal((25, 3))
    cols, outs = np.arange(6), np.arange(3)
    got = candidate_errors(_stats(Xf, Yf), _stats(Xv, Yv), cols, outs, W0, b0)
    want = {None: np.mean(np.sum((Xv @ W0 + b0 - Yv) ** 2, 1))}
    for r in RIDGES:
        W, b = _ridge_fit(Xf, Yf, W0, r)
        want[r] = np.mean(np.sum((Xv @ W + b - Yv) ** 2, 1))
    # float64 moments against float64 rows: differences are rounding of O(1) sums of ~100 terms
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9, atol=1e-12)


def test_choose_ridge_keeps_dense_weights_when_they_are_right(rng):
    from layertrim.bindings.torch.structured_refit import choose_ridge
    # few noisy fit rows; the dense weights reproduce the held-out targets exactly: no refit can match them
    W0, b0 = rng.standard_normal((8, 4)), rng.standard_normal(4)
    Xf, Xv = rng.standard_normal((12, 8)), rng.standard_normal((30, 8))
    Yf, Yv = Xf @ W0 + b0 + rng.standard_normal((12, 4)), Xv @ W0 + b0
    assert choose_ridge(_stats(Xf, Yf), _stats(Xv, Yv), np.arange(8), np.arange(4), W0, b0) is None


def test_choose_ridge_picks_plain_lstsq_on_many_clean_rows(rng):
    from layertrim.bindings.torch.structured_refit import choose_ridge
    # noiseless targets of other weights: least squares recovers them exactly, every ridge is biased
    W0, b0, Wt, bt = (rng.standard_normal((8, 4)), rng.standard_normal(4), rng.standard_normal((8, 4)),
                      rng.standard_normal(4))
    Xf, Xv = rng.standard_normal((400, 8)), rng.standard_normal((100, 8))
    Yf, Yv = Xf @ Wt + bt, Xv @ Wt + bt
    assert choose_ridge(_stats(Xf, Yf), _stats(Xv, Yv), np.arange(8), np.arange(4), W0, b0) == 0.0


def test_auto_refit_is_closed_form_ridge_on_kept_inputs(seed):
    model = _mlp(seed)
    x = torch.randn(500, 12, generator=torch_generator(seed + 1))
    report = prune_structured(model, x, target={"0": 0.5}, unit="neurons", method="lsq", ridge="auto")
    kept, r = report.group("0").kept, report.refit["2"]
    # 400 fit rows for 8 kept inputs, half of the inputs removed: refitting beats the dense weights
    assert r is not None and set(report.refit) == {"2"}
    with torch.no_grad():
        H = torch.relu(model[0](x)).double().numpy()
        Y = model[2](torch.relu(model[0](x))).double().numpy()
    W0 = model[2].weight.detach().double().numpy().T[kept]
    W, b = _ridge_fit(H[:, kept], Y, W0, r)
    new = report.model[2]
    # the refit solves in float64 and is stored in float32
    np.testing.assert_allclose(new.weight.detach().double().numpy().T, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new.bias.detach().double().numpy(), b, rtol=1e-4, atol=1e-5)


def test_auto_ridge_failure_leaves_model_bit_identical(seed, monkeypatch):
    model = _convnet(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(10, 3, 8, 8, generator=torch_generator(seed + 1))

    def boom(*args, **kwargs):
        raise RuntimeError("ridge choice failed")

    monkeypatch.setattr(structured, "choose_ridge", boom)
    with pytest.raises(RuntimeError, match="ridge choice failed"):
        prune_structured(model, x, target=0.4, ridge="auto")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_ridge(seed):
    x = torch.randn(50, 12, generator=torch_generator(seed))
    with pytest.raises(ParameterError, match="ridge"):
        prune_structured(_mlp(seed), x, target=0.3, unit="neurons", ridge="best")
    with pytest.raises(ParameterError, match="ridge"):
        prune_structured(_mlp(seed), x, target=0.3, unit="neurons", ridge=-1.0)
    with pytest.raises(ParameterError, match="samples"):
        prune_structured(_mlp(seed), x[:2], target=0.3, unit="neurons", ridge="auto")
