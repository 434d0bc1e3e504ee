"""GramStats / Quadratic: streaming statistics equal the one-shot ones."""
import re

import numpy as np
import pytest

from layertrim.solvers import EmptyDataError, GramStats, NonFiniteError, ShapeError
from layertrim.solvers.base.gram import as_quadratic
from layertrim.solvers.base.grouped_gram import GroupedGramStats
from layertrim.solvers.base.validation import check_moments


def data(rng, P=500, N=6, M=3, offset=0.0, dtype=np.float64):
    X = rng.standard_normal((P, N)) + offset
    Y = X @ rng.standard_normal((N, M)) + rng.standard_normal((P, M)) + offset
    return X.astype(dtype), Y.astype(dtype)


def one_shot(X, Y):
    """Reference moments computed directly in float64."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    return X.T @ X, X.T @ Y, np.sum(Y * Y, axis=0), X.mean(0), Y.mean(0)


def batched(X, Y, n=10):
    stats = GramStats()
    for Xb, Yb in zip(np.array_split(X, n), np.array_split(Y, n)):
        stats.update(Xb, Yb)
    return stats


def test_ten_batches_equal_one_shot(rng):
    X, Y = data(rng)
    stats = batched(X, Y)
    xtx, xty, yty, mx, my = one_shot(X, Y)
    assert stats.n_samples == len(X) and stats.dtype == np.float64
    # float64 sums of 500 O(1) products: agreement to ~1e-13 relative
    np.testing.assert_allclose(stats.xtx(), xtx, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(stats.xty(), xty, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(stats.yty_diag(), yty, rtol=1e-12)
    np.testing.assert_allclose(stats.x_mean, mx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stats.y_mean, my, rtol=1e-12, atol=1e-14)


def test_float32_large_means(rng):
    # means of 1e4 with unit spread: naive uncentered sums in float32 would lose
    # all significant digits of the covariance (1e8 vs 1); Chan's centered merge
    # in float64 keeps them.
    X, Y = data(rng, offset=1e4, dtype=np.float32)
    stats = batched(X, Y)
    assert stats.dtype == np.float32
    Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
    Xc, Yc = Xd - Xd.mean(0), Yd - Yd.mean(0)
    q = stats.quadratic(intercept=True)
    P = len(X)
    # the float32 samples are exact in float64: the centered moments agree to
    # float64 rounding on O(P) terms of size 1 after cancelling means of 1e4
    np.testing.assert_allclose(q.G, Xc.T @ Xc / P, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(q.C, Xc.T @ Yc / P, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(q.yy, np.sum(Yc * Yc, 0) / P, rtol=1e-9)
    assert q.dtype == np.float32


def test_constant_columns(rng):
    # columns 1 and 4 never vary (a constant 0.3 and a dead input); column 2 is
    # constant in the first batch only: every path of the centered products
    X, Y = data(rng, P=400)
    X[:, 1], X[:, 4], X[:200, 2] = 0.3, 0.0, -1.5
    stats = batched(X, Y, n=2)
    q = stats.quadratic(intercept=True)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    # float64 rounding on sums of 400 O(1) products
    np.testing.assert_allclose(q.G, Xc.T @ Xc / 400, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(q.C, Xc.T @ Yc / 400, rtol=1e-12, atol=1e-13)
    # constant columns have exactly zero centered moments (not rounding noise)
    assert not q.G[[1, 4]].any() and not q.G[:, [1, 4]].any() and not q.C[[1, 4]].any()
    xtx, xty, *_ = one_shot(X, Y)
    np.testing.assert_allclose(stats.xtx(), xtx, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(stats.xty(), xty, rtol=1e-12, atol=1e-10)


def test_merge_equals_update(rng):
    X, Y = data(rng)
    a, b = GramStats.from_arrays(X[:200], Y[:200]), GramStats.from_arrays(X[200:], Y[200:])
    a.merge(b).merge(GramStats())
    full = GramStats.from_arrays(X, Y)
    np.testing.assert_allclose(a.Sxx, full.Sxx, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(a.Sxy, full.Sxy, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("intercept", [True, False])
def test_quadratic_loss_gradient(rng, intercept):
    X, Y = data(rng, offset=3.0)
    q = batched(X, Y).quadratic(intercept)
    W = rng.standard_normal((X.shape[1], Y.shape[1]))
    b = q.intercept_for(W)
    fit = X @ W - Y + (0.0 if b is None else b)
    assert q.loss(W) == pytest.approx(np.sum(fit**2) / (2 * len(X)), rel=1e-10)
    np.testing.assert_allclose(q.column_losses(W), np.sum(fit**2, 0) / (2 * len(X)), rtol=1e-10)
    # gradient of the loss w.r.t. W at the optimal intercept (envelope theorem)
    np.testing.assert_allclose(q.gradient(W), X.T @ fit / len(X), rtol=1e-9, atol=1e-9)
    if intercept:
        np.testing.assert_allclose(fit.mean(0), 0.0, atol=1e-9)  # b is optimal
    assert q.lipschitz() == pytest.approx(np.linalg.eigvalsh(q.G)[-1], rel=1e-12)


def test_errors(rng):
    X, Y = data(rng)
    stats = GramStats.from_arrays(X, Y)
    with pytest.raises(ShapeError, match="features"):
        stats.update(X[:, :3], Y)
    with pytest.raises(ShapeError, match="different shapes"):
        stats.merge(GramStats.from_arrays(X[:, :3], Y))
    with pytest.raises(EmptyDataError, match="no samples"):
        GramStats().quadratic()
    with pytest.raises(EmptyDataError):
        GramStats().update(X[:0], Y[:0])
    with pytest.raises(ShapeError, match="Y is required"):
        as_quadratic(X)
    with pytest.raises(ShapeError, match="not both"):
        as_quadratic(stats, Y)


def _grouped(X, Y, n):
    stats = GroupedGramStats(len(X))
    for idx in np.array_split(np.arange(X.shape[1]), n):
        stats.update(X[:, idx], Y[:, idx])
    return stats


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_grouped_batches_equal_each_group_alone(rng, dtype):
    G, P, N, M = 5, 300, 4, 2
    X = rng.standard_normal((G, P, N)) + 2.0
    Y = np.einsum("gpn,gnm->gpm", X, rng.standard_normal((G, N, M))) + rng.standard_normal((G, P, M))
    X[1, :, 2], X[3, :100, 0] = 0.7, -1.0  # constant throughout, and in the first batch only
    X, Y = X.astype(dtype), Y.astype(dtype)
    groups = _grouped(X, Y, 3).groups()
    assert len(groups) == G
    for g, got in enumerate(groups):
        want = batched(X[g], Y[g], n=3)
        assert got.n_samples == want.n_samples == P and got.dtype == want.dtype == dtype
        # the same float64 sums formed by another BLAS call: rounding of 300 O(1) products
        for a, b in ((got.xtx(), want.xtx()), (got.xty(), want.xty()), (got.yty_diag(), want.yty_diag()),
                     (got.x_mean, want.x_mean), (got.y_mean, want.y_mean)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-10)
    q = groups[1].quadratic(intercept=True)
    assert not q.G[2].any() and not q.G[:, 2].any() and not q.C[2].any()  # exact zeros, not rounding


def test_grouped_errors_leave_the_statistics_unchanged(rng):
    X, Y = rng.standard_normal((3, 20, 4)), rng.standard_normal((3, 20, 2))
    stats = _grouped(X, Y, 2)
    before = [(s.xtx(), s.xty()) for s in stats.groups()]
    bad = X.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(NonFiniteError):
        stats.update(bad, Y)
    with pytest.raises(ShapeError, match="groups"):
        stats.update(X[:2], Y[:2])
    with pytest.raises(ShapeError, match="features"):
        stats.update(X[:, :, :3], Y)
    with pytest.raises(EmptyDataError):
        stats.update(X[:, :0], Y[:, :0])
    tiny = X.copy()
    tiny[1] *= 1e-160  # group 1's weights would be ~1e160: their squares overflow float64
    with pytest.raises(NonFiniteError, match="scaled far apart"):
        stats.update(tiny, Y)
    assert stats.n_samples == 20
    for s, (xtx, xty) in zip(stats.groups(), before):
        assert np.array_equal(s.xtx(), xtx) and np.array_equal(s.xty(), xty)


def test_one_group_is_a_plain_gram_stats(rng):
    X, Y = data(rng, P=50)
    (got,) = _grouped(X[None], Y[None], 5).groups()
    want = batched(X, Y, n=5)
    assert isinstance(got, GramStats)
    assert np.array_equal(got.xtx(), want.xtx()) and np.array_equal(got.xty(), want.xty())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_grouped_scale_check_gives_the_exact_check_verdict(rng, dtype):
    # group 1 scaled by 10^a (inputs) and 10^b (targets) across and near every limit of
    # check_moments: the grouped update raises exactly when the exact per-group check does
    top = 38 if dtype == np.float32 else 160
    X, Y = rng.standard_normal((2, 20, 4)), rng.standard_normal((2, 20, 2))
    for a in range(-top, top + 1, top // 8):
        for b in range(-top, top + 1, top // 8):
            Xs, Ys = X.copy(), Y.copy()
            Xs[1] *= 10.0**a
            Ys[1] *= 10.0**b
            Xs, Ys = Xs.astype(dtype), Ys.astype(dtype)
            try:
                check_moments(Xs[1], Ys[1])
                exact = None
            except NonFiniteError as err:
                exact = str(err)
            if exact is None:
                GroupedGramStats(2).update(Xs, Ys)
            else:
                with pytest.raises(NonFiniteError, match=re.escape(exact)):
                    GroupedGramStats(2).update(Xs, Ys)
