"""Reference lasso-family problems: cvxpy (Clarabel or SCS) and the l1 lasso as an OSQP QP.

Both state ``min_{W,b} (1/2P) ||X W + 1 b^T - Y||_F^2 + lam R(W)`` from the
samples (not the Gram form), so they check the fast solver's Gram reduction too.
"""
from __future__ import annotations

import numpy as np

from ..base.errors import LayerTrimError, MissingDependencyError
from ..base.validation import check_choice, check_scalar, check_xy
from ._cvxpy import require_cvxpy, solve

PENALTIES = ("l1", "group", "elastic_net")


def lasso(X, Y, lam, *, penalty="l1", l1_ratio=0.5, intercept=True, solver="clarabel", tol=1e-10):
    """Solve the lasso family with cvxpy; returns ``(W, b, objective)`` in float64.

    ``R(W)`` is ``||W||_1`` (``"l1"``), ``sum_i ||W_i||_2`` over rows
    (``"group"``) or ``a ||W||_1 + (1-a)/2 ||W||_F^2`` (``"elastic_net"``,
    ``a = l1_ratio``); ``b`` is ``None`` without intercept. ``objective`` is
    the solver's optimal value; ``tol`` its gap/feasibility tolerance.
    """
    cp = require_cvxpy()
    X, Y = check_xy(X, Y)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    check_choice(penalty, "penalty", PENALTIES)
    lam = check_scalar(lam, "lam", low=0.0)
    a = check_scalar(l1_ratio, "l1_ratio", low=0.0, high=1.0)
    P, N = X.shape
    M = Y.shape[1]
    W = cp.Variable((N, M))
    fit = X @ W - Y
    b = None
    if intercept:
        b = cp.Variable(M)
        fit = fit + np.ones((P, 1)) @ cp.reshape(b, (1, M), order="C")
    if penalty == "l1":
        reg = cp.sum(cp.abs(W))
    elif penalty == "group":
        reg = cp.sum(cp.norm(W, 2, axis=1))
    else:
        reg = a * cp.sum(cp.abs(W)) + 0.5 * (1.0 - a) * cp.sum_squares(W)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(fit) / (2 * P) + lam * reg))
    value = solve(problem, solver, tol=tol)
    return W.value, (b.value if intercept else None), value


def lasso_osqp(X, Y, lam, *, intercept=True, tol=1e-10, max_iter=200_000):
    """The l1 lasso as a quadratic program solved by OSQP, one output at a time.

    Per output, variables ``x = (w (N), b, r (P), t (N))``::

        min  (1/2P) ||r||^2 + lam 1^T t
        s.t. X w + b 1 - r = y,   w - t <= 0,   w + t >= 0

    (``b`` fixed to 0 without intercept). Returns ``(W, b, objective)``,
    the objective evaluated at the returned solution.
    """
    try:
        import osqp
        from scipy import sparse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("lasso_osqp needs osqp: pip install 'layertrim[verify]'") from exc
    X, Y = check_xy(X, Y)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    lam = check_scalar(lam, "lam", low=0.0)
    P, N = X.shape
    M = Y.shape[1]
    n_var = N + 1 + P + N
    quad = sparse.diags(np.r_[np.zeros(N + 1), np.full(P, 1.0 / P), np.zeros(N)], format="csc")
    q = np.r_[np.zeros(N + 1 + P), np.full(N, lam)]
    ones = np.ones((P, 1)) if intercept else np.zeros((P, 1))
    eye_n = sparse.identity(N, format="csc")
    A = sparse.vstack([
        sparse.hstack([sparse.csc_matrix(X), sparse.csc_matrix(ones), -sparse.identity(P), sparse.csc_matrix((P, N))]),
        sparse.hstack([eye_n, sparse.csc_matrix((N, 1 + P)), -eye_n]),
        sparse.hstack([eye_n, sparse.csc_matrix((N, 1 + P)), eye_n]),
    ], format="csc")
    W = np.zeros((N, M))
    b = np.zeros(M)
    for m in range(M):
        lower = np.r_[Y[:, m], np.full(N, -np.inf), np.zeros(N)]
        upper = np.r_[Y[:, m], np.zeros(N), np.full(N, np.inf)]
        solver = osqp.OSQP()
        solver.setup(quad, q, A, lower, upper, eps_abs=tol, eps_rel=tol, max_iter=max_iter,
                     polishing=True, verbose=False)
        res = solver.solve(raise_error=False)
        if res.info.status not in ("solved", "solved inaccurate"):
            raise LayerTrimError(f"OSQP ended with status {res.info.status!r} on output {m}")
        W[:, m] = res.x[:N]
        b[m] = res.x[N] if intercept else 0.0
    fit = X @ W + b - Y
    objective = float(np.sum(fit * fit) / (2 * P) + lam * np.abs(W).sum())
    return W, (b if intercept else None), objective
