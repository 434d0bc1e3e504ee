"""Reweighted-l1 Net-Trim: every round feasible, at least plain Net-Trim's sparsity, a refit on the support.

References: the constraint violation recomputed in numpy for every round, each weighted
round's optimum from cvxpy (``layertrim.solvers.reference``) on the rescaled inputs.
"""
import numpy as np
import pytest

from layertrim.solvers import LayerTrimError, ParameterError, nettrim, nettrim_reweighted
from layertrim.solvers.nettrim.reweighted import row_weights

pytest.importorskip("cvxpy")
from layertrim.solvers.reference import nettrim as nettrim_cvxpy  # noqa: E402


def planted_layer(rng, P=60, N=12, M=4, dead_inputs=4):
    """Post-ReLU targets of a sparse layer whose first ``dead_inputs`` inputs are unused."""
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.5)
    W[:dead_inputs] = 0.0
    Y = np.maximum(X @ W + 0.2 + 0.05 * rng.standard_normal((P, M)), 0.0)
    return X, Y


def violation(X, Y, W, b, eps):
    """Relative excess over the ball on ``Y > 0`` and the largest positive output off it."""
    Z = X @ W + b
    omega = Y > 0
    ball = np.linalg.norm((Z - Y)[omega]) - eps * np.linalg.norm(Y)
    return max(ball, 0.0) / np.linalg.norm(Y), max(float(Z[~omega].max(initial=0.0)), 0.0) / np.linalg.norm(Y)


def test_every_round_feasible_and_optimal(rng):
    X, Y = planted_layer(rng)
    eps = 0.1
    res = nettrim_reweighted(X, Y, eps=eps, rounds=2, refit=False)
    W_prev = None
    for W, b in res.info["iterates"]:
        ball, half = violation(X, Y, W.astype(float), b.astype(float), eps)
        # Net-Trim's default tol=1e-4 bounds the relative violation of its sparse W
        assert ball <= 1e-3 and half <= 1e-3
        if W_prev is not None:  # the weighted round against cvxpy on the rescaled inputs
            r = row_weights(W_prev, 0.1)
            ref = nettrim_cvxpy(X / r, Y, eps)
            weighted = float(np.sum(r[:, None] * np.abs(W)))
            assert weighted == pytest.approx(ref[2], rel=1e-2, abs=1e-6)
        W_prev = W


def test_at_least_plain_sparsity_at_same_eps(rng):
    X, Y = planted_layer(rng)
    for eps in (0.05, 0.1):
        plain = nettrim(X, Y, eps=eps)
        res = nettrim_reweighted(X, Y, eps=eps, rounds=3)
        assert res.sparsity >= plain.sparsity
        assert res.info["eps"] == eps


def test_refit_keeps_the_support_and_lowers_the_loss(rng):
    X, Y = planted_layer(rng)
    res = nettrim_reweighted(X, Y, sparsity=0.7, rounds=1, nettrim_options=dict(tol=1e-3))
    raw = nettrim_reweighted(X, Y, sparsity=0.7, rounds=1, refit=False, nettrim_options=dict(tol=1e-3))
    size = X.shape[1] * Y.shape[1]
    support = res.info["support"]
    assert support.sum() == size - int(np.ceil(0.7 * size))
    chosen = res.info["iterates"][res.info["chosen_round"]][0]
    # the refit stays on the support: the chosen round's nonzeros, filled up to the target count
    assert np.all((chosen != 0) <= support)
    assert np.all((res.W != 0) <= support)
    assert np.array_equal(raw.W != 0, chosen != 0)

    def relu_loss(W, b):
        return 0.5 * np.sum((np.maximum(X @ W + b, 0) - Y) ** 2) / X.shape[0]

    assert res.objective == pytest.approx(relu_loss(res.W, res.b), rel=1e-9)
    assert res.objective <= relu_loss(raw.W, raw.b) * (1 + 1e-12)


@pytest.mark.parametrize(
    "change",
    [dict(rounds=-1), dict(delta=0.0), dict(nettrim_options={"nope": 1}), dict(nettrim_options=3),
     dict(refit="no"), dict(eps=0.1, sparsity=0.5), dict(eps=-0.1)],
)
def test_bad_input_raises(rng, change):
    X, Y = planted_layer(rng)
    kwargs = dict(eps=0.1)
    kwargs.update(change)
    with pytest.raises(LayerTrimError):
        nettrim_reweighted(X, Y, **kwargs)


def test_negative_targets_rejected(rng):
    X, Y = planted_layer(rng)
    with pytest.raises(ParameterError):
        nettrim_reweighted(X, Y - 1.0, eps=0.1)


def test_prune_method_on_relu_layers():
    torch = pytest.importorskip("torch")
    from seeding import torch_seed

    from layertrim.bindings.torch import prune

    with torch_seed(0):
        model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        data = [torch.randn(64, 10)]
    report = prune(model, data, method="nettrim_rw", eps=0.3, progress=False, rounds=1)
    assert [r.method for r in report.layers] == ["nettrim_rw", "nettrim_rw"]
    assert all(r.status == "optimal" for r in report.layers)
    assert float((model[0].weight == 0).float().mean()) > 0
