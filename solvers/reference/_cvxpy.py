"""Shared plumbing for the cvxpy reference programs: import, solver choice, solve."""
from __future__ import annotations

from ..base.errors import LayerTrimError, MissingDependencyError, ParameterError

SOLVERS = {"clarabel": "CLARABEL", "scs": "SCS"}


def require_cvxpy():
    """Import cvxpy or explain how to install it."""
    try:
        import cvxpy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the reference solvers need cvxpy: pip install 'layertrim[verify]'"
        ) from exc
    return cvxpy


def solve(problem, solver: str = "clarabel", *, tol: float = 1e-9, max_iters: int | None = None) -> float:
    """Solve a cvxpy problem with Clarabel or SCS at tolerance ``tol``; return the optimal value.

    Raises LayerTrimError when the solver does not report an optimal solution.
    """
    cp = require_cvxpy()
    key = solver.lower()
    if key not in SOLVERS:
        raise ParameterError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    if key == "clarabel":
        opts = dict(tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
        if max_iters:
            opts["max_iter"] = max_iters
    else:
        opts = dict(eps_abs=tol, eps_rel=tol)
        if max_iters:
            opts["max_iters"] = max_iters
    problem.solve(solver=SOLVERS[key], **opts)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise LayerTrimError(f"reference solver {solver} ended with status {problem.status}")
    return float(problem.value)
