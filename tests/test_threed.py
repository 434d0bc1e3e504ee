"""The 3-D pruning core: accuracy-model fit, FLOPs model, constrained maximum,
rounding to realizable configurations, and least-squares channel selection."""
import itertools

import numpy as np
import pytest

from layertrim.solvers import (
    FlopsModel,
    InfeasibleError,
    ParameterError,
    ShapeError,
    backward_group_selection,
    fit_accuracy_model,
    maximize_accuracy,
    monomial_exponents,
    realizable_optimum,
)


def _poly(exps, coef, pts):
    """Independent evaluation: an explicit sum over the monomials."""
    d, w, r = np.asarray(pts, dtype=np.float64).T
    return sum(c * d**i * w**j * r**k for c, (i, j, k) in zip(coef, exps))


@pytest.mark.parametrize("form,degree", [("specialized", 2), ("specialized", 3), ("full", 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_recovers_known_polynomial(rng, form, degree, dtype):
    exps = monomial_exponents(form, degree)
    coef = rng.standard_normal(len(exps))
    pts = rng.uniform(0.2, 1.0, size=(4 * len(exps), 3))
    acc = _poly(exps, coef, pts)
    model = fit_accuracy_model(pts.astype(dtype), acc.astype(dtype), form=form, degree=degree, ridge=0.0)
    assert model.coef.dtype == dtype
    # noiseless, well-posed least squares: float64 recovers to conditioning x eps;
    # float32 inputs carry ~1e-7 relative rounding amplified by the Vandermonde-like
    # conditioning of monomials on [0.2, 1] (~1e3 for degree 3)
    tol = 1e-7 if dtype == np.float64 else 5e-2
    np.testing.assert_allclose(model.coef.astype(np.float64), coef, atol=tol * max(1, np.abs(coef).max()))
    test = rng.uniform(0.2, 1.0, size=(20, 3))
    np.testing.assert_allclose(model(test[:, 0], test[:, 1], test[:, 2]), _poly(exps, coef, test),
                               atol=tol * 10, rtol=0)


def _shortfall_poly(exps, beta, pts):
    """Independent evaluation of ``beta_0 - sum_m beta_m prod (1 - x)^e``."""
    u = 1.0 - np.asarray(pts, dtype=np.float64)
    return beta[0] - sum(b * u[:, 0] ** i * u[:, 1] ** j * u[:, 2] ** k for b, (i, j, k) in zip(beta[1:], exps[1:]))


@pytest.mark.parametrize("form,degree", [("specialized", 2), ("specialized", 3), ("full", 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_monotone_fit_recovers_known_monotone_polynomial(rng, form, degree, dtype):
    exps = monomial_exponents(form, degree)
    beta = np.r_[0.97, rng.uniform(0, 0.3, len(exps) - 1)]
    beta[1 + rng.choice(len(exps) - 1, size=2, replace=False)] = 0.0  # active bounds
    pts = rng.uniform(0.2, 1.0, size=(4 * len(exps), 3))
    acc = _shortfall_poly(exps, beta, pts)
    model = fit_accuracy_model(pts.astype(dtype), acc.astype(dtype), form=form, degree=degree, ridge=0.0,
                               monotone=True)
    assert model.coef.dtype == dtype and model.monotone
    # same conditioning argument as the unconstrained recovery test above
    tol = 1e-7 if dtype == np.float64 else 5e-2
    test = rng.uniform(0.2, 1.0, size=(50, 3))
    np.testing.assert_allclose(model(test[:, 0], test[:, 1], test[:, 2]), _shortfall_poly(exps, beta, test),
                               atol=tol * 10, rtol=0)
    free = fit_accuracy_model(pts, acc, form=form, degree=degree, ridge=0.0)
    np.testing.assert_allclose(model.coef.astype(np.float64), free.coef, atol=tol * 10)


@pytest.mark.parametrize("form", ["specialized", "full"])
def test_monotone_fit_respects_the_shape_and_matches_cvxpy(rng, form):
    cp = pytest.importorskip("cvxpy")
    from layertrim.solvers.reference._cvxpy import solve

    exps = monomial_exponents(form, 2)
    # noisy samples of a function that *decreases* in d near d = 1 and exceeds the
    # unpruned accuracy there: the unconstrained fit follows it, the monotone one cannot
    pts = rng.uniform(0.25, 1.0, size=(30, 3))
    acc = 0.9 - 0.4 * (pts[:, 0] - 0.7) ** 2 - 0.3 * (1 - pts[:, 1]) ** 2 + 0.02 * rng.standard_normal(30)
    ridge = 1e-4
    model = fit_accuracy_model(pts, acc, form=form, ridge=ridge, monotone=True)
    free = fit_accuracy_model(pts, acc, form=form, ridge=ridge)
    box = rng.uniform(0.0, 1.0, size=(300, 3))
    grads = np.array([model.gradient(x) for x in box])
    assert grads.min() >= -1e-9  # nonnegative partial derivatives on the whole box
    assert np.min([free.gradient(x)[0] for x in box]) < -0.05  # the unconstrained fit is not monotone
    assert np.all(model(box[:, 0], box[:, 1], box[:, 2]) <= float(model(1, 1, 1)) + 1e-12)
    # independent reference: the same bound-constrained least squares in cvxpy (Clarabel)
    u = 1.0 - pts
    basis = np.c_[np.ones(30), -np.stack([np.prod(u**e, axis=1) for e in exps[1:]], axis=1)]
    # the cone also holds x_a x_b - 1 for the three pairs (pruning two dimensions costs less than the sum)
    basis = np.c_[basis, np.stack([pts[:, a] * pts[:, b] - 1 for a, b in ((0, 1), (0, 2), (1, 2))], axis=1)]
    beta = cp.Variable(basis.shape[1])
    obj = cp.sum_squares(basis @ beta - acc) + ridge * 30 * cp.sum_squares(beta[1:])
    ref = solve(cp.Problem(cp.Minimize(obj), [beta[1:] >= 0]))
    mine = float(np.sum((model(*pts.T) - acc) ** 2))
    # both solvers stop at ~1e-9 relative accuracy; the ridge term is added from the
    # reference's own coefficients to compare the full objectives
    pred_ref = basis @ beta.value
    np.testing.assert_allclose(model(*pts.T), pred_ref, atol=1e-5)
    assert mine + ridge * 30 * np.sum(np.clip(beta.value[1:], 0, None) ** 2) == pytest.approx(ref, rel=1e-5)


def test_monotone_fit_represents_cheaper_joint_pruning(rng):
    # accuracy that depends on the product of the ratios (like FLOPs): pruning two
    # dimensions together costs less than the sum of the separate costs
    pts = rng.uniform(0.4, 1.0, size=(40, 3))
    acc = 0.95 - 0.1 * (1 - pts[:, 1] * pts[:, 2]) - 0.05 * (1 - pts[:, 0])
    model = fit_accuracy_model(pts, acc, ridge=0.0, monotone=True)
    # exactly representable: x_w x_r - 1 is in the cone (bvls stops at ~1e-12)
    assert model.residual < 1e-8
    box = rng.uniform(0.0, 1.0, size=(200, 3))
    assert np.array([model.gradient(x) for x in box]).min() >= -1e-9
    # its w*r coefficient is positive: the interaction the shortfall terms alone cannot take
    assert model.coef[[tuple(e) for e in model.exponents.tolist()].index((0, 1, 1))] == pytest.approx(0.1, abs=1e-8)


def test_monotone_model_puts_the_optimum_on_the_budget_surface(rng):
    pts = rng.uniform(0.2, 1.0, size=(40, 3))
    u = 1 - pts
    acc = 0.95 - 0.1 * u[:, 0] - 0.3 * u[:, 1] ** 2 - 0.2 * u[:, 2] ** 2 - 0.1 * u[:, 0] * u[:, 1]
    model = fit_accuracy_model(pts, acc, monotone=True)
    fm = FlopsModel(np.array([0.1, 0.9]), np.array([[0, 1, 0], [1, 2, 2]]))
    for budget in (0.3, 0.5, 0.7):
        opt = maximize_accuracy(model, fm, budget, lower=0.2)
        # accuracy is nondecreasing in every ratio, so the budget binds at the maximum
        assert opt.flops == pytest.approx(budget, rel=1e-6)
        assert opt.accuracy <= float(model(1, 1, 1))


def test_monomial_counts():
    assert len(monomial_exponents("full", 2)) == 27
    assert len(monomial_exponents("specialized", 2)) == 10
    assert len(monomial_exponents("specialized", 4)) == 16


def test_ridge_picks_small_interactions_from_axis_samples(rng):
    # samples on the three axes only: bilinear terms are not identified; the ridge
    # term makes the fit unique and leaves them near zero while fitting the data
    t = np.linspace(0.3, 1, 6)
    one = np.ones_like(t)
    pts = np.vstack([np.c_[t, one, one], np.c_[one, t, one], np.c_[one, one, t]])
    acc = 0.9 - 0.2 * (1 - pts[:, 0]) ** 2 - 0.3 * (1 - pts[:, 1]) ** 2 - 0.1 * (1 - pts[:, 2]) ** 2
    model = fit_accuracy_model(pts, acc, ridge=1e-8)
    assert model.residual < 1e-5
    assert np.abs(model.coef[-3:]).max() < 0.3


def test_gradient_and_lipschitz_match_finite_differences(rng):
    exps = monomial_exponents("full", 2)
    pts = rng.uniform(0.1, 1, size=(60, 3))
    model = fit_accuracy_model(pts, _poly(exps, rng.standard_normal(27), pts), form="full", ridge=0.0)
    fm = FlopsModel(np.array([0.2, 0.5, 0.3]), np.array([[0, 1, 0], [1, 2, 2], [0, 1, 2]]))
    x, h = np.array([0.4, 0.7, 0.6]), 1e-6
    for f in (model, fm):
        fd = [(float(f(*(x + h * e))) - float(f(*(x - h * e)))) / (2 * h) for e in np.eye(3)]
        np.testing.assert_allclose(f.gradient(x), fd, rtol=1e-6, atol=1e-8)
    # the Lipschitz bound holds at random points of the box
    grads = np.abs([model.gradient(p) for p in rng.uniform(0, 1, size=(200, 3))])
    assert np.all(grads <= model.lipschitz() + 1e-12)


def _brute_force_max(model, flops, budget, lo, n):
    axes = np.linspace(lo, 1.0, n)
    pts = np.array(list(itertools.product(axes, axes, axes)))
    acc = _poly(model.exponents, model.coef, pts)
    F = flops(pts[:, 0], pts[:, 1], pts[:, 2])
    acc[F > budget] = -np.inf
    return acc.max(), (1 - lo) / (n - 1)


@pytest.mark.parametrize("base", [0, 1, 2])
def test_constrained_maximum_matches_brute_force_grid(base, seed_shift):
    rng = np.random.default_rng(base + seed_shift)
    # a concave-ish saturating accuracy with random interactions, as fitted in practice
    exps = monomial_exponents("specialized", 2)
    pts = rng.uniform(0.1, 1, size=(40, 3))
    truth = 0.95 - 0.3 * (1 - pts[:, 0]) ** 2 - 0.6 * (1 - pts[:, 1]) ** 2 - 0.4 * (1 - pts[:, 2]) ** 2
    truth += 0.1 * rng.standard_normal() * pts[:, 0] * pts[:, 1]
    model = fit_accuracy_model(pts, truth, ridge=0.0)
    flops = FlopsModel.power_law()
    budget = 0.3
    opt = maximize_accuracy(model, flops, budget, lower=0.1, grid_points=41)
    brute, h = _brute_force_max(model, flops, budget, 0.1, 81)
    assert opt.flops <= budget * (1 + 1e-9)
    assert np.all(np.array(opt.ratios) >= 0.1 - 1e-12) and np.all(np.array(opt.ratios) <= 1 + 1e-12)
    np.testing.assert_allclose(opt.accuracy, float(model(*opt.ratios)), rtol=1e-12)
    # the brute-force grid is a lower bound on the true maximum; our answer is feasible,
    # so it may exceed the brute-force grid by at most that grid's certificate
    L = model.lipschitz()
    assert opt.accuracy >= brute - 1e-9
    assert opt.accuracy <= brute + float(L.sum() * h) + 1e-9
    assert opt.upper_bound >= brute - 1e-12 and opt.upper_bound >= opt.accuracy


def test_callable_flops_and_kkt_conditions(rng):
    # a concave accuracy: the budget binds and, at the optimum, the gradients satisfy
    # grad acc = eta * grad F (eta >= 0) on the coordinates strictly inside the box
    pts = rng.uniform(0.1, 1, size=(40, 3))
    acc = 1 - 0.3 * (1 - pts[:, 0]) ** 2 - 0.5 * (1 - pts[:, 1]) ** 2 - 0.2 * (1 - pts[:, 2]) ** 2
    model = fit_accuracy_model(pts, acc, ridge=0.0)
    T = 0.2
    for flops in (FlopsModel.power_law(), lambda d, w, r: d * w**2 * r**2):
        opt = maximize_accuracy(model, flops, T, lower=0.01)
        x = np.array(opt.ratios)
        np.testing.assert_allclose(x[0] * x[1] ** 2 * x[2] ** 2, T, rtol=1e-6)  # the budget binds
        inside = (x > 0.01 + 1e-6) & (x < 1 - 1e-6)
        eta = model.gradient(x)[inside] / FlopsModel.power_law().gradient(x)[inside]
        # SLSQP stops on ftol 1e-12: multipliers agree to ~1e-4 relative
        np.testing.assert_allclose(eta, eta.mean(), rtol=1e-4)
        assert eta.mean() > 0
    assert np.isfinite(maximize_accuracy(model, FlopsModel.power_law(), T, lower=0.01).upper_bound)
    assert np.isnan(maximize_accuracy(model, lambda d, w, r: d * w**2 * r**2, T, lower=0.01).upper_bound)


def test_realizable_optimum_is_the_exhaustive_discrete_best(rng):
    pts = rng.uniform(0.1, 1, size=(30, 3))
    model = fit_accuracy_model(pts, 1 - (1 - pts) @ np.array([0.2, 0.5, 0.3]) - 0.2 * (1 - pts[:, 1]) ** 2)
    flops = FlopsModel(np.array([0.1, 0.9]), np.array([[0, 0, 0], [1, 2, 2]]))
    depths, widths, res = np.arange(5) / 4, np.arange(1, 9) / 8, np.arange(4, 29) / 28
    best = max(((float(model(d, w, r)), (d, w, r)) for d in depths for w in widths for r in res
                if flops(d, w, r) <= 0.5), key=lambda t: t[0])
    opt = realizable_optimum(model, flops, 0.5, depths, widths, res)
    np.testing.assert_allclose(opt.ratios, best[1])
    # a stricter check (e.g. the counted FLOPs) moves to the next best configuration
    strict = realizable_optimum(model, flops, 0.5, depths, widths, res, check=lambda d, w, r: flops(d, w, r) * 1.1)
    assert float(flops(*strict.ratios)) * 1.1 <= 0.5 and strict.accuracy <= opt.accuracy


def test_realizable_optimum_with_slack_trusts_the_check(rng):
    pts = rng.uniform(0.1, 1, size=(30, 3))
    model = fit_accuracy_model(pts, 1 - (1 - pts) @ np.array([0.2, 0.5, 0.3]), monotone=True)
    flops = FlopsModel(np.array([0.1, 0.9]), np.array([[0, 0, 0], [1, 2, 2]]))
    depths, widths, res = np.arange(5) / 4, np.arange(1, 9) / 8, np.arange(4, 29) / 28

    def counted(d, w, r):
        # the model overestimates the "real" FLOPs by 20% (like rounding of feature maps)
        return float(flops(d, w, r)) / 1.2

    best = max(((float(model(d, w, r)), (d, w, r)) for d in depths for w in widths for r in res
                if counted(d, w, r) <= 0.5), key=lambda t: t[0])
    opt = realizable_optimum(model, flops, 0.5, depths, widths, res, check=counted, slack=0.25)
    np.testing.assert_allclose(opt.ratios, best[1])
    assert opt.flops == counted(*opt.ratios) <= 0.5
    # without slack the model's overestimate excludes configurations that meet the budget
    plain = realizable_optimum(model, flops, 0.5, depths, widths, res, check=counted)
    assert plain.accuracy < opt.accuracy
    with pytest.raises(ParameterError, match="check"):
        realizable_optimum(model, flops, 0.5, depths, widths, res, slack=0.1)


def test_bad_input_is_rejected(rng):
    pts = rng.uniform(0.1, 1, size=(20, 3))
    acc = pts.sum(axis=1)
    with pytest.raises(ShapeError, match="3 columns"):
        fit_accuracy_model(pts[:, :2], acc)
    with pytest.raises(ShapeError, match="rows"):
        fit_accuracy_model(pts, acc[:-1])
    with pytest.raises(ParameterError, match="ratios"):
        fit_accuracy_model(pts * 2, acc)
    with pytest.raises(ParameterError, match="coefficients"):
        fit_accuracy_model(pts[:5], acc[:5], form="full", ridge=0.0)
    with pytest.raises(ParameterError, match="form"):
        fit_accuracy_model(pts, acc, form="cubic")
    model = fit_accuracy_model(pts, acc)
    with pytest.raises(InfeasibleError, match="budget"):
        maximize_accuracy(model, FlopsModel.power_law(), 1e-6, lower=0.5)
    with pytest.raises(ParameterError, match="lower"):
        maximize_accuracy(model, FlopsModel.power_law(), 0.5, lower=0.5, upper=0.4)
    with pytest.raises(ParameterError, match="powers"):
        FlopsModel(np.ones(1), np.array([[-1, 0, 0]]))


def test_group_selection_removes_dead_and_irrelevant_groups_and_refits_exactly(rng):
    X = rng.standard_normal((400, 15))
    X[:, 6:9] = 0.0  # a dead channel
    W = rng.standard_normal((15, 4))
    W[9:12] = 0.0  # an irrelevant channel
    Y = X @ W + 0.5
    res = backward_group_selection(X, Y, n_groups=5, n_keep=3)
    np.testing.assert_array_equal(res.info["kept"], [0, 1, 4])
    cols = np.r_[0:6, 12:15]
    ref, *_ = np.linalg.lstsq(np.c_[X[:, cols], np.ones(400)], Y, rcond=None)
    # jitter 1e-10 (relative) perturbs the refit by O(1e-10)
    np.testing.assert_allclose(res.W[cols], ref[:-1], atol=1e-8)
    np.testing.assert_allclose(res.b, ref[-1], atol=1e-8)
    assert np.all(res.W[np.r_[6:12]] == 0)
    assert res.objective < 1e-12


def test_group_selection_refit_matches_lstsq_on_noisy_data(rng):
    X = rng.standard_normal((300, 12)).astype(np.float32)
    scale = np.repeat([0.05, 3.0, 0.1, 2.0], 3)[:, None]  # groups 1 and 3 matter most
    Y = (X @ (scale * rng.standard_normal((12, 3))) + 0.1 * rng.standard_normal((300, 3))).astype(np.float32)
    res = backward_group_selection(X, Y, n_groups=4, n_keep=2, intercept=False)
    assert res.W.dtype == np.float32
    cols = np.concatenate([np.arange(3 * g, 3 * g + 3) for g in res.info["kept"]])
    ref, *_ = np.linalg.lstsq(X[:, cols].astype(np.float64), Y.astype(np.float64), rcond=None)
    np.testing.assert_allclose(res.W[cols], ref, rtol=1e-4, atol=1e-5)  # float32 storage of the answer
    # brute force over all pairs: here the greedy choice is the best pair
    losses = {}
    for pair in itertools.combinations(range(4), 2):
        c = np.concatenate([np.arange(3 * g, 3 * g + 3) for g in pair])
        Wp, *_ = np.linalg.lstsq(X[:, c].astype(np.float64), Y.astype(np.float64), rcond=None)
        losses[pair] = 0.5 * np.sum((X[:, c] @ Wp - Y) ** 2) / 300
    assert tuple(res.info["kept"]) == min(losses, key=losses.get)
    np.testing.assert_allclose(res.objective, losses[tuple(res.info["kept"])], rtol=1e-6)
    with pytest.raises(ParameterError, match="n_keep"):
        backward_group_selection(X, Y, n_groups=4, n_keep=5)
    with pytest.raises(ShapeError, match="groups"):
        backward_group_selection(X, Y, n_groups=5, n_keep=2)
