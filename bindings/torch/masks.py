"""Sparsity of a model's weights: overall and per layer.

Counts the effective weights (``module.weight``, which under a
``torch.nn.utils.prune`` reparametrization is ``weight_orig * weight_mask``) of
every layer a prunable kind of :mod:`.layers` matches: Linear, Conv1d/Conv2d,
transformers' ``Conv1D`` and the fused in-projection of
``nn.MultiheadAttention`` (``<attention>.in_proj``, weight ``in_proj_weight``);
biases are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.errors import ParameterError

from .layers import kind_of, named_layers


@dataclass(frozen=True)
class LayerCount:
    """Zero and total weight counts of one layer."""

    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class ModelSparsity:
    """Per-layer counts (qualified name -> :class:`LayerCount`) and their totals."""

    layers: dict = field(default_factory=dict)

    @property
    def zeros(self) -> int:
        return sum(c.zeros for c in self.layers.values())

    @property
    def total(self) -> int:
        return sum(c.total for c in self.layers.values())

    @property
    def overall(self) -> float:
        """Fraction of zero weights over all counted layers."""
        return self.zeros / self.total if self.total else 0.0

    def __str__(self) -> str:
        width = max([len(n) for n in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'zeros':>10}  {'total':>10}  sparsity"]
        for name, c in self.layers.items():
            lines.append(f"{name:<{width}}  {c.zeros:>10}  {c.total:>10}  {c.sparsity:8.4f}")
        lines.append(f"{'total':<{width}}  {self.zeros:>10}  {self.total:>10}  {self.overall:8.4f}")
        return "\n".join(lines)


def weight_sites(model: nn.Module) -> dict:
    """``name -> (owner, attribute)`` of every prunable layer's weight (``owner.attribute`` is the
    effective weight; the owner of an in-projection is its attention module)."""
    sites = {}
    for name, m in named_layers(model).items():
        kind = kind_of(m)
        if kind is not None and kind.refusal(m) is None:
            sites[name] = kind.site(m)
    return sites


def sparsity(model: nn.Module, layers=None) -> ModelSparsity:
    """Zero counts of the weights of ``model``'s prunable layers (or of the named ``layers``)."""
    sites = weight_sites(model)
    names = list(sites) if layers is None else list(layers)
    unknown = [n for n in names if n not in sites]
    if unknown:
        raise ParameterError(f"sparsity: {unknown} are not prunable layers of the model; they are {list(sites)}")
    counts = {}
    for name in names:
        owner, attr = sites[name]
        w = getattr(owner, attr).detach()
        counts[name] = LayerCount(zeros=int((w == 0).sum()), total=int(w.numel()))
    return ModelSparsity(counts)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` reparametrization into plain parameters (zeros kept)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model
