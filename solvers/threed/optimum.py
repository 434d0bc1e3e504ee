"""The FLOPs-constrained maximum of the accuracy model, on the box and over
realizable discrete configurations."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from ..base.errors import InfeasibleError, ParameterError, ShapeError
from ..base.validation import check_array, check_scalar
from .flops import FlopsModel
from .model import AccuracyModel


@dataclass(frozen=True)
class ThreeDOptimum:
    """Solution of the budget-constrained accuracy maximization.

    Attributes
    ----------
    d, w, r : float
        Depth, width and resolution ratios.
    accuracy : float
        Predicted accuracy ``acc(d, w, r)``.
    flops : float
        ``FLOPs(d, w, r)`` (in the units of the FLOPs model).
    budget : float
        The FLOPs budget (same units).
    grid_accuracy : float
        Best predicted accuracy over the feasible grid points.
    upper_bound : float
        Certified bound ``>=`` the true maximum over the box: the grid best
        plus ``sum_a L_a h_a`` (Lipschitz bounds times grid steps); ``nan``
        when the FLOPs model is not known to be monotone.
    grid_points : int
        Points per axis of the grid.
    """

    d: float
    w: float
    r: float
    accuracy: float
    flops: float
    budget: float
    grid_accuracy: float
    upper_bound: float
    grid_points: int

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (self.d, self.w, self.r)

    @property
    def gap(self) -> float:
        """``upper_bound - accuracy``: how far the answer can be from the true maximum."""
        return self.upper_bound - self.accuracy


def _box_bound(value, name: str) -> np.ndarray:
    """``lower`` / ``upper`` as a flat float64 array; ParameterError unless real numbers and finite."""
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"dtype {arr.dtype}")
        arr = arr.astype(np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"{name} must be a real number or 3 real numbers (d, w, r) in [0, 1], got {value!r} ({exc})"
        ) from exc
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} must be finite numbers in [0, 1], got {value!r}")
    return arr


def _check_box(lower, upper):
    lo = _box_bound(lower, "lower")
    hi = _box_bound(upper, "upper")
    lo = np.broadcast_to(lo, (3,)).copy() if lo.size in (1, 3) else None
    hi = np.broadcast_to(hi, (3,)).copy() if hi.size in (1, 3) else None
    if lo is None or hi is None:
        raise ShapeError("lower and upper must be scalars or 3 values (d, w, r)")
    if np.any(lo < 0) or np.any(hi > 1) or np.any(lo > hi) or np.any(hi <= 0):
        raise ParameterError(f"need 0 <= lower <= upper <= 1 and upper > 0, got lower={lo}, upper={hi}")
    return lo, hi


def _on_grid(model: AccuracyModel, flops, axes):
    """Predicted accuracy and FLOPs on the tensor grid ``axes[0] x axes[1] x axes[2]``."""
    acc = model.grid(*axes)
    if isinstance(flops, FlopsModel):
        return acc, flops.grid(*axes)
    return acc, np.asarray(flops(*np.meshgrid(*axes, indexing="ij")), dtype=np.float64)


def _flops_at(flops, x) -> float:
    """``F(x)`` at one point ``x = (d, w, r)``."""
    return float(np.asarray(flops(*x)))


def _flops_gradient(flops, x) -> np.ndarray:
    """Analytic for a FlopsModel, central differences for a callable."""
    if isinstance(flops, FlopsModel):
        return flops.gradient(x)
    eps = 1e-7
    return np.array([(_flops_at(flops, x + eps * e) - _flops_at(flops, x - eps * e)) / (2 * eps) for e in np.eye(3)])


def _refine(model: AccuracyModel, flops, budget, lo, hi, starts, best_val, best_x):
    """SLSQP from each start; returns the best feasible ``(accuracy, x)``, never worse than the given one."""
    for x0 in starts:
        res = minimize(
            lambda x: -float(model(*x)),
            x0,
            jac=lambda x: -model.gradient(x),
            method="SLSQP",
            bounds=list(zip(lo, hi)),
            constraints=[{"type": "ineq", "fun": lambda x: budget - _flops_at(flops, x),
                          "jac": lambda x: -_flops_gradient(flops, x)}],
            options={"maxiter": 200, "ftol": 1e-12},
        )
        x = np.clip(res.x, lo, hi)
        val = float(model(*x))
        if _flops_at(flops, x) <= budget * (1 + 1e-9) and val > best_val:
            best_val, best_x = val, x
    return best_val, best_x


def maximize_accuracy(
    model: AccuracyModel,
    flops: FlopsModel | Callable,
    budget: float,
    *,
    lower=0.05,
    upper=1.0,
    grid_points: int = 61,
    n_starts: int = 5,
) -> ThreeDOptimum:
    """Globally maximize ``acc(d, w, r)`` subject to ``FLOPs(d, w, r) <= budget`` on a box.

    Solves ``max acc(d, w, r)  s.t.  F(d, w, r) <= budget, lower <= (d, w, r) <= upper``.

    Parameters
    ----------
    model : AccuracyModel
    flops : FlopsModel or callable ``(d, w, r) -> flops`` (vectorized)
    budget : float > 0
        In the units of ``flops`` (for a ratio, use a model with total 1).
    lower, upper : float or 3 values
        The box, within ``[0, 1]``.
    grid_points : int
        Points per axis of the search grid.
    n_starts : int
        Best feasible grid points (distinct cells) refined by SLSQP.

    Returns
    -------
    ThreeDOptimum

    Notes
    -----
    1. Evaluate ``acc`` and ``F`` on the ``grid_points^3`` tensor grid of the
       box and keep the feasible points.
    2. Polish the ``n_starts`` best with SLSQP (analytic gradients), keep the
       best feasible answer, never worse than the grid best.
    3. Certificate: when ``F`` is nondecreasing in each ratio (nonnegative
       terms), any feasible point ``x*`` rounds down to a feasible grid point
       ``x_g`` with ``|x*_a - x_g,a| <= h_a``, hence
       ``acc(x*) <= acc(x_g) + sum_a L_a h_a`` with ``L_a`` from
       :meth:`AccuracyModel.lipschitz`; this is ``upper_bound``.
    With a monotone model (``fit_accuracy_model(..., monotone=True)``) and
    nonnegative FLOPs terms, the maximum lies on the budget surface
    ``F = budget`` unless the box's upper corner already meets the budget.

    Raises InfeasibleError when no grid point meets the budget (the budget is
    below the FLOPs at ``lower``).
    """
    if not isinstance(model, AccuracyModel):
        raise ParameterError("model must be an AccuracyModel (see fit_accuracy_model)")
    if not callable(flops):
        raise ParameterError("flops must be a FlopsModel or a callable (d, w, r) -> flops")
    budget = check_scalar(budget, "budget", low=0.0, low_open=True)
    grid_points = check_scalar(grid_points, "grid_points", low=2, integer=True)
    n_starts = check_scalar(n_starts, "n_starts", low=0, integer=True)
    lo, hi = _check_box(lower, upper)
    axes = [np.linspace(lo[a], hi[a], grid_points) for a in range(3)]
    acc, F = _on_grid(model, flops, axes)
    # relative slack for rounding in the FLOPs evaluation only
    feasible = F <= budget * (1 + 1e-12)
    if not feasible.any():
        raise InfeasibleError(
            f"no point of the box meets the FLOPs budget {budget:.6g}; the smallest is {F.min():.6g} at lower={lo}"
        )
    masked = np.where(feasible, acc, -np.inf)
    order = np.argsort(masked, axis=None)[::-1]
    best_idx = np.unravel_index(order[0], acc.shape)
    grid_best = float(acc[best_idx])
    starts = [
        np.array([axes[a][i] for a, i in enumerate(np.unravel_index(int(flat), acc.shape))])
        for flat in order[: max(n_starts, 0)] if np.isfinite(masked.flat[flat])
    ]
    best_x = np.array([axes[a][best_idx[a]] for a in range(3)])
    best_val, best_x = _refine(model, flops, budget, lo, hi, starts, grid_best, best_x)
    steps = (hi - lo) / (grid_points - 1)
    monotone = isinstance(flops, FlopsModel) and flops.monotone
    bound = grid_best + float(model.lipschitz() @ steps) if monotone else float("nan")
    return ThreeDOptimum(
        d=float(best_x[0]),
        w=float(best_x[1]),
        r=float(best_x[2]),
        accuracy=best_val,
        flops=_flops_at(flops, best_x),
        budget=budget,
        grid_accuracy=grid_best,
        upper_bound=bound,
        grid_points=grid_points,
    )


def realizable_optimum(
    model: AccuracyModel,
    flops: FlopsModel | Callable,
    budget: float,
    depths,
    widths,
    resolutions,
    *,
    check: Callable[[float, float, float], float] | None = None,
    slack: float = 0.0,
) -> ThreeDOptimum:
    """Best configuration among the realizable discrete ratios that meets the budget.

    Depth and width are discrete in a real network (whole blocks, channel
    counts), resolution in whole pixels. Every combination of ``depths x
    widths x resolutions`` is ranked by predicted accuracy; the best one whose
    model FLOPs meet ``budget`` — and, when ``check`` is given (e.g. the real
    FLOPs counted on the pruned network), whose ``check(d, w, r) <= budget``
    too — is returned. Exhaustive, so it is the exact discrete optimum.

    With ``check`` and ``slack > 0``, combinations whose model FLOPs are
    within ``budget * (1 + slack)`` are candidates too and only ``check``
    decides: the model's rounding error (channel counts, feature-map sizes)
    can then no longer exclude a configuration that really meets the budget,
    as long as the model overestimates by less than ``slack``.

    Returns
    -------
    ThreeDOptimum
        ``grid_accuracy`` and ``upper_bound`` both hold the best predicted
        accuracy among the candidates (model FLOPs within
        ``budget * (1 + slack)``), an upper bound when ``check`` rejects some; ``grid_points`` is the
        number of combinations.

    Raises InfeasibleError when no combination meets the budget.
    """
    budget = check_scalar(budget, "budget", low=0.0, low_open=True)
    slack = check_scalar(slack, "slack", low=0.0)
    if slack > 0 and check is None:
        raise ParameterError("slack > 0 needs check= (the model FLOPs alone decide without it)")
    axes = []
    for name, vals in (("depths", depths), ("widths", widths), ("resolutions", resolutions)):
        v = np.unique(check_array(vals, name, ndim=1, dtype=np.float64))
        if np.any(v < 0) or np.any(v > 1):
            raise ParameterError(f"{name} must be ratios in [0, 1]")
        axes.append(v)
    acc, F = _on_grid(model, flops, axes)
    masked = np.where(F <= budget * (1 + slack + 1e-12), acc, -np.inf)
    for flat in np.argsort(masked, axis=None)[::-1]:
        if not np.isfinite(masked.flat[flat]):
            break
        idx = np.unravel_index(flat, acc.shape)
        x = [float(axes[a][idx[a]]) for a in range(3)]
        real = float(F[idx]) if check is None else float(check(*x))
        if real <= budget:
            best = float(masked.max())
            return ThreeDOptimum(*x, float(acc[idx]), real, budget, best, best, int(acc.size))
    raise InfeasibleError(f"no realizable configuration meets the FLOPs budget {budget:.6g}")
