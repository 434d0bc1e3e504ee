"""Refits on supports wider than the data (fewer samples than kept inputs) against lstsq.

With ``P`` samples and ``|S| > P - 1`` kept inputs, the loss has a whole affine set
of minimizers; the refit returns the one nearest to the anchor (the trained
weights), i.e. ``a + lstsq(X_S, y - X_S a)`` (numpy's lstsq gives the minimum-norm
solution), computed here column by column on the centered data.
"""
import numpy as np
import pytest

from layertrim.solvers import GramStats, ShapeError, iht, magnitude, refit

#: the refits solve normal equations (r x r through the Gram factor): the error is
#: about cond(X_S)^2 * eps; Gaussian P x k blocks with k >= 2P have cond(X_S) < 10,
#: so 1e-9 relative to the largest weight leaves a wide margin over ~1e-13.
ATOL_REL = 1e-9


def nearest_minimizers(X, Y, mask, anchor, ridge=0.0):
    """Per column: the minimizer of the centered loss + ridge/2 ||w - a||^2 on the support
    nearest to ``a`` (``a`` = anchor on the support, 0 without one)."""
    P = X.shape[0]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    W = np.zeros(mask.shape)
    for j in range(mask.shape[1]):
        S = np.flatnonzero(mask[:, j])
        a = np.zeros(S.size) if anchor is None else anchor[S, j]
        A, r = Xc[:, S], Yc[:, j] - Xc[:, S] @ a
        if ridge:
            u = np.linalg.solve(A.T @ A / P + ridge * np.eye(S.size), A.T @ r / P)
        else:
            u = np.linalg.lstsq(A, r, rcond=None)[0]
        W[S, j] = a + u
    return W


@pytest.fixture
def wide(rng):
    """30 samples, 80 inputs, supports of about 48 inputs: every support is underdetermined."""
    X = rng.standard_normal((30, 80)) + 0.5
    Y = rng.standard_normal((30, 5))
    anchor = rng.standard_normal((80, 5))
    mask = rng.random((80, 5)) < 0.6
    return X, Y, anchor, mask


@pytest.mark.parametrize("with_anchor", [False, True])
@pytest.mark.parametrize("from_stats", [False, True])
def test_wide_support_is_nearest_minimizer(wide, with_anchor, from_stats):
    X, Y, anchor, mask = wide
    A = anchor if with_anchor else None
    data = (GramStats.from_arrays(X, Y), None) if from_stats else (X, Y)
    res = refit(*data, mask, anchor=A)
    ref = nearest_minimizers(X, Y, mask, A)
    np.testing.assert_allclose(res.W, ref, atol=ATOL_REL * np.abs(ref).max())
    assert np.all(res.W[~mask] == 0)
    # every minimizer fits the 30 samples exactly: the loss is at the rounding level of
    # the Gram form, eps * w^T G w ~ eps * (the loss of W = 0), far below 1e-10 of it
    null_loss = 0.5 * np.sum((Y - Y.mean(0)) ** 2) / X.shape[0]
    assert res.objective <= 1e-10 * null_loss


def test_wide_support_with_ridge_pulls_toward_anchor(wide):
    X, Y, anchor, mask = wide
    res = refit(X, Y, mask, ridge=0.3, anchor=anchor)
    ref = nearest_minimizers(X, Y, mask, anchor, ridge=0.3)
    np.testing.assert_allclose(res.W, ref, atol=ATOL_REL * np.abs(ref).max())


def test_determined_support_ignores_the_anchor(rng):
    X = rng.standard_normal((200, 12))
    Y = X @ rng.standard_normal((12, 3)) + 0.1 * rng.standard_normal((200, 3))
    mask = rng.random((12, 3)) < 0.5
    plain = refit(X, Y, mask)
    anchored = refit(X, Y, mask, anchor=rng.standard_normal((12, 3)))
    # one minimizer: the two differ by the rounding of C - G A (well-conditioned, cond ~ 1.5)
    np.testing.assert_allclose(anchored.W, plain.W, atol=1e-12 * np.abs(plain.W).max())


def test_magnitude_and_iht_refits_keep_unseen_directions(wide):
    """Pruning with fewer samples than inputs: the refit moves the trained weights only
    within the span of the data (the nearest minimizer), never toward zero elsewhere."""
    X, Y, anchor, _ = wide
    res = magnitude(anchor, sparsity=0.5, X=X, Y=Y, refit=True)
    mask = res.W != 0
    np.testing.assert_allclose(res.W, nearest_minimizers(X, Y, mask, anchor), atol=ATOL_REL * np.abs(anchor).max())
    fit = iht(X, Y, sparsity=0.5, W0=anchor)
    support = fit.W != 0
    np.testing.assert_allclose(fit.W, nearest_minimizers(X, Y, support, anchor), atol=ATOL_REL * np.abs(anchor).max())


def test_anchor_shape_is_checked(wide):
    X, Y, anchor, mask = wide
    with pytest.raises(ShapeError, match="anchor"):
        refit(X, Y, mask, anchor=anchor[:, :2])


def test_torch_tensors_give_the_nearest_minimizer(wide):
    """The array-API path solves ``(G_SS + delta I) u = c`` with the relative ridge
    ``delta = 1e-10 max G`` instead of using the rank-r factor: the rounding of ``c`` in
    the null space of ``G_SS`` (``eps ||c||``) is amplified by ``1/delta``, an error
    of about ``eps / 1e-10 = 2.2e-6`` relative; 1e-4 leaves a margin of 45."""
    torch = pytest.importorskip("torch")
    X, Y, anchor, mask = wide
    Xt, Yt, At = (torch.asarray(a, dtype=torch.float64) for a in (X, Y, anchor))
    res = refit(Xt, Yt, torch.asarray(mask), anchor=At)
    assert isinstance(res.W, torch.Tensor)
    ref = nearest_minimizers(X, Y, mask, anchor)
    np.testing.assert_allclose(res.W.numpy(), ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("method", ["magnitude", "iht", "l0"])
@pytest.mark.parametrize("n_samples", [10, 60])
def test_prune_damping_is_the_ridge_refit_toward_the_trained_weights(rng, seed, method, n_samples):
    """``prune(damping=d)``: the written weights are the refit on the method's support with the ridge
    ``d * mean(diag(G))`` toward the trained weights, for an underdetermined (10 rows, supports of ~12
    of 24 inputs) and an overdetermined layer."""
    torch = pytest.importorskip("torch")
    from layertrim.bindings.torch import prune

    from seeding import torch_seed

    with torch_seed(seed):
        layer = torch.nn.Linear(24, 5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.asarray(rng.standard_normal((5, 24))))
        layer.bias.copy_(torch.asarray(rng.standard_normal(5)))
    W0 = layer.weight.detach().numpy().T.copy()
    X = rng.standard_normal((n_samples, 24)) + 0.3
    Y = X @ W0 + layer.bias.detach().numpy()
    prune(torch.nn.Sequential(layer), [torch.asarray(X)], method=method, sparsity=0.5, damping=0.05,
          progress=False)
    W = layer.weight.detach().numpy().T
    Xc = X - X.mean(0)
    ridge = 0.05 * float(np.mean(np.sum(Xc**2, axis=0) / n_samples))
    expected = nearest_minimizers(X, Y, W != 0, W0, ridge=ridge)
    assert int((W == 0).sum()) == W.size // 2
    # float64 data and a damped (well-conditioned) system: agreement to ~1e-12 relative
    np.testing.assert_allclose(W, expected, rtol=1e-9, atol=ATOL_REL * np.abs(expected).max())
    b = Y.mean(0) - X.mean(0) @ W
    np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=1e-9, atol=ATOL_REL * np.abs(b).max())


def test_prune_refuses_a_negative_damping_before_any_work(seed):
    torch = pytest.importorskip("torch")
    from layertrim.bindings.torch import prune
    from layertrim.solvers import ParameterError
    from seeding import torch_seed

    with torch_seed(seed):
        layer = torch.nn.Linear(6, 3)
    before = layer.weight.detach().clone()
    with pytest.raises(ParameterError, match="damping"):
        prune(torch.nn.Sequential(layer), [torch.zeros(4, 6)], method="magnitude", sparsity=0.5, damping=-0.1, progress=False)
    assert torch.equal(layer.weight, before)
