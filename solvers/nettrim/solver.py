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

import numpy as np

from . import kernels as K
from ..base.errors import ConvergenceWarning, InfeasibleError, ParameterError, ShapeError
from ..base.path import bisect_sparsity
from ..base.result import Result
from ..base.validation import check_array, check_choice, check_scalar, check_sparsity, check_weights, check_xy, exactly_one

_STATUS = {0: "optimal", 1: "max_iter", 2: "infeasible"}

#: initial soft-threshold level ``1 / (s rho)`` in units of the weights' root-mean-square
#: (on the MNIST reference layer 3 to 15 work; 10 took the fewest iterations)
RHO_SCALE = 10.0


def nettrim(X, Y, *, eps=None, sparsity=None, relu=True, intercept=True, V=None, eps_mode="layer",
            warm_start=None, rho=None, tol=1e-4, max_iter=5000, alpha=1.8, check_every=10, penalty_ratio=None) -> Result:
    """Prune a layer by Net-Trim: ``min ||W||_1`` subject to staying ``eps``-close to ``Y``.

    Solves ``min_{W,b} ||W||_1`` s.t. ``||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F``
    and ``(X W + 1 b^T)_{Omega^c} <= V_{Omega^c}`` with ``Omega = {Y > 0}``
    (``relu=True``), or ``||X W + 1 b^T - Y||_F <= eps ||Y||_F`` (``relu=False``).

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
        Layer inputs.
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
    X, Y = check_xy(X, Y)
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
    if V is not None and not relu:
        raise ParameterError("V (upper bounds on Omega^c) applies only to relu=True")
    prob = _Problem(X, Y, relu=relu, intercept=intercept, V=V, eps_mode=eps_mode)
    opts = dict(rho=rho, tol=tol, max_iter=max_iter, alpha=alpha, check_every=check_every, s=penalty_ratio)
    if eps is not None:
        eps = check_scalar(eps, "eps", low=0.0)
        res = prob.solve(eps, warm_start, **opts)
        return replace(res, time=time.perf_counter() - t0)
    sparsity = check_sparsity(sparsity)
    res, eps_found, trace = _solve_sparsity(prob, sparsity, warm_start, opts)
    info = dict(res.info, sparsity_target=sparsity, eps_trace=trace)
    return replace(res, time=time.perf_counter() - t0, info=info)


class _Problem:
    """A validated, scaled and factorized Net-Trim instance (reused across eps values)."""

    def __init__(self, X, Y, *, relu, intercept, V, eps_mode):
        P, N = X.shape
        M = Y.shape[1]
        dt = X.dtype
        self.dtype = dt
        self.N, self.M, self.intercept, self.relu = N, M, bool(intercept), bool(relu)
        self.mode = K.NEURON if eps_mode == "neuron" else K.LAYER
        # inputs that are zero on every sample get zero weights at the optimum: leave them out
        used = np.flatnonzero(np.any(X != 0, axis=0))
        self.used = used if used.size else np.arange(1)
        self.n = len(self.used)
        Xu = X[:, self.used]
        Xa = np.hstack([Xu, np.ones((P, 1), dt)]) if intercept else np.ascontiguousarray(Xu)
        self.wide = P < Xa.shape[1]
        X64 = Xa.astype(np.float64, copy=False)
        lam, self.E = np.linalg.eigh(X64 @ X64.T if self.wide else X64.T @ X64)
        self.c = float(np.sqrt(lam[-1])) if lam[-1] > 0 else 1.0
        self.lam = np.maximum(lam / self.c**2, 0.0)
        self.keep = np.sqrt(self.lam) > max(Xa.shape) * np.finfo(dt).eps
        self.default_ratio = float(np.median(self.lam[self.keep]))
        self._inverse = {}
        self.X = np.ascontiguousarray(Xa / dt.type(self.c))
        self.Y = np.ascontiguousarray(Y / dt.type(self.c))
        if relu:
            self.omega = Y > 0
            if V is None:
                Vs = np.zeros_like(Y)
            else:
                Vs = check_array(np.broadcast_to(np.asarray(V), Y.shape) if np.ndim(V) < 2 else V,
                                 "V", dtype=dt)
                if Vs.shape != Y.shape:
                    raise ShapeError(f"V must have the shape of Y {Y.shape}, got {Vs.shape}")
                Vs = Vs / dt.type(self.c)
            self.V = np.ascontiguousarray(Vs)
        else:
            self.omega = np.ones(Y.shape, dtype=np.bool_)
            self.V = np.zeros_like(self.Y)
        ynorm = np.sqrt(np.sum(Y.astype(np.float64) ** 2, axis=0))  # per column, unscaled
        self.ynorm_total = float(np.sqrt(np.sum(ynorm**2)))
        # A ReLU column with no active sample only asks X w + b <= V: w = 0 is optimal (objective 0)
        # when feasible, with b = min V; solving it exactly keeps these degenerate columns (dead
        # neurons, whose optimal b is not unique) out of the ADMM, where they converge slowly.
        trivial = np.zeros(M, dtype=np.bool_)
        if relu:
            trivial = ~self.omega.any(axis=0) & (self.intercept | (self.V >= 0).all(axis=0))
        self.M_full = M
        self.cols = np.flatnonzero(~trivial)
        self.b_trivial = self.V[:, trivial].min(axis=0) * self.c if self.intercept else None
        self.trivial = trivial
        self.M = len(self.cols)
        if trivial.any():
            self.Y, self.V, self.omega = (np.ascontiguousarray(a[:, self.cols]) for a in (self.Y, self.V, self.omega))
        self.ynorm = ynorm[self.cols]

    def inverse(self, s):
        """The W-step operator ``(X^T X + s I)^{-1}`` (tall) or ``(X X^T + s I)^{-1}`` (wide), cached."""
        if s not in self._inverse:
            self._inverse[s] = np.ascontiguousarray(((self.E / (self.lam + s)) @ self.E.T).astype(self.dtype))
        return self._inverse[s]

    def radii(self, eps):
        """Absolute ball radii in the scaled problem."""
        if self.mode == K.NEURON:
            return eps * self.ynorm / self.c
        return np.array([eps * self.ynorm_total / self.c])

    def ls_residual(self):
        """Least-squares residual norms (per ball) of the linear program, scaled."""
        Yd = self.Y.astype(np.float64)
        Ek = self.E[:, self.keep]
        if self.wide:  # E spans the range of X
            proj = Ek.T @ Yd
        else:  # coordinates of the projection in the left singular basis
            proj = (Ek.T @ (self.X.T.astype(np.float64) @ Yd)) / np.sqrt(self.lam[self.keep])[:, None]
        col = np.maximum(np.sum(Yd**2, axis=0) - np.sum(proj**2, axis=0), 0.0)
        return np.sqrt(col) if self.mode == K.NEURON else np.sqrt([col.sum()])

    def min_eps(self):
        """Smallest feasible relative eps of the linear program (0 for ReLU: unknown)."""
        if self.relu:
            return 0.0
        res = self.ls_residual() * self.c
        if self.mode == K.NEURON:
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.where(self.ynorm > 0, res / np.maximum(self.ynorm, 1e-300), 0.0)
            return float(rel.max())
        return float(res[0] / self.ynorm_total) if self.ynorm_total > 0 else 0.0

    def dual_tol(self, tol, s):
        """Tolerance of the relative dual residual: ``tol``, or the rounding level of the W-step.

        ``(X^T X + s I)^{-1}`` has condition number up to ``(1 + s) / s``, so a
        W-step in float32 carries relative errors up to ``eps32 (1 + s) / s``,
        which the dual residual cannot go below; it is met at four times that.
        """
        return max(tol, 4.0 * float(np.finfo(self.dtype).eps) * (1.0 + s) / s)

    def zero_solution(self, eps_abs):
        """The intercept that makes ``W = 0`` feasible (then ``W = 0`` is optimal), or None.

        Per column the best intercept is the mean of ``Y`` on Omega capped by
        the smallest bound ``V`` off it (0 without intercept); ``W = 0`` is
        feasible when the remaining residual fits in the ball(s).
        """
        Yd, om = self.Y.astype(np.float64), self.omega
        vmin = np.where(om, np.inf, self.V.astype(np.float64)).min(axis=0) if self.M else np.zeros(0)
        if self.intercept:
            cnt = om.sum(axis=0)
            ybar = np.where(cnt > 0, (Yd * om).sum(axis=0) / np.maximum(cnt, 1), np.inf)
            b = np.minimum(ybar, vmin)
        else:
            if np.any(vmin < 0):
                return None
            b = np.zeros(self.M)
        dist2 = (((Yd - b) ** 2) * om).sum(axis=0)
        slack = 1.0 + 4.0 * float(np.finfo(self.dtype).eps)  # the radii and Y are rounded separately
        dist = np.sqrt(dist2) if self.mode == K.NEURON else np.sqrt([dist2.sum()])
        fits = dist <= eps_abs * slack
        return b.astype(self.dtype) if np.all(fits) else None

    def ridge(self, F, s, Z):
        """``argmin ||X W - Z||^2 + s ||W||^2``: the first W-step from ``Z``."""
        if self.wide:
            return self.X.T @ (F @ Z)
        return F @ (self.X.T @ Z)

    def initial_state(self, warm_start, eps_abs, F, s):
        """ADMM state ``(W, Z, Q, U1, U2)`` and penalty (None: choose from the data).

        Cold start: ``Z = Proj_C(Y)``, everything else 0. From weights: ``W = Q``
        the given weights and ``Z = Proj_C(X W)``; from a Result: also its
        duals and penalty.
        """
        dt, Na, M, Mf, cols = self.dtype, self.X.shape[1], self.M, self.M_full, self.cols
        P = self.X.shape[0]
        W = np.zeros((Na, M), dt)
        U1, U2 = np.zeros((P, M), dt), np.zeros((Na, M), dt)
        Z = np.empty((P, M), dt)
        rho = None
        if isinstance(warm_start, Result):
            W[: self.n] = check_weights(warm_start.W, self.N, Mf, "warm_start.W", dtype=dt)[np.ix_(self.used, cols)]
            if self.intercept and warm_start.b is not None:
                W[self.n] = warm_start.b[cols]
            duals = warm_start.info.get("duals")
            rho = warm_start.info.get("rho")
            rows = self._rows()
            if duals is not None and rho is not None and duals[0].shape == (P, Mf) and \
                    duals[1].shape == (self.N + self.intercept, Mf):
                U1[:] = duals[0][:, cols] * self.c / rho
                U2[:] = duals[1][np.ix_(rows, cols)] / (rho * s)
            else:
                rho = None
        elif isinstance(warm_start, tuple):
            if len(warm_start) != 2:
                raise ShapeError(f"warm_start as a tuple must be (W, b), got {len(warm_start)} items")
            W[: self.n] = check_weights(warm_start[0], self.N, Mf, "warm_start W", dtype=dt)[np.ix_(self.used, cols)]
            if self.intercept and warm_start[1] is not None:
                b0 = check_array(warm_start[1], "warm_start b", ndim=1, dtype=dt)
                if b0.shape != (Mf,):
                    raise ShapeError(f"warm_start b must have shape ({Mf},), got {b0.shape}")
                W[self.n] = b0[cols]
        elif warm_start is not None:
            W[: self.n] = check_weights(warm_start, self.N, Mf, "warm_start", dtype=dt)[np.ix_(self.used, cols)]
        if warm_start is None:
            K.project(self.Y, self.Y, self.V, self.omega, eps_abs, self.mode, Z)
        else:
            K.project(np.ascontiguousarray(self.X @ W), self.Y, self.V, self.omega, eps_abs, self.mode, Z)
        if rho is None:
            warm_w = warm_start is not None and np.any(W[: self.n])
            rho = self.initial_rho(W if warm_w else self.ridge(F, s, Z), s)
        return W, Z, W.copy(), U1, U2, rho

    def initial_rho(self, W, s):
        """Penalty from the weights' scale: the threshold ``1 / (s rho)`` starts at
        ``RHO_SCALE`` times the root-mean-square of the penalized weights."""
        rms = float(np.sqrt(np.mean(W[: self.n].astype(np.float64) ** 2))) if W.size else 0.0
        return 1.0 / (s * RHO_SCALE * rms) if rms > 0 else 1.0

    def solve(self, eps, warm_start, *, rho, tol, max_iter, alpha, check_every, s):
        t0 = time.perf_counter()
        eps_abs = self.radii(eps)
        if not self.relu:
            ls = self.ls_residual()
            if np.any(ls > eps_abs * (1 + 1e-9) + 1e-300):
                raise InfeasibleError(
                    f"eps={eps:g} is below the least-squares residual: no (W, b) fits Y that closely; "
                    f"the smallest feasible eps is {self.min_eps():.6g}"
                )
        s = self.default_ratio if s is None else s
        F = self.inverse(s)
        W, Z, Q, U1, U2, rho_w = self.initial_state(warm_start, eps_abs, F, s)
        rho0 = rho if rho is not None else rho_w
        b_zero = self.zero_solution(eps_abs)
        if b_zero is not None:  # W = 0 is feasible, hence optimal
            Q[:] = 0
            if self.intercept:
                Q[self.n] = b_zero
            it, code, rho_end, hist = 0, 0, rho0, np.zeros((0, 4))
        else:
            it, code, rho_end, hist = K.admm(
                self.X, F, self.wide, self.Y, self.V, self.omega, eps_abs, self.mode, self.n,
                W, Z, Q, U1, U2, float(rho0), s, alpha, tol, self.dual_tol(tol, s), max_iter, check_every,
                max_iter // 2, 1e-4,
            )
        status = _STATUS[code]
        Wout = np.zeros((self.N, self.M_full), self.dtype)
        Wout[np.ix_(self.used, self.cols)] = Q[: self.n]
        b = None
        if self.intercept:
            b = np.empty(self.M_full, self.dtype)
            b[self.cols] = Q[self.n]
            b[self.trivial] = self.b_trivial
        R = self.X @ Q
        exc, worst = K.violation(R, self.Y, self.V, self.omega, eps_abs, self.mode)
        scale = self.ynorm_total / self.c if self.ynorm_total > 0 else 1.0
        viol = float(np.sqrt(np.sum(exc**2)) / scale)
        hviol = float(worst / scale) if self.relu else 0.0
        if status == "max_iter":
            warnings.warn(
                f"nettrim stopped at max_iter={max_iter} before reaching tol={tol:g} "
                f"(violation {max(viol, hviol):.2e})", ConvergenceWarning, stacklevel=3)
        elif status == "infeasible":
            warnings.warn("nettrim: the constraints admit no solution (primal infeasibility certificate)",
                          ConvergenceWarning, stacklevel=3)
        info = dict(
            eps=float(eps), eps_abs=eps_abs * self.c, violation=viol, halfspace_violation=hviol,
            sparsity=float(np.mean(Wout == 0)), rho=float(rho_end), rho_initial=float(rho0), s=s,
            rho_trace=hist[:, 2].copy(), duals=self._full_duals(rho_end * U1 / self.c, rho_end * s * U2), scale=self.c,
        )
        history = dict(primal_residual=hist[:, 0].copy(), dual_residual=hist[:, 1].copy(),
                       violation=hist[:, 3].copy())
        return Result(W=Wout, b=b, status=status, objective=float(np.abs(Wout).astype(np.float64).sum()),
                      iterations=int(it), time=time.perf_counter() - t0, history=history, info=info)


    def _rows(self):
        """Rows of the full ``(N [+ 1], M)`` weights that the scaled problem keeps."""
        return np.append(self.used, self.N) if self.intercept else self.used

    def _full_duals(self, y1, y2):
        """Dual variables padded with zeros for the trivial columns and unused inputs."""
        full1 = np.zeros((y1.shape[0], self.M_full), y1.dtype)
        full1[:, self.cols] = y1
        full2 = np.zeros((self.N + self.intercept, self.M_full), y2.dtype)
        full2[np.ix_(self._rows(), self.cols)] = y2
        return full1, full2


def _solve_sparsity(prob, sparsity, warm_start, opts):
    """Bisection on eps (warm-started) for at least the target fraction of zeros."""

    def solve(t, warm):
        if warm is not None and warm.status != "optimal":
            warm = None
        res = prob.solve(t, warm if warm is not None else warm_start, **opts)
        if res.status == "infeasible":  # no feasible W at this eps: count it as fully dense
            res = replace(res, W=np.ones_like(res.W))
        return res

    lo = max(prob.min_eps() * (1 + 1e-6), 1e-4)
    size = prob.N * prob.M_full
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res, t, trace = bisect_sparsity(solve, sparsity, lo, 1.0, count_tol=max(1, size // 200), max_solves=30)
    return res, t, trace
