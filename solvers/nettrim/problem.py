"""One Net-Trim instance, validated, reduced, scaled and factorized once (:class:`_Problem`).

Exact reductions: inputs that are zero on every sample get zero weights; a
ReLU column with no active sample (a dead neuron) gets ``w = 0``,
``b = min V`` when that is feasible. The data are scaled by
``c = ||[X, 1]||_2``; one eigendecomposition of ``X^T X`` (tall) or ``X X^T``
(wide) gives ``c``, the default penalty ratio ``s`` (the median nonzero
eigenvalue of the scaled Gram matrix) and, for every ``s``, the W-step
inverse ``(X^T X + s I)^{-1}`` or ``(X X^T + s I)^{-1}`` (:mod:`.steps`).
The instance is reused across ``eps`` values (the sparsity bisection).
"""
from __future__ import annotations

import numpy as np

from ..base.errors import InfeasibleError, ShapeError
from ..base.result import Result
from ..base.validation import check_array, check_broadcastable, check_weights
from .steps import LAYER, NEURON, project, violation

#: initial soft-threshold level ``1 / (s rho)`` in units of the weights' root-mean-square
#: (on the MNIST reference layer 3 to 15 work; 10 took the fewest iterations)
RHO_SCALE = 10.0


class _Problem:
    """A validated, scaled and factorized Net-Trim instance (reused across eps values)."""

    def __init__(self, X, Y, *, relu, intercept, V, eps_mode):
        self.dtype = X.dtype
        self.N, self.intercept, self.relu = X.shape[1], bool(intercept), bool(relu)
        self.mode = NEURON if eps_mode == "neuron" else LAYER
        self._factorize(X)
        self._scale_targets(Y, V)
        self._split_trivial_columns(Y)

    def _factorize(self, X):
        """Scaled inputs ``[X_used, 1] / c`` and the eigendecomposition of their Gram matrix."""
        P, dt = X.shape[0], self.dtype
        # inputs that are zero on every sample get zero weights at the optimum: leave them out
        used = np.flatnonzero(np.any(X != 0, axis=0))
        self.used = used if used.size else np.arange(1)
        self.n = len(self.used)
        Xu = X[:, self.used]
        Xa = np.hstack([Xu, np.ones((P, 1), dt)]) if self.intercept else np.ascontiguousarray(Xu)
        self.wide = P < Xa.shape[1]
        X64 = Xa.astype(np.float64, copy=False)
        lam, self.E = np.linalg.eigh(X64 @ X64.T if self.wide else X64.T @ X64)
        self.c = float(np.sqrt(lam[-1])) if lam[-1] > 0 else 1.0
        self.lam = np.maximum(lam / self.c**2, 0.0)
        self.keep = np.sqrt(self.lam) > max(Xa.shape) * np.finfo(dt).eps
        self.default_ratio = float(np.median(self.lam[self.keep]))
        self._inverse = {}
        self.X = np.ascontiguousarray(Xa / dt.type(self.c))

    def _scale_targets(self, Y, V):
        """Scaled targets, the set ``Omega`` of the ball and the scaled bounds ``V`` off it."""
        dt = self.dtype
        self.Y = np.ascontiguousarray(Y / dt.type(self.c))
        if not self.relu:
            self.omega = np.ones(Y.shape, dtype=np.bool_)
            self.V = np.zeros_like(self.Y)
            return
        self.omega = Y > 0
        if V is None:
            Vs = np.zeros_like(Y)
        else:
            Vs = check_broadcastable(V, "V", Y.shape, dtype=dt)
            Vs = Vs / dt.type(self.c)
        self.V = np.ascontiguousarray(Vs)

    def _split_trivial_columns(self, Y):
        """Solve the dead ReLU columns exactly and keep the others for the ADMM.

        A ReLU column with no active sample only asks ``X w + b <= V``: ``w = 0``
        is optimal (objective 0) when feasible, with ``b = min V``; solving it
        exactly keeps these degenerate columns (dead neurons, whose optimal
        ``b`` is not unique) out of the ADMM, where they converge slowly.
        """
        M = Y.shape[1]
        ynorm = np.sqrt(np.sum(Y.astype(np.float64) ** 2, axis=0))  # per column, unscaled
        self.ynorm_total = float(np.sqrt(np.sum(ynorm**2)))
        trivial = np.zeros(M, dtype=np.bool_)
        if self.relu:
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
        if self.mode == NEURON:
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
        return np.sqrt(col) if self.mode == NEURON else np.sqrt([col.sum()])

    def min_eps(self):
        """Smallest feasible relative eps of the linear program (0 for ReLU: unknown)."""
        if self.relu:
            return 0.0
        res = self.ls_residual() * self.c
        if self.mode == NEURON:
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
        dist = np.sqrt(dist2) if self.mode == NEURON else np.sqrt([dist2.sum()])
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
        dt, Na, M, P = self.dtype, self.X.shape[1], self.M, self.X.shape[0]
        W = np.zeros((Na, M), dt)
        U1, U2 = np.zeros((P, M), dt), np.zeros((Na, M), dt)
        rho = self._warm_start(warm_start, W, U1, U2, s)
        Z = np.empty((P, M), dt)
        start = self.Y if warm_start is None else np.ascontiguousarray(self.X @ W)
        project(start, self.Y, self.V, self.omega, eps_abs, self.mode, Z)
        if rho is None:
            warm_w = warm_start is not None and np.any(W[: self.n])
            rho = self.initial_rho(W if warm_w else self.ridge(F, s, Z), s)
        return W, Z, W.copy(), U1, U2, rho

    def _warm_start(self, warm_start, W, U1, U2, s):
        """Write the warm weights (intercept last) into ``W`` and, from a Result with
        matching duals, the scaled duals into ``U1``, ``U2``; return its penalty or None."""
        if isinstance(warm_start, Result):
            return self._warm_result(warm_start, W, U1, U2, s)
        if isinstance(warm_start, tuple):
            if len(warm_start) != 2:
                raise ShapeError(f"warm_start as a tuple must be (W, b), got {len(warm_start)} items")
            W[: self.n] = self._weights(warm_start[0], "warm_start W")
            if self.intercept and warm_start[1] is not None:
                b0 = check_array(warm_start[1], "warm_start b", ndim=1, dtype=self.dtype)
                if b0.shape != (self.M_full,):
                    raise ShapeError(f"warm_start b must have shape ({self.M_full},), got {b0.shape}")
                W[self.n] = b0[self.cols]
        elif warm_start is not None:
            W[: self.n] = self._weights(warm_start, "warm_start")
        return None

    def _warm_result(self, res, W, U1, U2, s):
        """:meth:`_warm_start` from a previous Result of this problem."""
        W[: self.n] = self._weights(res.W, "warm_start.W")
        if self.intercept and res.b is not None:
            W[self.n] = res.b[self.cols]
        duals, rho = res.info.get("duals"), res.info.get("rho")
        P, Mf = self.X.shape[0], self.M_full
        if duals is None or rho is None or duals[0].shape != (P, Mf) or \
                duals[1].shape != (self.N + self.intercept, Mf):
            return None
        U1[:] = duals[0][:, self.cols] * self.c / rho
        U2[:] = duals[1][np.ix_(self._rows(), self.cols)] / (rho * s)
        return rho

    def _weights(self, W, name):
        """Full ``(N, M)`` weights validated and reduced to the used inputs and kept columns."""
        return check_weights(W, self.N, self.M_full, name, dtype=self.dtype)[np.ix_(self.used, self.cols)]

    def initial_rho(self, W, s):
        """Penalty from the weights' scale: the threshold ``1 / (s rho)`` starts at
        ``RHO_SCALE`` times the root-mean-square of the penalized weights."""
        rms = float(np.sqrt(np.mean(W[: self.n].astype(np.float64) ** 2))) if W.size else 0.0
        return 1.0 / (s * RHO_SCALE * rms) if rms > 0 else 1.0

    def check_eps(self, eps, eps_abs):
        """Raise InfeasibleError when the linear program's balls cannot hold the least-squares residual."""
        if not self.relu and np.any(self.ls_residual() > eps_abs * (1 + 1e-9) + 1e-300):
            raise InfeasibleError(
                f"eps={eps:g} is below the least-squares residual: no (W, b) fits Y that closely; "
                f"the smallest feasible eps is {self.min_eps():.6g}"
            )

    def full_weights(self, Q):
        """``(W, b)`` of the full layer from the split ``Q`` (trivial columns and unused inputs filled in)."""
        Wout = np.zeros((self.N, self.M_full), self.dtype)
        Wout[np.ix_(self.used, self.cols)] = Q[: self.n]
        b = None
        if self.intercept:
            b = np.empty(self.M_full, self.dtype)
            b[self.cols] = Q[self.n]
            b[self.trivial] = self.b_trivial
        return Wout, b

    def violations(self, Q, eps_abs):
        """Relative ball excess and half-space violation of ``Q`` (see :func:`~.nettrim`)."""
        exc, worst = violation(self.X @ Q, self.Y, self.V, self.omega, eps_abs, self.mode)
        scale = self.ynorm_total / self.c if self.ynorm_total > 0 else 1.0
        viol = float(np.sqrt(np.sum(exc**2)) / scale)
        hviol = float(worst / scale) if self.relu else 0.0
        return viol, hviol

    def _rows(self):
        """Rows of the full ``(N [+ 1], M)`` weights that the scaled problem keeps."""
        return np.append(self.used, self.N) if self.intercept else self.used

    def full_duals(self, y1, y2):
        """Dual variables padded with zeros for the trivial columns and unused inputs."""
        full1 = np.zeros((y1.shape[0], self.M_full), y1.dtype)
        full1[:, self.cols] = y1
        full2 = np.zeros((self.N + self.intercept, self.M_full), y2.dtype)
        full2[np.ix_(self._rows(), self.cols)] = y2
        return full1, full2

