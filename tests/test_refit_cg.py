"""Batched conjugate-gradient refits against per-column exact solves, and their use in refit_quadratic."""
import importlib

import numpy as np
import pytest

from layertrim.solvers import GramStats, refit
from layertrim.solvers.base.gram import as_quadratic
from layertrim.solvers.threshold import refit_cg as cg
from layertrim.solvers.threshold.refit import refit_quadratic

#: residual norms of an exact factorized solve, relative to the right-hand side: far below cg.RTOL
EXACT_RESIDUAL = 1e-12


def column_solutions(G, B, mask, ridge):
    """``(G_SS + ridge I)^-1 B_S`` column by column, and the condition number of each system."""
    U, conds = np.zeros(mask.shape), np.ones(mask.shape[1])
    for j in range(mask.shape[1]):
        S = np.flatnonzero(mask[:, j])
        if S.size:
            A = G[np.ix_(S, S)] + ridge * np.eye(S.size)
            U[S, j] = np.linalg.solve(A, B[S, j])
            conds[j] = np.linalg.cond(A)
    return U, conds


@pytest.fixture
def layer(rng):
    """A correlated 40-input layer seen on 120 rows, a random half support per column,
    one column with an empty support and one whose right-hand side vanishes on its support."""
    N, M, P = 40, 12, 120
    X = rng.standard_normal((P, N)) @ (np.eye(N) + 0.5 * rng.standard_normal((N, N)) / np.sqrt(N))
    Y = X @ rng.standard_normal((N, M)) + 0.1 * rng.standard_normal((P, M))
    q = as_quadratic(X, Y, intercept=True)
    mask = rng.random((N, M)) < 0.5
    mask[:, 0] = False
    B = q.C.copy()
    B[mask[:, 1], 1] = 0.0
    return q, B, mask


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_solves_every_column_within_its_bound(layer, ridge):
    q, B, mask = layer
    U, converged = cg.refit_cg(q.G, B, mask, ridge, max_iter=200)
    U_ref, conds = column_solutions(q.G, B, mask, ridge)
    assert converged.all()
    assert np.all(U[~mask] == 0)
    assert np.all(U[:, :2] == 0)  # empty support; zero right-hand side
    for j in range(2, mask.shape[1]):
        # ||u - u*|| <= cond(A) ||r|| / ||A|| ... <= cond(A) * rtol ||u*|| (module docstring), plus the
        # exact solve's own error at the same scale
        bound = conds[j] * (cg.RTOL + EXACT_RESIDUAL) * np.linalg.norm(U_ref[:, j])
        assert np.linalg.norm(U[:, j] - U_ref[:, j]) <= bound


def test_start_and_budget(layer):
    """From the exact solution nothing moves; with one iteration the columns are not confirmed."""
    q, B, mask = layer
    U_ref, _ = column_solutions(q.G, B, mask, 0.0)
    U, converged = cg.refit_cg(q.G, B, mask, max_iter=0, start=U_ref)
    assert converged.all()
    np.testing.assert_array_equal(U, U_ref)
    _, converged = cg.refit_cg(q.G, B, mask, max_iter=1)
    assert converged[:2].all() and not converged[2:].any()


def test_iteration_budget_prices_the_exact_factorizations():
    N = M = 2048
    half = M * (N // 2) ** 3 / 3.0  # one factorization of a half support per column
    assert cg.iteration_budget(half, M, N, M) >= cg.MIN_ITERATIONS  # a 2048 x 2048 layer at 50% goes iterative
    assert cg.iteration_budget(M * (N // 10) ** 3 / 3.0, M, N, M) == 0  # at 90% it stays exact
    assert cg.iteration_budget(9**3 / 3.0, 1, 9, 1) == 0  # so does one tiny problem


@pytest.mark.parametrize("budget", [10**6, 1])
def test_refit_routes_through_cg_and_falls_back(rng, layer, monkeypatch, budget):
    """With the iterative route forced, a refit equals the exact one within each column's bound;
    with a budget too small to converge, the unconfirmed columns are solved exactly."""
    q, _, mask = layer
    anchor = rng.standard_normal(mask.shape)
    refit_module = importlib.import_module("layertrim.solvers.threshold.refit")
    monkeypatch.setattr(refit_module, "iteration_budget", lambda *shape: 0)
    W_exact, info_exact = refit_quadratic(q, mask, ridge=0.1, anchor=anchor)
    assert info_exact["n_iterative"] == 0
    monkeypatch.setattr(refit_module, "iteration_budget", lambda *shape: budget)
    monkeypatch.setattr(refit_module, "well_conditioned", lambda *args: True)
    W, info = refit_quadratic(q, mask, ridge=0.1, anchor=anchor)
    assert np.all(W[~mask] == 0)
    if budget > 1:
        assert info["n_iterative"] == mask.shape[1]
        _, conds = column_solutions(q.G, q.C, mask, 0.1)
        U_exact = W_exact - np.where(mask, anchor, 0.0)  # the solved part: the anchor's correction
        for j in range(1, mask.shape[1]):
            bound = conds[j] * (cg.RTOL + EXACT_RESIDUAL) * np.linalg.norm(U_exact[:, j])
            assert np.linalg.norm(W[:, j] - W_exact[:, j]) <= bound
    else:
        assert info["n_iterative"] == 1  # the empty column only: no other converges in one iteration
        np.testing.assert_allclose(W, W_exact, rtol=1e-12, atol=1e-12)


def test_a_start_on_the_support_is_only_a_starting_point(rng, layer, monkeypatch):
    """From any start the iterative route reaches the same refit (within the columns' bound)."""
    q, _, mask = layer
    monkeypatch.setattr(importlib.import_module("layertrim.solvers.threshold.refit"), "iteration_budget",
                        lambda *shape: 10**6)
    W, _ = refit_quadratic(q, mask)
    W_started, info = refit_quadratic(q, mask, start=W + 0.1 * rng.standard_normal(mask.shape))
    assert info["n_iterative"] == mask.shape[1]
    assert np.all(W_started[~mask] == 0)
    _, conds = column_solutions(q.G, q.C, mask, 0.0)
    for j in range(1, mask.shape[1]):
        assert np.linalg.norm(W_started[:, j] - W[:, j]) <= 2 * conds[j] * cg.RTOL * np.linalg.norm(W[:, j])


def test_ill_conditioned_layers_stay_exact(rng, monkeypatch):
    """Two nearly equal inputs: some support may hold both (a near-singular ``G_SS``), so the
    iterative route is not taken, whatever the budget."""
    X = rng.standard_normal((200, 30))
    X[:, 1] = X[:, 0] + 1e-6 * rng.standard_normal(200)
    q = as_quadratic(X, X @ rng.standard_normal((30, 64)), intercept=True)
    mask = rng.random((30, 64)) < 0.5
    rows = np.arange(30)
    assert not cg.well_conditioned(q.G, rows, 10**9)
    assert cg.well_conditioned(q.G, rows[1:], 10**9)
    # without the near-duplicate the condition number is O(10): a budget of 4 sqrt(kappa) is enough,
    # half of 4 sqrt(kappa) is not
    h = 1 / np.sqrt(np.diag(q.G)[1:])
    lam = np.linalg.eigvalsh(q.G[1:, 1:] * h[:, None] * h[None, :])
    root = np.sqrt(lam[-1] / lam[0])
    assert cg.well_conditioned(q.G, rows[1:], int(np.ceil(1.01 * cg.ITERATIONS_PER_ROOT * root)))
    assert not cg.well_conditioned(q.G, rows[1:], int(0.5 * cg.ITERATIONS_PER_ROOT * root))
    monkeypatch.setattr(importlib.import_module("layertrim.solvers.threshold.refit"), "iteration_budget",
                        lambda *shape: 10**6)
    assert refit_quadratic(q, mask)[1]["n_iterative"] == 0


def test_columns_out_of_reach_are_dropped_by_their_rate():
    """A squared residual that fell from 1 to 1e-2 in 16 iterations needs 112 more to reach 1e-16 at
    that rate: within a budget of 129, not of 127 (128 is the edge); a residual that did not fall never arrives."""
    rr0, tc = np.ones(3), np.full(3, 1e-16)
    rr = np.array([1e-2, 1e-2, 1.0])
    out_129 = cg._out_of_reach(rr, rr0, tc, 16, 129)
    out_127 = cg._out_of_reach(rr, rr0, tc, 16, 127)
    assert not out_129[0] and out_127[0] and out_129[2] and out_127[2]
