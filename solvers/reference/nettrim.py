"""The Net-Trim program in cvxpy (reference for :func:`layertrim.solvers.nettrim.solver`)."""
from __future__ import annotations

import numpy as np

from ..base.errors import ParameterError, ShapeError
from ..base.validation import check_array, check_choice, check_scalar, check_xy
from ._cvxpy import require_cvxpy, solve


def nettrim(X, Y, eps, *, relu=True, intercept=True, V=None, eps_mode="layer", solver="clarabel",
            tol=1e-9, max_iters=None):
    """``min ||W||_1`` s.t. the Net-Trim constraints, solved by cvxpy.

    ``relu=True``: ``||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F`` and
    ``(X W + 1 b^T)_{Omega^c} <= V_{Omega^c}``, ``Omega = {Y > 0}``, ``V = 0``
    unless given; ``relu=False``: ``||X W + 1 b^T - Y||_F <= eps ||Y||_F``.
    ``eps_mode="neuron"``: one ball per column, radius ``eps ||Y_m||``.

    Returns
    -------
    W : ndarray (n_features, n_outputs), float64
    b : ndarray (n_outputs,) or None
    objective : float
        ``||W||_1`` at the solver's optimum.
    """
    cp = require_cvxpy()
    X, Y = check_xy(X, Y)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    eps = check_scalar(eps, "eps", low=0.0)
    check_choice(eps_mode, "eps_mode", ("layer", "neuron"))
    if V is not None and not relu:
        raise ParameterError("V applies only to relu=True")
    P, N = X.shape
    M = Y.shape[1]
    W = cp.Variable((N, M))
    b = cp.Variable(M) if intercept else None
    out = X @ W + (np.ones((P, 1)) @ cp.reshape(b, (1, M), order="C") if intercept else 0)
    mask = (Y > 0).astype(np.float64) if relu else np.ones_like(Y)
    resid = cp.multiply(mask, out - Y)
    cons = []
    if eps_mode == "layer":
        cons.append(cp.norm(cp.vec(resid, order="F"), 2) <= eps * np.linalg.norm(Y))
    else:
        cons.append(cp.norm(resid, 2, axis=0) <= eps * np.linalg.norm(Y, axis=0))
    if relu:
        Vb = np.zeros_like(Y) if V is None else check_array(np.broadcast_to(V, Y.shape), "V", dtype=np.float64)
        if Vb.shape != Y.shape:
            raise ShapeError(f"V must have the shape of Y {Y.shape}")
        comp = mask == 0
        if comp.any():
            rows, cols = np.nonzero(comp)
            flat = rows * M + cols
            cons.append(cp.vec(out, order="C")[flat] <= Vb[rows, cols])
    prob = cp.Problem(cp.Minimize(cp.sum(cp.abs(W))), cons)
    value = solve(prob, solver, tol=tol, max_iters=max_iters)
    return W.value, (b.value if intercept else None), value
