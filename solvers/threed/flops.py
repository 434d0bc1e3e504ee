"""The FLOPs model ``F(d, w, r)``: a sum of power terms in the three ratios."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..base.errors import ParameterError, ShapeError
from ..base.validation import check_scalar


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs as a sum of power terms ``F(d, w, r) = sum_t c_t d^{p_t} w^{q_t} r^{s_t}``.

    The binding builds the table from a network's per-layer counts: a layer
    inside removable blocks scales with ``d``, its FLOPs scale with ``w`` once
    per pruned channel dimension (``q`` in 0, 1, 2) and with ``r^2`` when it
    acts on feature maps. :meth:`power_law` is the fallback ``F0 d w^2 r^2``.

    Attributes
    ----------
    coef : ndarray, shape (n_terms,)
    powers : ndarray, shape (n_terms, 3)
    """

    coef: np.ndarray
    powers: np.ndarray

    def __post_init__(self):
        coef = np.asarray(self.coef, dtype=np.float64).ravel()
        powers = np.asarray(self.powers, dtype=np.float64).reshape(-1, 3)
        if coef.shape[0] != powers.shape[0]:
            raise ShapeError(f"FlopsModel has {coef.shape[0]} coefficients but {powers.shape[0]} power rows")
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(powers))):
            raise ParameterError("FlopsModel coefficients and powers must be finite")
        if np.any(powers < 0):
            raise ParameterError("FlopsModel powers must be >= 0")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "powers", powers)

    @classmethod
    def power_law(cls, total: float = 1.0) -> "FlopsModel":
        """The usual approximation ``total * d * w^2 * r^2``."""
        total = check_scalar(total, "total", low=0.0, low_open=True)
        return cls(np.array([total]), np.array([[1.0, 2.0, 2.0]]))

    @property
    def total(self) -> float:
        """FLOPs of the unpruned network, ``F(1, 1, 1)``."""
        return float(self.coef.sum())

    @property
    def monotone(self) -> bool:
        """True when ``F`` is nondecreasing in each ratio on the box (nonnegative terms)."""
        return bool(np.all(self.coef[self.powers.sum(axis=1) > 0] >= 0))

    def __call__(self, d, w, r):
        d, w, r = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (d, w, r)))
        out = np.zeros(d.shape)
        for c, (p, q, s) in zip(self.coef, self.powers):
            out = out + c * d**p * w**q * r**s
        return out

    def gradient(self, x: Sequence[float]) -> np.ndarray:
        d, w, r = (float(v) for v in x)
        g = np.zeros(3)
        for c, (p, q, s) in zip(self.coef, self.powers):
            g[0] += c * p * d ** max(p - 1, 0) * w**q * r**s if p else 0.0
            g[1] += c * q * d**p * w ** max(q - 1, 0) * r**s if q else 0.0
            g[2] += c * s * d**p * w**q * r ** max(s - 1, 0) if s else 0.0
        return g

    def grid(self, d: np.ndarray, w: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Values on the tensor grid ``d x w x r``."""
        out = np.zeros((len(d), len(w), len(r)))
        for c, (p, q, s) in zip(self.coef, self.powers):
            out += c * (d**p)[:, None, None] * (w**q)[None, :, None] * (r**s)[None, None, :]
        return out
