"""Sparsity patterns: their names, how a target sparsity becomes exact counts.

A pattern says which supports (sets of non-zero weights) of ``W (N, M)`` are
allowed. ``N`` counts inputs (rows), ``M`` outputs (columns).

- ``"unstructured"``: any ``k`` entries of the whole matrix;
- ``"per_output"``: ``k`` entries in every output column;
- ``"n:m"`` (e.g. ``"2:4"``, ``"4:8"``): ``n`` entries in each group of ``m``
  consecutive inputs of every output column; ``N`` must be a multiple of ``m``;
- ``"input_rows"``: ``k`` whole rows (input neurons / channels);
- ``"output_columns"``: ``k`` whole columns (output neurons).

Counting rule: a sparsity ``s`` over ``n`` units (entries, rows or columns)
zeroes ``z = ceil(s n)`` of them and keeps ``n - z``, so the achieved
sparsity is never below the target (as in :func:`bisect_sparsity`). ``s n`` is
taken with a relative slack of ``1e-12`` so that ``s = z / n`` written in
floating point gives exactly ``z``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ParameterError, ShapeError
from .validation import check_sparsity

KINDS = ("unstructured", "per_output", "input_rows", "output_columns")
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Pattern:
    """A parsed sparsity pattern: ``kind`` is one of :data:`KINDS` or ``"n:m"``."""

    kind: str
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind

    @property
    def fixed_sparsity(self) -> float | None:
        """``1 - n/m`` for N:M patterns, None for patterns that take a sparsity."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else None

    def resolve_sparsity(self, sparsity) -> float:
        """The sparsity to use: N:M fixes it (``None`` or a matching value), others require it."""
        fixed = self.fixed_sparsity
        if fixed is not None:
            if sparsity is None:
                return fixed
            s = check_sparsity(sparsity)
            if abs(s - fixed) > 1e-9:
                raise ParameterError(
                    f"pattern {self} fixes the sparsity to 1 - {self.n}/{self.m} = {fixed:g}; "
                    f"got sparsity={s:g} (pass sparsity=None)"
                )
            return fixed
        if sparsity is None:
            raise ParameterError(f"sparsity is required for pattern {self}")
        return check_sparsity(sparsity)

    def check_shape(self, n_features: int, n_outputs: int) -> None:
        """Raise ShapeError when ``W (n_features, n_outputs)`` cannot carry this pattern."""
        if self.kind == "n:m" and n_features % self.m:
            raise ShapeError(
                f"pattern {self} needs the number of inputs (rows of W) to be a multiple of {self.m}, "
                f"got {n_features}"
            )

    def kept(self, sparsity: float, n_features: int, n_outputs: int) -> int:
        """Units kept per comparison group: entries, entries per column, rows or columns."""
        if self.kind == "n:m":
            return self.n
        units = {
            "unstructured": n_features * n_outputs,
            "per_output": n_features,
            "input_rows": n_features,
            "output_columns": n_outputs,
        }[self.kind]
        return units - n_zeros(sparsity, units)


def n_zeros(sparsity: float, n: int) -> int:
    """``ceil(sparsity * n)`` with a relative slack of ``1e-12`` against rounding."""
    t = sparsity * n
    return min(n, max(0, math.ceil(t - 1e-12 * max(1.0, t))))


def parse_pattern(pattern) -> Pattern:
    """Parse ``"unstructured"``, ``"per_output"``, ``"input_rows"``, ``"output_columns"`` or ``"n:m"``.

    A :class:`Pattern` is returned unchanged. Raises ParameterError on anything else.
    """
    if isinstance(pattern, Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise ParameterError(f"pattern must be a string such as 'unstructured' or '2:4', got {pattern!r}")
    key = pattern.strip().lower()
    if key in KINDS:
        return Pattern(key)
    match = _NM.match(key)
    if match is None:
        raise ParameterError(f"pattern must be one of {KINDS} or 'N:M' such as '2:4', got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 1 <= n < m:
        raise ParameterError(f"pattern 'N:M' needs 1 <= N < M, got {pattern!r}")
    return Pattern("n:m", n, m)
