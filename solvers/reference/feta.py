"""cvxpy statement of one convex subproblem of the DC ReLU-layer solver (:func:`layertrim.solvers.dc.feta`)."""
from __future__ import annotations

import time

import numpy as np

from ..dc.subproblem import linearize
from ..base.result import Result
from ..base.validation import check_scalar, check_weights, check_xy
from ._cvxpy import require_cvxpy, solve


def feta_subproblem(
    X,
    Y,
    W_lin,
    b_lin=None,
    *,
    lam: float,
    intercept: bool = True,
    solver: str = "clarabel",
    tol: float = 1e-9,
) -> Result:
    """Reference solution of ``min (1/P) sum(relu(z)^2/2 - a z) + lam ||W||_1``.

    ``Z = X W + 1 b^T`` and ``A = Y * 1[X W_lin + 1 b_lin^T > 0]`` (the
    linearization of ``h = (1/P) <Y, relu(Z)>`` at ``(W_lin, b_lin)``, with
    ``relu'(0) = 0``). Stated as ``sum(square(pos(Z))) / 2P - <A, Z>/P +
    lam * sum|W|``, which is DCP, and solved in float64 by Clarabel or SCS.

    Returns
    -------
    Result
        ``W, b`` (``b`` None without intercept) and ``objective`` = the
        subproblem's optimal value as reported by the solver.
    """
    cp = require_cvxpy()
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    P, N = X.shape
    M = Y.shape[1]
    lam = check_scalar(lam, "lam", low=0.0)
    W_lin = check_weights(W_lin, N, M, "W_lin", dtype=np.float64)
    b_lin = None if b_lin is None else np.asarray(b_lin, dtype=np.float64)
    A = linearize(X, Y, W_lin, b_lin)
    W = cp.Variable((N, M))
    Z = X @ W
    b = None
    if intercept:
        b = cp.Variable(M)
        Z = Z + np.ones((P, 1)) @ cp.reshape(b, (1, M), order="C")
    objective = cp.sum(cp.square(cp.pos(Z))) / (2 * P) - cp.sum(cp.multiply(A, Z)) / P + lam * cp.sum(cp.abs(W))
    value = solve(cp.Problem(cp.Minimize(objective)), solver, tol=tol)
    return Result(
        W=np.asarray(W.value),
        b=np.asarray(b.value) if intercept else None,
        status="optimal",
        objective=value,
        iterations=0,
        time=time.perf_counter() - start,
        info={"solver": solver, "lam": lam},
    )
