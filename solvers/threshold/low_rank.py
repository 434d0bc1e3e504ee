"""Least squares on supports wider than the data's rank, through a factor of the Gram matrix.

With fewer samples than kept inputs (``|S| > P - 1`` centered rows: a 3x3x512
conv seen at 1x1 resolution on 128 images) ``G_SS`` is singular and its
``|S| x |S|`` factorization is both wasted and ill-posed. A pivoted Cholesky
factor ``G = F^T F`` with ``F`` of shape ``(r, N)``, ``r = rank G``, turns
each column's problem ``min_w 1/2 w^T G_SS w - c^T w + ridge/2 ||w||^2`` into
an ``r x r`` one: ``c = F_S^T e`` (``C`` lies in the range of ``G``, so
``C = F^T E``), and the minimum-norm minimizer is

``w = F_S^T (F_S F_S^T + ridge I)^+ e``

(the push-through identity; for ``ridge = 0`` this is ``F_S^+ e``, the
minimum-norm least-squares solution of ``F_S w = e``). Cost ``O(r^2 |S|)``
per support instead of ``O(|S|^3)``; the factor costs ``O(N^2 r)`` once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack


@dataclass(frozen=True)
class GramFactor:
    """``F (r, N)`` with ``F^T F = G`` and ``E (r, M)`` with ``F^T E = C`` (to rounding)."""

    F: np.ndarray
    E: np.ndarray

    @property
    def rank(self) -> int:
        return self.F.shape[0]

    def solve(self, rows: np.ndarray, cols: np.ndarray, ridge: float, psd_solve):
        """Minimum-norm minimizers on support ``rows`` for outputs ``cols``: ``(|rows|, |cols|)``.

        ``psd_solve`` solves the ``r x r`` system (singular when the support
        does not span the data, then to within its relative ridge).
        """
        Fs = self.F[:, rows]
        A = Fs @ Fs.T
        if ridge:
            A = A + ridge * np.eye(self.rank)
        z, _ = psd_solve(A, self.E[:, cols])
        return Fs.T @ z


def gram_factor(G: np.ndarray, C: np.ndarray, rcond: float) -> GramFactor:
    """Pivoted Cholesky (LAPACK ``dpstrf``) of ``G``, stopped where the largest
    remaining squared pivot falls below ``rcond * max diag G``; ``E`` solves
    ``(F F^T) E = F C`` (formed with ``F / sqrt(max diag G)``), the coefficients of ``C``
    on the rows of ``F``."""
    scale = max(float(np.max(np.diag(G), initial=0.0)), np.finfo(float).tiny)
    c, piv, rank, info = lapack.dpstrf(G, tol=rcond * scale, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf rejected argument {-info}")
    F = np.zeros((rank, G.shape[0]))
    F[:, piv[: G.shape[0]] - 1] = np.tril(c[:, :rank]).T
    if not rank:
        return GramFactor(F=F, E=np.zeros((0, C.shape[1])))
    Fn = F / np.sqrt(scale)  # F C alone can overflow where G and C do not
    return GramFactor(F=F, E=np.linalg.solve(Fn @ Fn.T, Fn @ C) / np.sqrt(scale))
