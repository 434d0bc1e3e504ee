"""Spread an overall sparsity over layers of different sizes.

Erdős–Rényi-kernel rule (Evci et al., "Rigging the Lottery", 2020): layer ``l``
with weight shape ``(n_out, n_in, k_1, ...)`` keeps a density proportional to
``(n_out + n_in + sum k_i) / (n_out n_in prod k_i)``, i.e. small layers stay
denser than large ones, scaled so that the kept weights add up to
``(1 - sparsity) * total``. Layers whose density would exceed 1 stay dense and
the rest is rescaled.
"""
from __future__ import annotations

from torch import nn

from layertrim.solvers.base.validation import check_sparsity

from .capture import find_layers


def erk_sparsity(model: nn.Module, sparsity: float, layers=None) -> dict:
    """Per-layer sparsities (name -> fraction) with overall ``sparsity`` over ``layers``.

    Parameters
    ----------
    model : nn.Module
    sparsity : float in [0, 1)
        Overall fraction of zero weights over the chosen layers.
    layers : list of str, optional
        Default: every Linear/Conv1d/Conv2d.

    Returns
    -------
    dict name -> float, to pass as ``prune(..., sparsity=...)``.
    """
    sparsity = check_sparsity(sparsity)
    shapes = {n: tuple(m.weight.shape) for n, m in find_layers(model, layers).items()}
    sizes = {n: _numel(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    budget = (1.0 - sparsity) * sum(sizes.values())
    dense: set = set()
    while True:
        free = budget - sum(sizes[n] for n in dense)
        scale = free / sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        over = {n for n in shapes if n not in dense and raw[n] * scale > 1.0}
        if not over:
            break
        dense |= over
    return {n: (0.0 if n in dense else 1.0 - raw[n] * scale) for n in shapes}


def _numel(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
