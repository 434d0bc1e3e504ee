"""Streaming sufficient statistics of a squared-loss layer problem.

For ``min (1/2P) ||X W + 1 b^T - Y||_F^2 + penalty(W)`` only second moments are
needed. :class:`GramStats` accumulates them batch by batch (Chan et al.'s
pairwise update of means and centered cross-products, in float64 whatever the
input dtype), so memory is ``O(N^2 + N M)`` however many samples are seen.
:class:`Quadratic` is the problem in Gram form that the solvers consume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EmptyDataError, ShapeError
from .validation import check_bool, check_finite_moments, check_xy


@dataclass(frozen=True)
class Quadratic:
    """Squared loss in Gram form, ``f(W) = 1/2 tr(W^T G W) - tr(C^T W) + 1/2 yy.sum()``.

    With ``intercept=True`` the moments are centered and the optimal intercept
    for any ``W`` is ``b = y_mean - x_mean @ W``; then ``f(W)`` equals
    ``(1/2P) ||X W + 1 b^T - Y||_F^2`` exactly.

    Attributes: ``G (N, N) = X^T X / P``, ``C (N, M) = X^T Y / P``,
    ``yy (M,) = ||Y_m||^2 / P`` (all centered when ``intercept``), ``x_mean (N,)``,
    ``y_mean (M,)``, ``n_samples``, ``intercept``, ``dtype`` (of the caller's data).
    """

    G: np.ndarray
    C: np.ndarray
    yy: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    n_samples: int
    intercept: bool
    dtype: np.dtype

    @property
    def n_features(self) -> int:
        return self.G.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.C.shape[1]

    def loss(self, W: np.ndarray) -> float:
        """``(1/2P) ||X W + 1 b^T - Y||_F^2`` at the optimal (or zero) intercept."""
        W = np.asarray(W, dtype=np.float64)
        val = 0.5 * np.sum(W * (self.G @ W)) - np.sum(self.C * W) + 0.5 * self.yy.sum()
        return float(max(val, 0.0))

    def column_losses(self, W: np.ndarray) -> np.ndarray:
        """Per-output loss ``(1/2P) ||X w_m + b_m - y_m||^2``, shape (M,)."""
        W = np.asarray(W, dtype=np.float64)
        val = 0.5 * np.sum(W * (self.G @ W), axis=0) - np.sum(self.C * W, axis=0) + 0.5 * self.yy
        return np.maximum(val, 0.0)

    def gradient(self, W: np.ndarray) -> np.ndarray:
        """``grad f(W) = G W - C``."""
        return self.G @ W - self.C

    def intercept_for(self, W: np.ndarray) -> np.ndarray | None:
        """Optimal unpenalized intercept for ``W`` (``None`` without intercept)."""
        if not self.intercept:
            return None
        return self.y_mean - self.x_mean @ np.asarray(W, dtype=np.float64)

    def lipschitz(self) -> float:
        """Largest eigenvalue of ``G``: the Lipschitz constant of ``grad f``."""
        return float(np.linalg.eigvalsh(self.G)[-1]) if self.n_features else 0.0


class GramStats:
    """Accumulate ``X^T X``, ``X^T Y``, ``||Y_m||^2``, means and the count over batches.

    Examples
    --------
    >>> stats = GramStats()
    >>> for Xb, Yb in batches:          # doctest: +SKIP
    ...     stats.update(Xb, Yb)
    >>> lasso(stats, lam=0.01)          # doctest: +SKIP

    Notes
    -----
    Chan's update merges a batch ``B`` (count ``n_b``, means ``mx_b, my_b``,
    centered products ``Sxx_b, Sxy_b, syy_b``) into the totals ``A``:
    ``d_x = mx_b - mx_a``, ``Sxx += Sxx_b + d_x d_x^T n_a n_b / n`` (same for
    ``Sxy``, ``syy``) and ``mx += d_x n_b / n``. Centered accumulation avoids
    the cancellation of ``sum x x^T - P mean mean^T`` when means are large.
    """

    def __init__(self):
        self.n_samples = 0
        self._dtype32 = True
        self.x_mean = self.y_mean = None
        self.Sxx = self.Sxy = self.syy = None

    @classmethod
    def from_arrays(cls, X, Y) -> "GramStats":
        """Statistics of one full data set."""
        stats = cls()
        stats.update(X, Y)
        return stats

    @property
    def n_features(self) -> int:
        return 0 if self.Sxx is None else self.Sxx.shape[0]

    @property
    def n_outputs(self) -> int:
        return 0 if self.Sxy is None else self.Sxy.shape[1]

    @property
    def dtype(self) -> np.dtype:
        """float32 if every batch was float32, else float64."""
        return np.dtype(np.float32 if self._dtype32 else np.float64)

    def update(self, X, Y) -> "GramStats":
        """Add one batch of samples ``X (B, N)``, ``Y (B, M)``; returns self.

        Raises NonFiniteError, leaving the statistics unchanged, when the batch
        or the merged totals overflow float64.
        """
        X, Y = check_xy(X, Y)
        if self.Sxx is not None and (X.shape[1], Y.shape[1]) != (self.n_features, self.n_outputs):
            raise ShapeError(
                f"batch has {X.shape[1]} features and {Y.shape[1]} outputs; "
                f"earlier batches had {self.n_features} and {self.n_outputs}"
            )
        self._dtype32 &= X.dtype == np.float32
        # float64 views of float64 input (no copy); centered copies are the only temporaries
        Xd, Yd = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        nb = Xd.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by _merge
            mx, my = Xd.mean(axis=0), Yd.mean(axis=0)
            Yc = Yd - my
            syy_b = np.einsum("ij,ij->j", Yc, Yc)
            Sxx_b, Sxy_b = _centered_products(Xd, mx, Yc)
        self._merge(nb, mx, my, Sxx_b, Sxy_b, syy_b)
        return self

    def merge(self, other: "GramStats") -> "GramStats":
        """Add the statistics of another accumulator (e.g. from another worker)."""
        if not isinstance(other, GramStats):
            raise ShapeError(f"merge() takes another GramStats, got {type(other).__name__}")
        if other.n_samples == 0:
            return self
        if self.Sxx is not None and (other.n_features, other.n_outputs) != (self.n_features, self.n_outputs):
            raise ShapeError("cannot merge statistics of different shapes")
        self._dtype32 &= other._dtype32
        self._merge(other.n_samples, other.x_mean, other.y_mean, other.Sxx, other.Sxy, other.syy)
        return self

    def _merge(self, nb, mx, my, Sxx_b, Sxy_b, syy_b):
        """Merge one batch's moments; nothing changes when the batch or the totals are not finite."""
        moments = merged_moments(self.n_samples, (self.x_mean, self.y_mean, self.Sxx, self.Sxy, self.syy),
                                 nb, (mx, my, Sxx_b, Sxy_b, syy_b), "GramStats")
        self.x_mean, self.y_mean, self.Sxx, self.Sxy, self.syy = moments
        self.n_samples += nb

    @classmethod
    def from_moments(cls, n_samples, x_mean, y_mean, Sxx, Sxy, syy, dtype32: bool) -> "GramStats":
        """Statistics holding the given (centered) moments of ``n_samples`` samples, not copied."""
        stats = cls()
        stats.n_samples, stats._dtype32 = n_samples, dtype32
        stats.x_mean, stats.y_mean, stats.Sxx, stats.Sxy, stats.syy = x_mean, y_mean, Sxx, Sxy, syy
        return stats

    def _require(self):
        if self.n_samples == 0:
            raise EmptyDataError("GramStats holds no samples; call update() with data first")

    def xtx(self) -> np.ndarray:
        """Uncentered ``X^T X`` (float64)."""
        self._require()
        return self.Sxx + self.n_samples * np.outer(self.x_mean, self.x_mean)

    def xty(self) -> np.ndarray:
        """Uncentered ``X^T Y`` (float64)."""
        self._require()
        return self.Sxy + self.n_samples * np.outer(self.x_mean, self.y_mean)

    def yty_diag(self) -> np.ndarray:
        """Uncentered ``||Y_m||^2`` per output (float64); its sum is ``tr(Y^T Y)``."""
        self._require()
        return self.syy + self.n_samples * self.y_mean**2

    def columns(self, cols) -> "GramStats":
        """The statistics of the outputs ``cols`` alone (a slice or indices); ``X^T X`` is shared, not copied."""
        self._require()
        sub = GramStats()
        sub.n_samples, sub._dtype32 = self.n_samples, self._dtype32
        sub.x_mean, sub.Sxx = self.x_mean, self.Sxx
        sub.y_mean, sub.syy = self.y_mean[cols].copy(), self.syy[cols].copy()
        sub.Sxy = np.ascontiguousarray(self.Sxy[:, cols])
        return sub

    def quadratic(self, intercept: bool = True) -> Quadratic:
        """The Gram form of the squared loss, divided by ``P`` (centered if ``intercept``)."""
        self._require()
        P = self.n_samples
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            if intercept:
                G, C, yy = self.Sxx / P, self.Sxy / P, self.syy / P
            else:
                G, C, yy = self.xtx() / P, self.xty() / P, self.yty_diag() / P
        # the attributes are public: check what is handed to the solvers, not only what update() stored
        check_finite_moments(
            "GramStats", G=G, C=C, yy=yy, x_mean=self.x_mean, y_mean=self.y_mean
        )
        return Quadratic(
            G=G, C=C, yy=yy, x_mean=self.x_mean.copy(), y_mean=self.y_mean.copy(),
            n_samples=P, intercept=intercept, dtype=self.dtype,
        )

    def __repr__(self) -> str:
        return f"GramStats(n_samples={self.n_samples}, n_features={self.n_features}, n_outputs={self.n_outputs})"


def merged_moments(na: int, totals: tuple, nb: int, batch: tuple, source: str) -> tuple:
    """Chan's update: ``(x_mean, y_mean, Sxx, Sxy, syy)`` of ``na`` samples merged with a batch's
    of ``nb`` samples (the batch's, copied, when ``na == 0``). Leading axes (groups) broadcast.

    Raises NonFiniteError, naming ``source``, when the batch or the merged totals are not finite.
    """
    mx, my, Sxx_b, Sxy_b, syy_b = batch
    check_finite_moments(f"{source} batch", x_mean=mx, y_mean=my, Sxx=Sxx_b, Sxy=Sxy_b, syy=syy_b)
    if na == 0:
        return tuple(a.copy() for a in batch)
    x_a, y_a, Sxx_a, Sxy_a, syy_a = totals
    n = na + nb
    dx, dy = mx - x_a, my - y_a
    w = na * nb / n
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, before anything is stored
        Sxx = Sxx_a + (Sxx_b + w * (dx[..., :, None] * dx[..., None, :]))
        Sxy = Sxy_a + (Sxy_b + w * (dx[..., :, None] * dy[..., None, :]))
        syy = syy_a + (syy_b + w * dy * dy)
        x_mean = x_a + dx * (nb / n)
        y_mean = y_a + dy * (nb / n)
    check_finite_moments(f"{source} totals", x_mean=x_mean, y_mean=y_mean, Sxx=Sxx, Sxy=Sxy, syy=syy)
    return x_mean, y_mean, Sxx, Sxy, syy


def _centered_products(X, mx, Yc):
    """``Xc^T Xc`` and ``Xc^T Yc`` with ``Xc = X - mx``.

    Constant columns of ``X`` (pixels that never change, dead ReLU inputs)
    have ``Xc = 0`` exactly, so their rows and columns are set to zero and the
    products run over the varying columns only.
    """
    live = np.flatnonzero(np.any(X != X[:1], axis=0)) if X.shape[0] > 1 else np.arange(0)
    N = X.shape[1]
    if live.size == N:
        Xc = X - mx
        return Xc.T @ Xc, Xc.T @ Yc
    Xc = X[:, live]
    Xc -= mx[live]
    Sxx, Sxy = np.zeros((N, N)), np.zeros((N, Yc.shape[1]))
    Sxx[np.ix_(live, live)] = Xc.T @ Xc
    Sxy[live] = Xc.T @ Yc
    return Sxx, Sxy


def as_quadratic(X, Y=None, *, intercept: bool = True) -> Quadratic:
    """Accept ``(X, Y)`` arrays, a :class:`GramStats` or a :class:`Quadratic` (with ``Y=None``)."""
    intercept = check_bool(intercept, "intercept")
    if isinstance(X, Quadratic):
        if Y is not None or X.intercept != intercept:
            raise ShapeError(f"pass a Quadratic alone, built with intercept={intercept}")
        check_quadratic(X)
        return X
    if isinstance(X, GramStats):
        if Y is not None:
            raise ShapeError("pass either GramStats alone or arrays (X, Y), not both")
        return X.quadratic(intercept)
    if Y is None:
        raise ShapeError("Y is required when X is an array")
    return GramStats.from_arrays(X, Y).quadratic(intercept)


def check_quadratic(q: Quadratic) -> None:
    """A received :class:`Quadratic` has consistent shapes, samples and finite moments."""
    G, C = np.asarray(q.G), np.asarray(q.C)
    if G.ndim != 2 or C.ndim != 2 or G.shape != (G.shape[0], G.shape[0]) or C.shape[0] != G.shape[0]:
        raise ShapeError(f"Quadratic needs G (N, N) and C (N, M), got G {G.shape} and C {C.shape}")
    N, M = C.shape
    if N == 0 or M == 0:
        raise EmptyDataError(f"Quadratic has no features or outputs (C has shape {C.shape})")
    for name, value, shape in (("yy", q.yy, (M,)), ("x_mean", q.x_mean, (N,)), ("y_mean", q.y_mean, (M,))):
        if np.shape(value) != shape:
            raise ShapeError(f"Quadratic.{name} must have shape {shape}, got {np.shape(value)}")
    if not isinstance(q.n_samples, (int, np.integer)) or q.n_samples < 1:
        raise EmptyDataError(f"Quadratic.n_samples must be a positive integer, got {q.n_samples!r}")
    check_finite_moments("Quadratic", G=G, C=C, yy=q.yy, x_mean=q.x_mean, y_mean=q.y_mean)
