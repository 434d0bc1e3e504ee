"""Lasso, row-group lasso and elastic net for linear layers, on the Gram form.

``min_{W, b} (1/2P) ||X W + 1 b^T - Y||_F^2 + lam R(W)`` with

- ``"l1"``: ``R(W) = ||W||_1`` (elementwise),
- ``"group"``: ``R(W) = sum_i ||W_i||_2`` over rows (row ``i`` = input ``i``:
  zero rows remove input neurons/channels),
- ``"elastic_net"``: ``R(W) = a ||W||_1 + (1 - a)/2 ||W||_F^2`` with ``a = l1_ratio``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np

from .duality import gap, relative_gap
from ..base.errors import ConvergenceWarning, ParameterError
from .fista import fista, foreign_fista, gap_xp, prox_xp, start_from
from ..base.backend import as_quadratic_any, check_start, intercept_for, is_foreign, namespace, on_device, \
    result_on_host
from ..base.gram import Quadratic
from ..base.interrupt import interruptible
from .cd import gram_product, solve_cd
from ..base.path import bisect_sparsity
from ..base.prox import elastic_net_prox, group_soft_threshold, soft_threshold
from ..base.result import Result
from ..base.validation import check_choice, check_scalar, check_sparsity, exactly_one

PENALTIES = ("l1", "group", "elastic_net")
SOLVERS = ("auto", "cd", "fista")
#: default iteration limits: outer working-set iterations (and passes per
#: restricted solve) for "cd", proximal-gradient steps for "fista"
MAX_ITER = {"cd": 1000, "fista": 50_000}
#: "auto" picks coordinate descent: on the 784 -> 300 MNIST layer it reaches a
#: relative gap of 1e-6 well over 10x faster than FISTA (benchmarks/bench_lasso.py)
AUTO_SOLVER = "cd"


def _check_penalty(penalty, l1_ratio):
    check_choice(penalty, "penalty", PENALTIES)
    return check_scalar(l1_ratio, "l1_ratio", low=0.0, high=1.0)


def _weights(penalty, lam, l1_ratio):
    """``(lam1, lam2, group)`` of ``lam R``: ``lam1`` on the l1 / group norm, ``lam2`` on ``1/2 ||W||^2``."""
    if penalty == "group":
        return lam, 0.0, True
    if penalty == "elastic_net":
        return lam * l1_ratio, lam * (1.0 - l1_ratio), False
    return lam, 0.0, False


def _lam_max(quad: Quadratic, penalty: str, l1_ratio: float) -> float:
    C = quad.C
    if is_foreign(C):
        xp = namespace(C)
        top = float(xp.max(xp.linalg.vector_norm(C, axis=1) if penalty == "group" else xp.abs(C)))
    elif penalty == "group":
        return float(np.sqrt(np.einsum("ij,ij->i", C, C)).max())
    else:
        top = float(np.abs(C).max())
    if penalty == "group":
        return top
    if penalty == "elastic_net":
        if l1_ratio == 0.0:
            raise ParameterError("lam_max is infinite for l1_ratio=0 (ridge never zeroes weights)")
        return top / l1_ratio
    return top


def lam_max(X, Y=None, *, penalty="l1", l1_ratio=0.5, intercept=True) -> float:
    """Smallest ``lam`` for which ``W = 0`` solves the problem.

    At ``W = 0`` the gradient of the loss is ``-C = -X^T (Y - 1 y_mean^T) / P``
    (uncentered without intercept), so ``W = 0`` is optimal iff
    ``max |C| <= lam`` (l1), ``max_i ||C_i||_2 <= lam`` (group) or
    ``max |C| <= lam a`` (elastic net).

    Parameters
    ----------
    X : ndarray (n_samples, n_features) or GramStats
    Y : ndarray (n_samples, n_outputs), or None with GramStats
    penalty : {"l1", "group", "elastic_net"}
    l1_ratio : float in (0, 1]
        Elastic-net mixing ``a``.
    intercept : bool
        Whether an unpenalized intercept is fitted.
    """
    l1_ratio = _check_penalty(penalty, l1_ratio)
    return _lam_max(as_quadratic_any(X, Y, intercept=intercept), penalty, l1_ratio)


def _prox(penalty, lam, l1_ratio):
    if penalty == "group":
        return lambda V, t: group_soft_threshold(V, t * lam)
    if penalty == "elastic_net":
        return lambda V, t: elastic_net_prox(V, t * lam, l1_ratio)
    return lambda V, t: soft_threshold(V, t * lam)


def _solve(quad: Quadratic, lam, penalty, l1_ratio, W0, tol, max_iter, solver) -> Result:
    """One solve at a fixed ``lam``; ``W0`` float64 start or None."""
    start = time.perf_counter()
    lam1, lam2, group = _weights(penalty, lam, l1_ratio)
    G, C, yy = quad.G, quad.C, quad.yy
    foreign = is_foreign(C)
    xp = namespace(C)
    W0 = xp.zeros_like(C) if W0 is None else W0
    if solver == "cd":
        iters = max_iter or MAX_ITER["cd"]
        W, n_iter, epochs, history, converged, primal, dual = solve_cd(
            G, C, yy, W0, lam1, lam2, group, tol=tol, max_iter=iters
        )
        extra = {"epochs": epochs}
    else:
        iters = max_iter or MAX_ITER["fista"]

        gap_of = gap_xp if foreign else gap

        def rel_gap(W, GW):
            return relative_gap(*gap_of(W, GW, C, yy, lam1, lam2, group))

        primal = None
        L = float(xp.linalg.eigvalsh(G)[-1]) if foreign else quad.lipschitz()
        with interruptible():  # the prox and gap kernels run once per step
            W, n_iter, hist, converged = fista(
                G, C, (prox_xp if foreign else _prox)(penalty, lam, l1_ratio), W0, L=L, tol=tol, max_iter=iters,
                criterion=rel_gap,
            )
        history = {"gap": np.array(hist)}
        extra = {}
    dtype = quad.dtype
    W_out = xp.astype(W, dtype)
    Wd = xp.astype(W_out, xp.float64)
    if foreign:  # objective and gap of the returned (rounded to the input dtype) weights
        primal, dual = gap_xp(Wd, G @ Wd, C, yy, lam1, lam2, group)
    elif primal is None or dtype != np.float64:
        primal, dual = gap(Wd, gram_product(G, Wd), C, yy, lam1, lam2, group)
    rel = relative_gap(primal, dual)
    b = intercept_for(quad, Wd)
    status = "optimal" if converged else "max_iter"
    if not converged:
        warnings.warn(
            f"lasso ({solver}) stopped after {n_iter} iterations at relative duality gap {rel:.2e} > tol={tol:.1e}",
            ConvergenceWarning,
            stacklevel=3,
        )
    info = {
        "lam": float(lam), "penalty": penalty, "solver": solver, "gap": rel, "dual": dual,
        "sparsity": float(xp.mean(xp.astype(W_out == 0, xp.float64))), **extra,
    }
    if penalty == "elastic_net":
        info["l1_ratio"] = l1_ratio
    return Result(
        W=W_out, b=None if b is None else xp.astype(b, dtype), status=status, objective=primal,
        iterations=n_iter, time=time.perf_counter() - start, history=history, info=info,
    )


def lasso(
    X,
    Y=None,
    *,
    lam=None,
    sparsity=None,
    penalty="l1",
    l1_ratio=0.5,
    intercept=True,
    tol=1e-6,
    max_iter=None,
    warm_start=None,
    solver="auto",
) -> Result:
    """Solve ``min_{W,b} (1/2P) ||X W + 1 b^T - Y||_F^2 + lam R(W)``.

    ``R`` is ``||W||_1`` (``"l1"``), ``sum_i ||W_i||_2`` over rows (``"group"``:
    a row is one input) or ``a ||W||_1 + (1-a)/2 ||W||_F^2`` (``"elastic_net"``,
    ``a = l1_ratio``). The intercept ``b`` is unpenalized.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features), or GramStats
        Inputs; a :class:`GramStats` (with ``Y=None``) gives the same problem
        from streamed statistics.
    Y : ndarray, shape (n_samples, n_outputs) or (n_samples,)
        Targets.
    lam : float > 0, optional
        Regularization; give exactly one of ``lam`` and ``sparsity``.
    sparsity : float in [0, 1), optional
        Target fraction of zero weights: ``lam`` is found by a warm-started
        bisection between ``lam_max`` and ``1e-6 lam_max`` until the number of
        zeros is within ``n_outputs`` of the target (and not below it).
    penalty : {"l1", "group", "elastic_net"}
    l1_ratio : float in [0, 1]
        Elastic-net mixing ``a`` (ignored otherwise).
    intercept : bool
        Fit an unpenalized intercept.
    tol : float > 0
        Target relative duality gap ``(P(W) - D(Theta)) / P(W)`` (dual point:
        :mod:`layertrim.solvers.lasso.duality`).
    max_iter : int, optional
        ``"cd"``: outer working-set iterations and passes per restricted solve
        (default 1000); ``"fista"``: proximal-gradient steps (default 50,000).
    warm_start : Result or ndarray (n_features, n_outputs), optional
        Initial weights.
    solver : {"auto", "cd", "fista"}
        Working-set coordinate descent or FISTA with adaptive restart;
        ``"auto"`` is coordinate descent, the faster one by measurement, for
        numpy data; FISTA in float64 on their device for other array-API arrays.

    Returns
    -------
    Result
        ``W`` (n_features, n_outputs) and ``b`` in the input dtype; ``objective``
        is the primal value; ``history["gap"]`` the relative gap at each check;
        ``info``: ``lam``, ``gap`` (final relative gap), ``dual``, ``sparsity``
        and, in sparsity mode, ``target_sparsity`` and ``n_solves``.

    Raises
    ------
    ShapeError, NonFiniteError, EmptyDataError
        Bad ``X``, ``Y`` or ``warm_start``.
    ParameterError
        Bad ``lam``, ``sparsity``, ``penalty``, ``l1_ratio``, ``tol``,
        ``max_iter`` or ``solver``, or both/neither of ``lam`` and ``sparsity``.

    Notes
    -----
    The problem is solved on ``G = Xc^T Xc / P``, ``C = Xc^T Yc / P`` (centered
    when ``intercept``), in float64 whatever the input dtype; then
    ``b = y_mean - x_mean W``.

    Coordinate descent (``"cd"``) repeats: compute ``G W`` and the duality gap;
    stop if the relative gap is ``<= tol``; otherwise build working sets
    (per output for l1 / elastic net, over rows for group) from the nonzeros
    and the worst violators of ``|grad_im| <= lam1`` (``||grad_i|| <= lam``),
    at most ``max(200, 2 nnz)`` entries, and minimize the restricted problem by
    exact coordinate (row-block) updates
    ``w_im <- S(G_ii w_im - grad_im, lam1) / (G_ii + lam2)`` (``lam1``,
    ``lam2``: the l1 and squared-l2 weights of ``lam R``) until its own gap
    falls below 0.1 times the current one (below ``tol`` when no violator was
    left out). For l1 / elastic net every 5 passes try the exact minimizer on
    the current support and signs (a small Cholesky solve) and Anderson
    extrapolation, kept when they lower the objective. FISTA (``"fista"``)
    uses step ``1 / lambda_max(G)`` and checks the gap every 10 steps.

    Examples
    --------
    >>> res = lasso(X, Y, sparsity=0.9)   # doctest: +SKIP
    >>> res.info["lam"], res.sparsity      # doctest: +SKIP
    """
    exactly_one("lam", lam, "sparsity", sparsity)
    l1_ratio = _check_penalty(penalty, l1_ratio)
    check_choice(solver, "solver", SOLVERS)
    tol = check_scalar(tol, "tol", low=0.0, low_open=True)
    if max_iter is not None:
        max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    if lam is not None:
        lam = check_scalar(lam, "lam", low=0.0, low_open=True)
    else:
        sparsity = check_sparsity(sparsity)
    quad, solver = foreign_fista(as_quadratic_any(X, Y, intercept=intercept), solver)
    solver = AUTO_SOLVER if solver == "auto" else solver
    W0 = None
    if warm_start is not None:
        W_ws = warm_start.W if isinstance(warm_start, Result) else warm_start
        W0 = check_start(W_ws, quad.n_features, quad.n_outputs, quad.C, "warm_start")
    if lam is not None:
        return _solve(quad, lam, penalty, l1_ratio, W0, tol, max_iter, solver)
    res = _solve_sparsity(quad, sparsity, penalty, l1_ratio, W0, tol, max_iter, solver)
    return res if not is_foreign(quad.C) else replace(res, W=on_device(res.W, quad.C), b=on_device(res.b, quad.C))


def _solve_sparsity(quad, sparsity, penalty, l1_ratio, W0, tol, max_iter, solver) -> Result:
    start = time.perf_counter()
    hi = _lam_max(quad, penalty, l1_ratio)
    if hi == 0.0:
        raise ParameterError("lam_max is 0 (X^T Y = 0 after centering): every lam gives W = 0")
    first = [W0]

    def solve(t, warm):
        W_start = start_from(warm.W, quad.C) if warm is not None else first[0]  # zeros are counted on the host
        return result_on_host(_solve(quad, t, penalty, l1_ratio, W_start, tol, max_iter, solver))

    res, lam, trace = bisect_sparsity(
        solve, sparsity, 1e-6 * hi, hi, count_tol=quad.n_outputs, at_least=True, max_solves=60
    )
    k = int(np.ceil(sparsity * res.W.size - 1e-9))
    zeros = int(res.W.size - np.count_nonzero(res.W))
    if abs(zeros - k) > quad.n_outputs:
        warnings.warn(
            f"sparsity target {sparsity} (k={k} zeros) not met within {quad.n_outputs} weights: "
            f"achieved {zeros} zeros at lam={lam:.4g}",
            ConvergenceWarning,
            stacklevel=3,
        )
    info = {**res.info, "target_sparsity": sparsity, "n_solves": len(trace), "path": trace}
    return replace(res, info=info, time=time.perf_counter() - start)
