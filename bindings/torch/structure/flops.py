"""FLOPs and parameter counts of torch models, by forward hooks on a sample input,
and the FLOPs model of a :class:`ResNet` as a function of ``(d, w, r)``.

Counting convention (per sample; one multiply-accumulate counts as one FLOP,
the usual convention of pruning papers):

==================  ============================================================
Conv1d / Conv2d     ``out_elements * (in_channels / groups) * kernel_size`` (+ ``out_elements`` with bias)
Linear              ``out_elements * in_features`` (+ ``out_elements`` with bias)
BatchNorm1d/2d      ``2 * elements`` (scale and shift)
ReLU                ``elements``
MaxPool / AvgPool   ``out_elements * kernel_size``
AdaptiveAvgPool     ``in_elements``
BasicBlock          ``out_elements`` for the residual addition (its layers count themselves)
Resized             ``4 * out_elements`` (bilinear interpolation: four taps per output pixel)
==================  ============================================================

Containers (Sequential, ModuleList, the model itself), Flatten, Identity and
Dropout cost nothing; any other module with no children raises ParameterError.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.threed import FlopsModel

from .resnet import BasicBlock, ResNet
from .surgery import Resized, unwrap

_FREE = (nn.Flatten, nn.Identity, nn.Dropout, nn.Sequential, nn.ModuleList)


def _per_sample(t: torch.Tensor) -> int:
    return int(t[0].numel()) if t.dim() else 1


def module_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int | None:
    """FLOPs of one call of ``module`` for one sample (see the module docstring); None if unsupported."""
    o = _per_sample(out)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        k = int(np.prod(module.kernel_size))
        return o * (module.in_channels // module.groups) * k + (o if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        return o * module.in_features + (o if module.bias is not None else 0)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return 2 * o
    if isinstance(module, nn.ReLU):
        return o
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
        ks = module.kernel_size
        return o * int(np.prod(ks if isinstance(ks, tuple) else (ks,) * (out.dim() - 2)))
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        return _per_sample(inp)
    if isinstance(module, BasicBlock):
        return o
    if isinstance(module, Resized):
        if tuple(inp.shape[-2:]) == (module.size, module.size):
            return 0
        return 4 * int(np.prod(inp.shape[1:-2])) * module.size**2
    if isinstance(module, _FREE) or len(list(module.children())):
        return 0
    return None


@dataclass(frozen=True)
class FlopsReport:
    """Per-sample FLOPs and parameters of a model.

    Attributes
    ----------
    flops : int
        Total FLOPs per sample.
    params : int
        Number of parameters (each tensor once).
    rows : list of (name, type, flops)
        One row per module call that costs FLOPs.
    """

    flops: int
    params: int
    rows: list

    def __str__(self) -> str:
        lines = [f"{'module':<32} {'type':<18} {'flops':>12}"]
        lines += [f"{n:<32} {t:<18} {f:>12,}" for n, t, f in self.rows]
        lines.append(f"{'total':<32} {'':<18} {self.flops:>12,}   params {self.params:,}")
        return "\n".join(lines)


def count_flops(model: nn.Module, sample: torch.Tensor) -> FlopsReport:
    """Count FLOPs per sample of ``model(sample)`` with forward hooks, and its parameters.

    Raises ParameterError for a leaf module whose cost is not known.
    """
    rows = []
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def post(module, args, out):
        f = module_flops(module, args[0] if args else out, out)
        if f is None:
            raise ParameterError(f"cannot count FLOPs of {type(module).__name__} ({names[module]!r})")
        if f:
            rows.append((names[module] or "(model)", type(module).__name__, int(f)))

    for m in model.modules():
        hooks.append(m.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return FlopsReport(sum(f for _, _, f in rows), int(params), rows)


def resnet_flops_model(model: nn.Module, image_size: int = 28, *, prune_stream: bool = True) -> FlopsModel:
    """The FLOPs model ``F(d, w, r) = sum_t c_t d^p w^q r^s`` of an unpruned :class:`ResNet`.

    Each counted module contributes its measured FLOPs ``c`` with powers: ``p = 1``
    inside removable blocks (``d`` = kept fraction of the removable blocks);
    ``q`` = number of its channel dimensions that width pruning shrinks
    (2 for convs between pruned channel sets, 1 for the stem, BatchNorm, ReLU,
    additions, pooling and the classifier weights, 0 for the classifier bias);
    ``s = 2`` on feature maps, 0 for the classifier. Exact at ratios where
    channel counts and feature-map sizes divide evenly; otherwise rounding
    makes the real count differ slightly (recount after rounding).
    """
    net, size, _ = unwrap(model)
    if size is not None or any(len(s) != n for s, n in zip(net.stages, net.base_depths)):
        raise ParameterError("resnet_flops_model needs the unpruned ResNet")
    report = count_flops(net, torch.zeros(1, net.stem[0].in_channels, image_size, image_size))
    removable = {n for n, m in net.named_modules() if isinstance(m, BasicBlock) and m.removable}
    stream = 1 if prune_stream else 0
    coef, powers = [], []
    for name, kind, f in report.rows:
        block = ".".join(name.split(".")[:3]) if name.startswith("stages.") else ""
        p = 1.0 if block in removable else 0.0
        leaf = name.split(".")[-1]
        if name == "fc":
            W = net.fc.in_features * net.fc.out_features
            coef += [W, f - W]
            powers += [[0.0, stream, 0.0], [0.0, 0.0, 0.0]]
            continue
        if name.startswith("stem."):
            q = stream
        elif leaf in ("conv1", "conv2"):
            q = 1 + stream
        elif leaf in ("bn1", "relu1"):
            q = 1
        elif ".shortcut." in name + ".":
            q = 2 * stream if kind == "Conv2d" else stream
        else:  # bn2, relu2, the residual addition, pooling
            q = stream
        coef.append(f)
        powers.append([p, float(q), 2.0])
    return FlopsModel(np.array(coef, dtype=np.float64), np.array(powers))
