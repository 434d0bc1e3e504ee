"""From a target sparsity to the regularization that reaches it.

Users think in sparsity (fraction of zero weights), solvers in ``lam`` or
``eps``. For a parameter ``t`` whose solutions grow sparser as ``t`` grows,
:func:`bisect_sparsity` brackets the target and bisects (geometrically when
the bracket spans decades), warm-starting every solve from the previous one.
"""
from __future__ import annotations

import math
from typing import Callable

from .errors import ParameterError
from .result import Result


def zero_count(result: Result) -> int:
    """Number of exactly-zero weights."""
    return int(result.W.size - (result.W != 0).sum())


def bisect_sparsity(
    solve: Callable[[float, Result | None], Result],
    sparsity: float,
    lo: float,
    hi: float,
    *,
    count_tol: int = 0,
    at_least: bool = True,
    max_solves: int = 40,
    geometric: bool | None = None,
):
    """Find ``t`` in ``[lo, hi]`` whose solution has the target fraction of zeros.

    Parameters
    ----------
    solve : callable ``(t, warm) -> Result``
        Solves at parameter ``t``; ``warm`` is the previous result (or None).
    sparsity : float in [0, 1)
        Target fraction of zero weights; target count ``k = ceil(sparsity * size)``.
    lo, hi : float
        Bracket: the solution at ``hi`` must reach the target (else ParameterError).
    count_tol : int
        Stop as soon as ``|zeros - k| <= count_tol`` (with ``zeros >= k`` when
        ``at_least``).
    at_least : bool
        Return the least-regularized solution with at least ``k`` zeros; if
        False, the solution whose count is closest to ``k``.

    Returns
    -------
    result, t, trace : Result, float, list of (t, zeros)
    """
    if not (0 <= lo < hi):
        raise ParameterError(f"need 0 <= lo < hi, got lo={lo}, hi={hi}")
    geometric = (lo > 0 and hi / lo > 10) if geometric is None else geometric
    trace = []

    def run(t, warm):
        res = solve(t, warm)
        trace.append((t, zero_count(res)))
        return res

    r_hi = run(hi, None)
    size = r_hi.W.size
    k = math.ceil(sparsity * size - 1e-9)
    if zero_count(r_hi) < k:
        raise ParameterError(
            f"sparsity {sparsity} not reached even at the upper bracket {hi:.4g} "
            f"({zero_count(r_hi)} of {size} weights zero)"
        )
    best, best_t = r_hi, hi
    warm = r_hi
    t_lo, t_hi = lo, hi
    for _ in range(max_solves - 1):
        z_best = zero_count(best)
        if abs(z_best - k) <= count_tol and (z_best >= k or not at_least):
            break
        t = math.sqrt(t_lo * t_hi) if geometric and t_lo > 0 else 0.5 * (t_lo + t_hi)
        res = run(t, warm)
        warm = res
        z = zero_count(res)
        if z >= k:
            t_hi = t
            if z < z_best or (not at_least and abs(z - k) < abs(z_best - k)):
                best, best_t = res, t
        else:
            t_lo = t
            if not at_least and abs(z - k) < abs(z_best - k):
                best, best_t = res, t
        if t_hi - t_lo <= 1e-12 * max(t_hi, 1e-300):
            break
    return best, best_t, trace
