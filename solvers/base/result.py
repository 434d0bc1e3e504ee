"""The single result type returned by every layertrim solver."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import array_api_compat as aac
import numpy as np

from .backend import is_foreign as _foreign
from .errors import NonFiniteError

STATUSES = ("optimal", "max_iter", "infeasible", "numerical_error")


@dataclass(frozen=True)
class Result:
    """Outcome of a layer solve.

    Attributes
    ----------
    W : ndarray, shape (n_features, n_outputs)
        Weights in the input dtype; ``X @ W + b`` approximates the targets.
    b : ndarray, shape (n_outputs,) or None
        Unpenalized intercept (``None`` when ``intercept=False``).
    status : str
        One of ``"optimal"``, ``"max_iter"``, ``"infeasible"``, ``"numerical_error"``.
    objective : float
        The solver's objective at the returned ``(W, b)``.
    iterations : int
        Iterations performed (outer iterations for nested solvers).
    time : float
        Wall-clock seconds of the solve.
    history : dict[str, ndarray]
        Per-iteration traces (objective, residuals, duality gap, ...).
    info : dict
        Solver-specific facts (lam or eps used, achieved sparsity, duality gap,
        constraint violation, ...).
    """

    W: np.ndarray
    b: np.ndarray | None
    status: str
    objective: float
    iterations: int
    time: float
    history: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        # the last line of defence: no solver hands out NaN/Inf weights, whatever its status
        for name in ("W", "b"):
            value = getattr(self, name)
            if value is None:
                continue
            if _foreign(value):  # torch, CuPy, ... on their own device
                xp = aac.array_namespace(value)
                finite = xp.isfinite(value)
                bad, dtype = int(xp.sum(xp.astype(~finite, xp.int64))), value.dtype
            else:
                arr = np.asarray(value)
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr))) if arr.dtype.kind in "fc" else 0
                dtype = arr.dtype
            if bad:
                raise NonFiniteError(
                    f"the solution {name} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} in {dtype}: "
                    f"the weights do not fit {dtype} or the solve overflowed; rescale X and Y "
                    "(e.g. divide each by its largest entry) or pass float64 data"
                )

    @property
    def converged(self) -> bool:
        """True when the solver met its stopping criterion."""
        return self.status == "optimal"

    @property
    def sparsity(self) -> float:
        """Fraction of exactly-zero entries of ``W``."""
        if _foreign(self.W):
            xp = aac.array_namespace(self.W)
            zeros = xp.astype(self.W == 0, xp.float64)
            return float(xp.mean(zeros)) if zeros.shape[0] * zeros.shape[1] else 0.0
        return float(np.mean(self.W == 0)) if self.W.size else 0.0

    def predict(self, X):
        """Linear layer output ``X @ W + b`` (pre-activation); ``X`` in the array library of ``W``."""
        out = (X if _foreign(self.W) else np.asarray(X)) @ self.W
        return out + self.b if self.b is not None else out

    def __repr__(self) -> str:
        return (
            f"Result(status={self.status!r}, objective={self.objective:.6g}, "
            f"iterations={self.iterations}, time={self.time:.3g}s, "
            f"W={self.W.shape} {self.W.dtype}, sparsity={self.sparsity:.3f})"
        )

