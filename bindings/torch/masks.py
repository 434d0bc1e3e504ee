"""Sparsity of a model's weights: overall and per layer.

Counts the effective weights (``module.weight``, which under a
``torch.nn.utils.prune`` reparametrization is ``weight_orig * weight_mask``) of
every Linear and convolution layer; biases are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import prune as torch_prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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


def sparsity(model: nn.Module, layers=None) -> ModelSparsity:
    """Zero counts of the weights of ``model``'s Linear/Conv layers (or of the named ``layers``)."""
    named = dict(model.named_modules())
    names = [n for n, m in named.items() if isinstance(m, PRUNABLE)] if layers is None else list(layers)
    counts = {}
    for name in names:
        w = named[name].weight.detach()
        counts[name] = LayerCount(zeros=int((w == 0).sum()), total=int(w.numel()))
    return ModelSparsity(counts)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` reparametrization into plain parameters (zeros kept)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model
