"""Bounded uniform row sampling for the ``"rows"`` capture mode of :mod:`.capture`:
reservoir sampling without replacement (Vitter's algorithm R, seeded), with
the rows of all conv groups kept together."""
from __future__ import annotations

import numpy as np


class RowReservoir:
    """Uniform sample of at most ``max_rows`` rows, shared across groups (algorithm R)."""

    def __init__(self, max_rows: int, seed: int):
        self.max_rows = max_rows
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.X = self.Y = None
        self.filled = 0

    def add(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Add rows ``X (g, P_b, K)``, ``Y (g, P_b, M_g)``."""
        n = X.shape[1]
        take = min(self.max_rows - self.filled, n)
        self._reserve(X, Y, self.filled + take)
        if take:
            self.X[:, self.filled : self.filled + take] = X[:, :take]
            self.Y[:, self.filled : self.filled + take] = Y[:, :take]
            self.filled += take
        rest = np.arange(take, n)
        if rest.size:
            # row with global index t replaces slot j ~ U{0..t} when j < max_rows
            slots = self.rng.integers(0, self.seen + rest + 1)
            keep = slots < self.max_rows
            rows, slots = rest[keep], slots[keep]
            # a later row overwrites an earlier one drawn for the same slot
            last = np.unique(slots[::-1], return_index=True)[1]
            pick = len(slots) - 1 - last
            self.X[:, slots[pick]] = X[:, rows[pick]]
            self.Y[:, slots[pick]] = Y[:, rows[pick]]
        self.seen += n

    def _reserve(self, X, Y, rows: int) -> None:
        """Room for ``rows`` rows: storage grows by doubling up to ``max_rows``, so memory follows
        the rows actually seen, not the budget."""
        have = 0 if self.X is None else self.X.shape[1]
        if rows <= have:
            return
        size = min(self.max_rows, max(rows, 2 * have))
        grown_X = np.empty((X.shape[0], size, X.shape[2]), dtype=X.dtype)
        grown_Y = np.empty((Y.shape[0], size, Y.shape[2]), dtype=Y.dtype)
        if self.X is not None:
            grown_X[:, :self.filled] = self.X[:, :self.filled]
            grown_Y[:, :self.filled] = self.Y[:, :self.filled]
        self.X, self.Y = grown_X, grown_Y

    def groups(self):
        return [(self.X[j, : self.filled], self.Y[j, : self.filled]) for j in range(self.X.shape[0])]
