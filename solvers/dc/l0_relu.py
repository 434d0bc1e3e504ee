"""ReLU-aware l0 fitting: the exact post-ReLU loss under a sparsity pattern.

Problem (``Y >= 0``, ``pattern`` and the counting rule as in :func:`~layertrim.solvers.threshold.project`)::

    min_{W in pattern, b}  F(W, b) = (1/2P) ||relu(X W + 1 b^T) - Y||_F^2.

Each entry ``f(z) = (relu(z) - y)^2 = relu(z)^2 - 2 y relu(z) + y^2`` is a
difference of convex functions (``y >= 0``). Two quadratic upper bounds in
``z`` with unit curvature, at the current ``z_k``, give least-squares
surrogates ``(z - t)^2 + c`` that share the Gram matrix ``X^T X``:

- *linear* (``t = y`` where ``y > 0``, ``t = min(z_k, 0)`` where ``y = 0``):
  ``-2 y relu(z) <= -2 y z`` and ``relu(z)^2 <= (z - min(z_k, 0))^2``; it is
  the linear model wherever the target or the prediction is active and the
  hinge, majorized at ``z_k``, elsewhere; tight except where ``y > 0 >= z_k``.
- *tight* (:func:`~.kernels.majorizer_targets`): the convex-concave step,
  ``h = 2 y relu(z)`` linearized at ``z_k``; tight everywhere.

Each round minimizes a surrogate under the pattern by
:func:`~layertrim.solvers.threshold.admm_l0.l0_admm` warm-started at ``W_k``;
a round is accepted only if ``F`` does not rise.
"""
from __future__ import annotations

import inspect
import time
import warnings

import numpy as np

from ..base.errors import ConvergenceWarning, ParameterError
from ..base.patterns import parse_pattern
from ..base.result import Result
from ..base.validation import check_bool, check_scalar, check_weights, check_xy
from ..threshold.admm_l0 import l0_admm
from ..threshold.refit import refit_quadratic
from .kernels import majorizer_targets, relu_misfit
from .support import majorizer_quadratic

__all__ = ["l0_relu", "relu_refit", "relu_loss", "CenteredReluLayer"]

#: l0_admm options a caller may set through ``l0_options``
L0_OPTIONS = frozenset(
    p.name for p in inspect.signature(l0_admm).parameters.values() if p.kind is p.KEYWORD_ONLY
) - {"sparsity", "pattern", "intercept", "W0"}


#: default l0_admm penalty of the support rounds: one run, a local search around ``W_k``
#: (layers 1-2 of the reference MNIST network: the same loss as the three-penalty default at a third of the time)
ROUND_RHO = (0.1,)


def relu_loss(X, Y, W, b) -> float:
    """``(1/2P) ||relu(X W + 1 b^T) - Y||_F^2`` in float64."""
    Z = np.asarray(X, dtype=np.float64) @ np.asarray(W, dtype=np.float64)
    bias = np.zeros(Z.shape[1]) if b is None else np.asarray(b, dtype=np.float64)
    return relu_misfit(Z, bias, np.asarray(Y, dtype=np.float64)) / (2.0 * Z.shape[0])


def linear_targets(Z, b, Y):
    """Targets of the *linear* surrogate at ``Z + 1 b^T``: ``Y`` where ``Y > 0``, else ``min(z, 0)``."""
    return np.where(Y > 0, Y, np.minimum(Z + b, 0.0))


class CenteredReluLayer:
    """float64 inputs centered when ``intercept`` (constant columns exactly 0), their Gram
    matrix ``G = X^T X / P`` formed once, the targets and the exact loss ``F``."""

    def __init__(self, X, Y, intercept):
        Xd = X.astype(np.float64)
        self.x_mean = Xd.mean(axis=0) if intercept else np.zeros(X.shape[1])
        self.X = Xd - self.x_mean
        if intercept and X.shape[0] > 1:
            self.X[:, ~np.any(X != X[:1], axis=0)] = 0.0
        self.Y = Y.astype(np.float64)
        self.G = self.X.T @ self.X / X.shape[0]
        self.intercept = intercept

    def loss(self, W, b):
        """``F(W, b)``, ``b`` in centered coordinates."""
        return relu_misfit(self.X @ W, b, self.Y) / (2.0 * self.X.shape[0])

    def surrogate(self, kind, W, b):
        """The Gram-form least-squares surrogate of ``F`` at ``(W, b)``."""
        Z = self.X @ W
        T = linear_targets(Z, b, self.Y) if kind == "linear" else majorizer_targets(Z, b, self.Y)
        return majorizer_quadratic(self.X, T, self.G, self.intercept)

    def bias(self, q, W):
        """The surrogate's optimal intercept (0 without intercept)."""
        b = q.intercept_for(W)
        return np.zeros(W.shape[1]) if b is None else b


def relu_refit(layer: CenteredReluLayer, mask, W, b, *, max_iter: int, tol: float):
    """Majorize-minimize ``F`` on the fixed support ``mask`` from ``(W, b)``: each step the exact
    least-squares minimizer on ``mask`` of the linear surrogate, or of the tight one where that
    did not lower ``F``, extrapolated along the step while ``F`` falls; stops when ``F`` falls by
    ``<= tol * F(0)``. Returns ``(W, b, F, history, settled)``; ``F`` never rises."""
    F = layer.loss(W, b)
    f_zero = float(np.sum(layer.Y**2)) / (2.0 * layer.X.shape[0])
    history = []
    for _ in range(max_iter):
        for kind in ("linear", "tight"):
            q = layer.surrogate(kind, W, b)
            Wn, _ = refit_quadratic(q, mask)
            bn = layer.bias(q, Wn)
            Fn = layer.loss(Wn, bn)
            if Fn < F:
                break
        if not Fn < F:
            return W, b, F, history, True
        Wn, bn, Fn = _extrapolate(layer, W, b, Wn, bn, Fn)
        gain, (W, b, F) = F - Fn, (Wn, bn, Fn)
        history.append(F)
        if gain <= tol * f_zero:
            return W, b, F, history, True
    return W, b, F, history, False


def _extrapolate(layer: CenteredReluLayer, W, b, Wn, bn, Fn):
    """The best of ``(W, b) + t (Wn - W, bn - b)``, ``t = 1, 2, 4, ...`` while ``F`` falls (same support)."""
    t = 2.0
    while t <= 2.0**6:
        Wt, bt = W + t * (Wn - W), b + t * (bn - b)
        Ft = layer.loss(Wt, bt)
        if not Ft < Fn:
            break
        Wn, bn, Fn, t = Wt, bt, Ft, 2.0 * t
    return Wn, bn, Fn


def l0_relu(X, Y, *, sparsity=None, pattern="unstructured", intercept: bool = True, Y_pre=None, W0=None,
            max_rounds: int = 8, polish_iter: int = 30, tol: float = 1e-6, l0_options=None) -> Result:
    """Sparse ReLU layer: ``min_{W in pattern, b} (1/2P) ||relu(X W + 1 b^T) - Y||_F^2``.

    Parameters
    ----------
    X : array (n_samples, n_features)
        Layer inputs.
    Y : array (n_samples, n_outputs)
        Post-ReLU targets, all ``>= 0``.
    sparsity, pattern
        As in :func:`~layertrim.solvers.threshold.admm_l0.l0_admm`.
    intercept : bool
        Fit an unpenalized bias.
    Y_pre : array (n_samples, n_outputs), optional
        The dense layer's pre-activations: the start is the l0 solution
        ``l0_admm(X, Y_pre, W0=W0)``. Default: ``Y``.
    W0 : array (n_features, n_outputs), optional
        Dense weights the start's support search begins from.
    max_rounds : int
        Limit on the surrogate rounds that may move the support.
    polish_iter : int
        Limit on the fixed-support rounds once the support has settled.
    tol : float
        The loss has settled when a round lowers ``F`` by ``<= tol * F(0)``,
        ``F(0) = ||Y||_F^2 / 2P``.
    l0_options : dict, optional
        Options of ``l0_admm`` for the start and every round (``rho``, ``max_iter``, ``swaps``, ...);
        the rounds run with ``rho=ROUND_RHO`` unless ``rho`` is given.

    Returns
    -------
    Result
        ``objective`` is ``F`` at ``(W, b)``; ``history``: ``objective`` (``F``
        at the start, then after every accepted round, non-increasing),
        ``support_changes`` (entries that entered the support per support
        round), ``surrogate`` (0 linear, 1 tight per support round);
        ``info``: ``loss_start``, ``support_rounds``, ``polish_rounds``,
        ``rejected`` (surrogate solves that would have raised ``F``),
        ``relative_error`` ``||relu(XW + 1b^T) - Y||_F / ||Y||_F``, ``pattern``, ``sparsity``.

    Notes
    -----
    Round ``k`` at ``Z_k = X W_k + 1 b_k^T``: solve the *linear* surrogate
    (module docstring) under the pattern by ``l0_admm`` warm-started at
    ``W_k``; if ``F`` rose, solve the *tight* one instead. ``l0_admm`` starts
    from the refit on the support of ``W_k`` and never ends above it, so the
    tight surrogate (equal to ``F`` at ``W_k``) cannot raise ``F`` beyond
    rounding; a round that raises ``F`` either way is rejected and the
    support search ends. It also ends when the support did not change; then
    exact least squares of the tight surrogate on that support
    (:func:`relu_refit`) runs until the loss settles. ``status`` is
    ``"max_iter"`` (with a ConvergenceWarning) when the polish hit its limit.
    """
    start = time.perf_counter()
    X, Y = check_xy(X, Y)
    if np.any(Y < 0):
        raise ParameterError(f"Y must hold post-ReLU targets (>= 0); it has {int(np.sum(Y < 0))} negative entries")
    intercept = check_bool(intercept, "intercept")
    max_rounds = check_scalar(max_rounds, "max_rounds", low=0, integer=True)
    polish_iter = check_scalar(polish_iter, "polish_iter", low=0, integer=True)
    tol = check_scalar(tol, "tol", low=0.0)
    options = _check_l0_options(l0_options)
    Y_start = Y if Y_pre is None else check_weights(Y_pre, *Y.shape, name="Y_pre", dtype=X.dtype)
    parse_pattern(pattern).check_shape(X.shape[1], Y.shape[1])
    first = l0_admm(X, Y_start, sparsity=sparsity, pattern=pattern, intercept=intercept, W0=W0, **options)
    layer = CenteredReluLayer(X, Y, intercept)
    W = first.W.astype(np.float64)
    b = (np.zeros(Y.shape[1]) if first.b is None else first.b.astype(np.float64)) + layer.x_mean @ W
    F = layer.loss(W, b)
    history = {"objective": [F], "support_changes": [], "surrogate": []}
    rejected, rounds = 0, 0
    solve = dict(sparsity=sparsity, pattern=pattern, intercept=intercept, **{"rho": ROUND_RHO, **options})
    while rounds < max_rounds:
        rounds += 1
        step = _support_round(layer, W, b, F, solve)
        rejected += step["rejected"]
        if step["W"] is None:
            break
        changes = int(np.sum((step["W"] != 0) & (W == 0)))
        W, b, F = step["W"], step["b"], step["F"]
        for key, value in (("objective", F), ("support_changes", changes), ("surrogate", step["kind"])):
            history[key].append(value)
        if changes == 0:
            break
    W, b, F, polish_hist, settled = relu_refit(layer, W != 0, W, b, max_iter=polish_iter, tol=tol)
    history["objective"] += polish_hist
    status = "optimal" if settled or polish_iter == 0 else "max_iter"
    if status == "max_iter":
        warnings.warn(f"l0_relu: the fixed-support polish still lowered the loss by more than tol={tol:g} "
                      f"after polish_iter={polish_iter} rounds", ConvergenceWarning, stacklevel=2)
    y_sq = float(np.sum(layer.Y**2))
    info = dict(loss_start=history["objective"][0], support_rounds=rounds, polish_rounds=len(polish_hist),
                rejected=rejected, relative_error=float(np.sqrt(2.0 * X.shape[0] * F / max(y_sq, 1e-300))),
                pattern=str(parse_pattern(pattern)), sparsity=float(np.mean(W == 0)))
    b_out = b - layer.x_mean @ W
    return Result(W=W.astype(X.dtype), b=b_out.astype(X.dtype) if intercept else None, status=status,
                  objective=float(F), iterations=rounds + len(polish_hist), time=time.perf_counter() - start,
                  history={k: np.asarray(v) for k, v in history.items()}, info=info)


def _support_round(layer: CenteredReluLayer, W, b, F, solve):
    """One support round: the linear surrogate, else the tight one; the first that does not raise ``F``.

    Returns a dict with ``W``, ``b``, ``F``, ``kind`` (0 linear, 1 tight) — ``W`` is None when
    both raised ``F`` — and ``rejected`` (how many did)."""
    rejected = 0
    for kind_id, kind in enumerate(("linear", "tight")):
        q = layer.surrogate(kind, W, b)
        with warnings.catch_warnings():  # a nonconvex inner search; the round is judged by F itself
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = l0_admm(q, W0=W, **solve)
        Wn = res.W.astype(np.float64)
        bn = layer.bias(q, Wn)
        Fn = layer.loss(Wn, bn)
        if Fn <= F:
            return {"W": Wn, "b": bn, "F": Fn, "kind": kind_id, "rejected": rejected}
        rejected += 1
    return {"W": None, "rejected": rejected}


def _check_l0_options(options) -> dict:
    """``l0_options``: None or a dict of ``l0_admm`` keyword options."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ParameterError(f"l0_options must be a dict of l0_admm options, got {type(options).__name__}")
    unknown = sorted(set(options) - L0_OPTIONS)
    if unknown:
        raise ParameterError(f"l0_options has unknown keys {unknown}; l0_admm accepts {sorted(L0_OPTIONS)}")
    return dict(options)

