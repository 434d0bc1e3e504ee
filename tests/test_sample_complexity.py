"""The sample-complexity experiment (bindings/torch/examples/sample_complexity.py) in its quick
setting: recovery of planted layers above ``4 s log(N/s)`` samples, certain failure below ``s``
samples, a recovery verdict that reads only the planted weights, and the threshold fit."""
import math

import numpy as np
import pytest

pytest.importorskip("torch")  # the examples live in the torch binding's package

from layertrim.solvers import ParameterError  # noqa: E402
from layertrim.bindings.torch.examples import sample_complexity as sc  # noqa: E402

N = sc.QUICK["n_inputs"]  # 100 inputs
TRIALS = 10


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_recovery_at_four_s_log_n_over_s(seed, relu):
    """At P = ceil(4 s log(N/s)) at least 16 of 20 trials (80 %) are recovered, for s = 8 and 10 (P = 81, 93).

    Measured per-trial failure rate at these P over seeds 0..59 x 10 trials:
    ReLU 15/600 (s = 8) and 11/600 (s = 10), linear 0/600. With a failure
    rate of 2.5 % the binomial chance of 5 or more failures in 20 is 1.1e-4
    (of 3 or more in 10 it would be 1.6e-3, hence 20 trials, not 10). (At
    s = 4, P = 52, the ReLU program fails in 15 of 300 trials: the constant 4
    is not enough there; every such failure is one of the convex program
    itself, checked with cvxpy, not of the ADMM.)
    """
    for s in (8, 10):
        P = math.ceil(4 * sc.log_scale(s, N))
        pt = sc.phase_transition(relu=relu, n_inputs=N, sparsities=(s,), sizes=(P,), trials=2 * TRIALS, seed=seed)
        assert pt.success.shape == (1, 2 * TRIALS, 1, 1)
        assert pt.success.sum() >= 16, (s, P, int(pt.success.sum()))


def _cheaper_feasible_point(X, y, w, relu):
    """A point ``w + t v`` that meets every constraint planted ``w`` meets, with a smaller l1 norm.

    With ``k = |Omega| <= P < s`` equations on the ``s`` support entries, the
    null space of ``X[Omega, S]`` is nontrivial; ``v = -(I - A^+ A) sign(w_S)``
    lies in it and ``sign(w_S)^T v = -||v||^2 < 0``; a step ``t`` small enough to
    keep the signs of ``w_S`` and the strict half-spaces off Omega lowers
    ``||w||_1`` by ``t ||v||^2``.
    """
    S = np.flatnonzero(w)
    omega = y > 0 if relu else np.ones(len(y), dtype=bool)
    A = X[omega][:, S]
    sgn = np.sign(w[S])
    v = -(sgn - np.linalg.pinv(A) @ (A @ sgn))
    t = 0.5 * np.abs(w[S]).min() / np.abs(v).max()
    if relu and (~omega).any():
        slack, rise = -(X[~omega] @ w), X[~omega][:, S] @ v
        if (rise > 0).any():
            t = min(t, 0.5 * np.min(slack[rise > 0] / rise[rise > 0]))
    out = w.copy()
    out[S] += t * v
    return out, t * (v @ v)


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_fails_below_s_samples(seed, relu):
    """At P = s/2 no trial is recovered, for s = 8, 12, 16, and it must be so.

    Fewer equations than unknown nonzeros: the equations on Omega (at most
    P < s of them) leave a null-space direction on the support along which
    the l1 norm decreases while every constraint stays satisfied (built here
    by :func:`_cheaper_feasible_point`, independently of any solver), so the
    planted w is not a minimizer; moreover a basic optimal solution of the
    program has at most P < s nonzeros, so the planted support cannot be found.
    """
    for s in (8, 12, 16):
        P = s // 2
        for trial in range(TRIALS):
            layer = sc.trial_layer(seed, s, trial, P, N, relu=relu)
            hit, _ = sc.sweep_trial(layer, [P], relu=relu)
            assert not hit.any(), (s, trial)
            y, w = layer.Y[:, 0], layer.W[:, 0]
            better, gain = _cheaper_feasible_point(layer.X, y, w, relu)
            out = layer.X @ better
            on = y > 0 if relu else np.ones(P, dtype=bool)
            # feasibility of the constructed point in float64: residuals at the rounding level of X w
            np.testing.assert_allclose(out[on], y[on], rtol=0, atol=1e-9 * (1 + np.abs(y).max()))
            assert np.all(out[~on] <= 0)  # t stops halfway to the nearest half-space
            assert np.abs(better).sum() < np.abs(w).sum() - 0.5 * gain
            assert gain > 0


def test_reported_recovery_is_real(seed):
    """Every "recovered" of a sweep, re-checked by hand on the weights the sweep judged: planted support,
    error against the planted weights, and the exact constraints of the program on the planted data."""
    s, sizes = 8, [40, 60, 81]
    checked = 0
    for trial in range(4):
        layer = sc.trial_layer(seed, s, trial, sizes[-1], N, relu=True)
        hit, results = sc.sweep_trial(layer, sizes, relu=True)
        for P, ok, res in zip(sizes, hit[:, 0], results):
            if not ok:
                continue
            X, y, w, w_hat = layer.X[:P], layer.Y[:P, 0], layer.W[:, 0], res.W[:, 0].astype(np.float64)
            assert set(np.flatnonzero(np.abs(w_hat) > 1e-3 * np.abs(w).max())) == set(np.flatnonzero(w))
            assert np.linalg.norm(w_hat - w) < 1e-3 * np.linalg.norm(w)
            # feasible for Net-Trim on the planted data: the ball of radius eps ||y|| on Omega (plus the
            # solver's tolerance 1e-5 relative) and the half-spaces off it (to the same tolerance)
            on = y > 0
            assert np.linalg.norm(X[on] @ w_hat - y[on]) <= (sc.EPS + 2 * sc.TOL) * np.linalg.norm(y)
            assert np.all(X[~on] @ w_hat <= 2 * sc.TOL * np.linalg.norm(y))
            checked += 1
    assert checked >= 4  # P = 81 = 4 s log(N/s) is recovered in most trials (see above)


def test_recovery_agrees_with_cvxpy(seed):
    """The planted weights are the optimum of the exact convex program: cvxpy + Clarabel finds them too."""
    pytest.importorskip("cvxpy")
    from layertrim.solvers import reference

    for relu in (True, False):
        layer = sc.trial_layer(seed, 8, 0, 81, N, relu=relu)
        W, b, _ = reference.nettrim(layer.X, layer.Y, sc.EPS, relu=relu, intercept=False, eps_mode="neuron")
        ours = sc.recover(layer.X, layer.Y, relu=relu)
        assert sc.recovered(W, b, layer.W, layer.b).all() == sc.recovered(ours.W, ours.b, layer.W, layer.b).all()


def test_verdict_reads_planted_weights_only(seed):
    """The verdict ignores the solver's status: a converged solve of another planted layer, a spike off
    the support and a 2e-3 relative scaling are all "not recovered"."""
    layer = sc.trial_layer(seed, 10, 0, 93, N, relu=False)
    other = sc.trial_layer(seed, 10, 1, 93, N, relu=False)
    res = sc.recover(layer.X, layer.Y, relu=False)
    assert res.status == "optimal" and sc.recovered(res.W, res.b, layer.W, layer.b).all()
    assert not sc.recovered(res.W, res.b, other.W, other.b).any()  # optimal, but not this planted layer
    spike = res.W.copy()
    spike[np.flatnonzero(layer.W[:, 0] == 0)[0]] = 2e-3 * np.abs(layer.W).max()  # support no longer exact
    assert not sc.recovered(spike, res.b, layer.W, layer.b).any()
    assert not sc.recovered(res.W * (1 + 2e-3), res.b, layer.W, layer.b).any()  # relative error 2e-3


def _synthetic(rates_from, sparsities=(4, 8, 12), sizes=tuple(range(4, 101, 4)), trials=2):
    """A PhaseTransition with success[s, t, P] = rates_from(s, P, t)."""
    success = np.array([[[[rates_from(s, P, t)] for P in sizes] for t in range(trials)] for s in sparsities])
    ran = np.asarray(sizes)[None, :] >= np.asarray(sparsities)[:, None]
    return sc.PhaseTransition(True, 100, sparsities, sizes, 0, False, success & ran[:, None, :, None], ran,
                              1.0, 1, 0.0, 0)


def test_threshold_fit_closed_form():
    """Rate 0 below the first grid P >= 2 L(s) and 1 from it on: P* is the midpoint of the two grid
    points (linear interpolation at 1/2), s = 12 never recovers (censored)."""
    L = sc.log_scale(np.array([4, 8]), 100)
    first = 4 * np.ceil(2 * L / 4)  # first grid P >= 2 L(s) on the grid 4, 8, ..., 100
    pt = _synthetic(lambda s, P, t: s != 12 and P >= first[[4, 8].index(s)])
    p_star = sc.thresholds(pt)
    np.testing.assert_allclose(p_star[:2], first - 2, rtol=1e-12)
    assert np.isnan(p_star[2])
    fit = sc.fit_constant(pt)
    r = (first - 2) / L
    np.testing.assert_allclose(fit["C"], np.sum(1 / r) / np.sum(1 / r**2), rtol=1e-12)
    assert fit["censored"] == [12]
    # the envelope: the last failing grid P over L(s), the censored s = 12 failing up to P = 100
    np.testing.assert_allclose(fit["envelope"], max(np.max((first - 4) / L), 100 / sc.log_scale(12, 100)), rtol=1e-12)
    half = _synthetic(lambda s, P, t: P >= 40 or (P == 36 and t == 0), sparsities=(8,))
    assert sc.thresholds(half)[0] == 36  # rate exactly 1/2 at P = 36, 0 before: the threshold is 36


def test_l1_statistical_dimension_against_quadrature():
    """delta(s, N) against a brute-force quadrature of E dist^2(g, tau d||w||_1) minimized on a tau grid,
    and the closed forms delta(N, N) = N (the descent cone is everything) and delta -> 0 as s -> 0."""
    u = np.linspace(-10, 10, 20001)
    phi = np.exp(-(u**2) / 2) / np.sqrt(2 * np.pi)
    for s, n in ((5, 200), (20, 200), (8, 100)):
        taus = np.linspace(0, 6, 301)
        off = [np.trapezoid(np.maximum(np.abs(u) - t, 0) ** 2 * phi, u) for t in taus]
        brute = np.min(s * (1 + taus**2) + (n - s) * np.array(off))
        # quadrature on a 1e-3 grid of u and a 0.02 grid of tau (error O(0.02^2) near the smooth minimum):
        # both far below the 1e-3 relative tolerance
        np.testing.assert_allclose(sc.l1_statistical_dimension(s, n), brute, rtol=1e-3)
    np.testing.assert_allclose(sc.l1_statistical_dimension(50, 50), 50, rtol=1e-12)
    assert sc.l1_statistical_dimension(1, 10**6) < 2 * np.log(10**6) + 2


def test_bad_input_names_the_argument(rng):
    with pytest.raises(ParameterError, match="s must be"):
        sc.planted_layer(rng, 10, 5, 6)
    with pytest.raises(ParameterError, match="trials"):
        sc.phase_transition(relu=True, n_inputs=10, sparsities=(2,), sizes=(4,), trials=0)
    with pytest.raises(ParameterError, match="model"):
        sc.fit_constant(_synthetic(lambda s, P, t: True), model="s^2")
    with pytest.raises(ParameterError, match="sparsities"):  # checked before any solve
        sc.phase_transition(relu=True, n_inputs=10, sparsities=(2, 11), sizes=(4,), trials=1)
