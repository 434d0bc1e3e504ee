"""Net-Trim: the convex program that prunes one ReLU (or linear) layer.

ReLU layer, ``Omega = {Y > 0}``::

    min_{W, b} ||W||_1  s.t.  ||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F,
                              (X W + 1 b^T)_{Omega^c} <= V_{Omega^c}

(``V = 0`` unless given); linear layer: ``||X W + 1 b^T - Y||_F <= eps ||Y||_F``.
With ``eps_mode="neuron"`` there is one ball per output column, of radius
``eps ||Y_m||``, and the program separates by column.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from functools import partial

import numpy as np

from ..base.backend import is_foreign, on_device, result_on_host, to_host
from ..base.errors import ConvergenceWarning, ParameterError
from ..base.interrupt import interruptible
from ..base.path import bisect_sparsity
from ..base.result import Result
from ..base.validation import check_bool, check_choice, check_scalar, check_sparsity, check_xy, exactly_one
from .kernels import admm
from .problem import _Problem
from .xp_admm import admm_on_device

_STATUS = {0: "optimal", 1: "max_iter", 2: "infeasible"}


def nettrim(X, Y, *, eps=None, sparsity=None, relu=True, intercept=True, V=None, eps_mode="layer",
            warm_start=None, rho=None, tol=1e-4, max_iter=5000, alpha=1.8, check_every=10, penalty_ratio=None) -> Result:
    """Prune a layer by Net-Trim: ``min ||W||_1`` subject to staying ``eps``-close to ``Y``.

    Solves ``min_{W,b} ||W||_1`` s.t. ``||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F``
    and ``(X W + 1 b^T)_{Omega^c} <= V_{Omega^c}`` with ``Omega = {Y > 0}``
    (``relu=True``), or ``||X W + 1 b^T - Y||_F <= eps ||Y||_F`` (``relu=False``).

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
        Layer inputs. For arrays of another array-API library (e.g. torch
        tensors on a GPU) the setup (reductions, eigendecomposition, inverse)
        runs on the host and the ADMM iterations on the arrays' device, in
        their dtype; ``W``, ``b`` come back as such arrays (``info`` in numpy).
    Y : array, shape (n_samples, n_outputs)
        Targets: the dense layer's post-ReLU outputs (``relu=True``) or its
        linear outputs (``relu=False``).
    eps : float >= 0, optional
        Relative radius of the fidelity ball (give exactly one of eps, sparsity).
    sparsity : float in [0, 1), optional
        Target fraction of zero weights; ``eps`` is found by bisection and
        the result has at least this fraction of zeros.
    relu : bool
        ReLU program (ball on Omega, half-spaces on its complement) or linear.
    intercept : bool
        Fit an unpenalized bias ``b``.
    V : array (n_samples, n_outputs), optional
        Upper bounds on ``Omega^c`` (``relu=True`` only); 0 when omitted.
    eps_mode : {"layer", "neuron"}
        One ball for the whole layer, radius ``eps ||Y||_F``, or one per
        column, radius ``eps ||Y_m||``.
    warm_start : Result, array (n_features, n_outputs) or tuple (W, b), optional
        A previous solve of a problem with the same ``X`` (weights, intercept,
        duals and penalty are reused), or initial weights (and intercept),
        e.g. the dense layer's thresholded weights.
    rho : float > 0, optional
        Initial ADMM penalty (on the scaled problem); adapted by residual
        balancing. Default: from the scale of the weights (see Notes).
    tol : float
        Relative tolerance of the primal and dual residuals and of the
        constraint violation of the returned sparse ``W``. ``tol=1e-3`` gives
        a feasible ``W`` (to 1e-3 relative) whose objective is typically within
        1e-4 of the optimum; the float32 dual residual stops at the rounding
        level of the float32 W-step when that is above ``tol``.
    max_iter : int
        Iteration limit.
    alpha : float in (0, 2)
        Over-relaxation parameter.
    check_every : int
        Iterations between the (more expensive) convergence checks.
    penalty_ratio : float > 0, optional
        Ratio ``s`` of the penalty on ``Q = W`` to the penalty on ``Z = X W``
        (X scaled to unit spectral norm); default: the median squared
        singular value of the scaled ``X``, which balances the two splits
        on ill-conditioned data such as image pixels.

    Returns
    -------
    Result
        ``W`` exactly sparse (the soft-thresholded split), ``objective`` its
        l1 norm; ``info``: ``eps``, ``eps_abs`` (ball radii), ``violation``
        (relative ball excess ``max(||r_Omega|| - eps_abs, 0) / ||Y||_F``),
        ``halfspace_violation`` (``max (X W + b - V)_{Omega^c} / ||Y||_F``),
        ``sparsity``, ``rho`` (final), ``rho_initial``, ``s``, ``duals``
        (``(P, M)`` and ``(N [+ 1], M)``), ``scale``.

    Raises
    ------
    InfeasibleError
        ``relu=False`` and ``eps`` is below the least-squares residual.
    ParameterError
        ``relu=True`` with negative entries in ``Y`` (not post-ReLU outputs).

    Notes
    -----
    Exact reductions first: inputs that are zero on every sample get zero
    weights; a ReLU column with no active sample (a dead neuron) gets
    ``w = 0``, ``b = min V`` (when feasible); if ``W = 0`` with the best
    intercept satisfies the constraints it is returned at once.

    The data are scaled by ``c = ||[X, 1]||_2``; one eigendecomposition of
    ``X^T X`` (or ``X X^T`` when there are fewer samples than inputs) gives
    ``c``, the default ``s`` and the inverse ``(X^T X + s I)^{-1}`` (or its
    Woodbury form), computed once. ADMM on the splits ``Z = X W`` (penalty
    ``rho``) and ``Q = W`` (penalty ``s rho``), with over-relaxation
    ``alpha``; cold start ``Z = Proj_C(Y)``, everything else 0, and
    ``rho = 1 / (s * RHO_SCALE * rms(W_1))`` with ``W_1`` the first W-step
    (a ridge fit of ``Y``), or the warm weights; iteration k:

    - ``W = argmin ||X W - Z + U1||^2 + s ||W - Q + U2||^2`` (two products
      with ``X`` and one with the stored inverse),
    - ``Z = Proj_C(alpha X W + (1 - alpha) Z + U1)`` (Frobenius ball on
      Omega, clip at ``V`` on its complement),
    - ``Q = S_{1/(s rho)}(alpha W + (1 - alpha) Q + U2)`` (intercept row not shrunk),
    - ``U1 += ... - Z``, ``U2 += ... - Q``.

    Every ``check_every`` iterations the exact dual residual
    ``rho ||X^T dZ + s dQ||`` (relative to ``max(s rho ||U2||, 1)``), the primal
    residual ``||[X W - Z; W - Q]||`` (relative to the larger of the stacked
    norms) and the constraint violation of ``Q`` are compared with ``tol``;
    ``rho`` is rebalanced (no refactorization, the duals are rescaled);
    primal infeasibility is detected from the dual increment ``d = dU1`` with
    ``X^T d ~ 0`` and ``sup_{Z in C} <d, Z> < 0`` (a separating certificate).
    """
    t0 = time.perf_counter()
    ref = X if is_foreign(X) else None
    X, Y = check_xy(to_host(X), to_host(Y))
    V, warm_start = to_host(V), _host_warm(warm_start)
    check_choice(eps_mode, "eps_mode", ("layer", "neuron"))
    exactly_one("eps", eps, "sparsity", sparsity)
    tol = check_scalar(tol, "tol", low=0.0, low_open=True, high=1.0)
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    check_every = check_scalar(check_every, "check_every", low=1, integer=True)
    alpha = check_scalar(alpha, "alpha", low=0.0, high=2.0, low_open=True, high_open=True)
    if rho is not None:
        rho = check_scalar(rho, "rho", low=0.0, low_open=True)
    if penalty_ratio is not None:
        penalty_ratio = check_scalar(penalty_ratio, "penalty_ratio", low=0.0, low_open=True)
    relu, intercept = check_bool(relu, "relu"), check_bool(intercept, "intercept")
    if V is not None and not relu:
        raise ParameterError("V (upper bounds on Omega^c) applies only to relu=True")
    if relu and np.any(Y < 0):
        raise ParameterError(
            "Y has negative entries, but relu=True expects post-ReLU outputs (>= 0); "
            "pass relu=False to match pre-activations"
        )
    prob = _Problem(X, Y, relu=relu, intercept=intercept, V=V, eps_mode=eps_mode)
    opts = dict(rho=rho, tol=tol, max_iter=max_iter, alpha=alpha, check_every=check_every, s=penalty_ratio,
                ref=ref)
    if eps is not None:
        eps = check_scalar(eps, "eps", low=0.0)
        res = _solve_eps(prob, eps, warm_start, **opts)
    else:
        sparsity = check_sparsity(sparsity)
        res, eps_found, trace = _solve_sparsity(prob, sparsity, warm_start, opts)
        res = replace(res, info=dict(res.info, sparsity_target=sparsity, eps_trace=trace))
    if ref is not None:
        res = replace(res, W=on_device(res.W, ref), b=on_device(res.b, ref))
    return replace(res, time=time.perf_counter() - t0)


def _host_warm(warm_start):
    """A warm start (Result, weights or ``(W, b)``) with numpy arrays on the host."""
    if isinstance(warm_start, Result):
        return result_on_host(warm_start)
    if isinstance(warm_start, tuple):
        return tuple(to_host(a) for a in warm_start)
    return to_host(warm_start)


def _solve_eps(prob: _Problem, eps, warm_start, *, rho, tol, max_iter, alpha, check_every, s, ref) -> Result:
    """Net-Trim at the relative radius ``eps``: the ADMM from ``warm_start``, or ``W = 0`` when that is feasible;
    the iterations run on the device of ``ref`` (a foreign array) unless it is None."""
    t0 = time.perf_counter()
    eps_abs = prob.radii(eps)
    prob.check_eps(eps, eps_abs)
    s = prob.default_ratio if s is None else s
    F = prob.inverse(s)
    W, Z, Q, U1, U2, rho_w = prob.initial_state(warm_start, eps_abs, F, s)
    rho0 = rho if rho is not None else rho_w
    b_zero = prob.zero_solution(eps_abs)
    if b_zero is not None:  # W = 0 is feasible, hence optimal
        Q[:] = 0
        if prob.intercept:
            Q[prob.n] = b_zero
        it, code, rho_end, hist = 0, 0, rho0, np.zeros((0, 4))
    else:
        with interruptible():
            it, code, rho_end, hist = (admm if ref is None else partial(admm_on_device, ref))(
                prob.X, F, prob.wide, prob.Y, prob.V, prob.omega, eps_abs, prob.mode, prob.n,
                W, Z, Q, U1, U2, float(rho0), s, alpha, tol, prob.dual_tol(tol, s), max_iter, check_every,
                max_iter // 2, 1e-4,
            )
    status = _STATUS[code]
    Wout, b = prob.full_weights(Q)
    viol, hviol = prob.violations(Q, eps_abs)
    if status == "max_iter":
        warnings.warn(
            f"nettrim stopped at max_iter={max_iter} before reaching tol={tol:g} "
            f"(violation {max(viol, hviol):.2e})", ConvergenceWarning, stacklevel=3)
    elif status == "infeasible":
        warnings.warn("nettrim: the constraints admit no solution (primal infeasibility certificate)",
                      ConvergenceWarning, stacklevel=3)
    info = dict(
        eps=float(eps), eps_abs=eps_abs * prob.c, violation=viol, halfspace_violation=hviol,
        sparsity=float(np.mean(Wout == 0)), rho=float(rho_end), rho_initial=float(rho0), s=s,
        rho_trace=hist[:, 2].copy(), duals=prob.full_duals(rho_end * U1 / prob.c, rho_end * s * U2), scale=prob.c,
    )
    history = dict(primal_residual=hist[:, 0].copy(), dual_residual=hist[:, 1].copy(),
                   violation=hist[:, 3].copy())
    return Result(W=Wout, b=b, status=status, objective=float(np.abs(Wout).astype(np.float64).sum()),
                  iterations=int(it), time=time.perf_counter() - t0, history=history, info=info)


def _solve_sparsity(prob, sparsity, warm_start, opts):
    """Bisection on eps (warm-started) for at least the target fraction of zeros."""

    def solve(t, warm):
        if warm is not None and warm.status != "optimal":
            warm = None
        res = _solve_eps(prob, t, warm if warm is not None else warm_start, **opts)
        if res.status == "infeasible":  # no feasible W at this eps: count it as fully dense
            res = replace(res, W=np.ones_like(res.W))
        return res

    lo = max(prob.min_eps() * (1 + 1e-6), 1e-4)
    size = prob.N * prob.M_full
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res, t, trace = bisect_sparsity(solve, sparsity, lo, 1.0, count_tol=max(1, size // 200), max_solves=30)
    if res.status != "optimal":  # the solves along the path are quiet; the one returned is not
        violation = max(res.info["violation"], res.info["halfspace_violation"])
        warnings.warn(f"nettrim (sparsity={sparsity:g}): the returned solve at eps={t:.3g} ended with status "
                      f"{res.status!r} (violation {violation:.2e}); raise max_iter or tol",
                      ConvergenceWarning, stacklevel=3)
    return res, t, trace
