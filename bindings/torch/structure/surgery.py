"""Model surgery for three-dimensional pruning: physically smaller networks
along depth (whole residual blocks), width (channels) and resolution (inputs).

Every function returns a new model and leaves its argument unchanged. Ratios
are relative to the unpruned network (``ResNet.base_depths``,
``ResNet.base_widths``, ``BasicBlock.base_mid``, ``Resized.base_size``), so
pruning an already pruned model to a ratio gives the same sizes as pruning
the original to it — which is what iterative pruning needs. Width keeps every
dependent layer consistent (the tied channels of the residual streams, see
:mod:`.channels`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layertrim.solvers.base.errors import ParameterError, ShapeError
from layertrim.solvers.base.validation import check_choice, check_scalar

from .channels import _forward_with_hooks, _prune_inner, _prune_streams
from .resnet import BasicBlock, ResNet

CRITERIA = ("l1", "bn", "lsq")


class Resized(nn.Module):
    """``model(resize(x, size))``: bilinear resizing of the input images to ``size x size``.

    A network that ends in global average pooling accepts any resolution, so
    the wrapped model needs no change. ``base_size`` is the original
    resolution, ``ratio = size / base_size``.
    """

    def __init__(self, model: nn.Module, size: int, base_size: int):
        super().__init__()
        self.model = model
        self.size = int(size)
        self.base_size = int(base_size)

    @property
    def ratio(self) -> float:
        return self.size / self.base_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)


def unwrap(model: nn.Module) -> tuple[ResNet, int | None, int | None]:
    """``(resnet, size, base_size)``: the network inside an optional :class:`Resized`."""
    if isinstance(model, Resized):
        net, size, base = model.model, model.size, model.base_size
    else:
        net, size, base = model, None, None
    if not isinstance(net, ResNet):
        raise ParameterError(f"surgery supports ResNet models (optionally Resized), got {type(net).__name__}")
    return net, size, base


def rewrap(net: ResNet, size: int | None, base: int | None) -> nn.Module:
    """Inverse of :func:`unwrap`: no wrapper at full resolution."""
    return net if size is None or size == base else Resized(net, size, base)


# --- resolution --------------------------------------------------------------


def prune_resolution(model: nn.Module, ratio: float, *, base_size: int = 28) -> nn.Module:
    """A copy of ``model`` that resizes its inputs to ``round(ratio * base_size)`` pixels."""
    ratio = check_scalar(ratio, "ratio", low=0.0, high=1.0, low_open=True)
    net, _, base = unwrap(model)
    base = base or base_size
    size = max(1, int(round(ratio * base)))
    return rewrap(copy.deepcopy(net), size, base)


# --- depth -------------------------------------------------------------------


def removable_blocks(net: ResNet) -> list[BasicBlock]:
    """Blocks with identity shortcuts (the ones depth pruning may remove)."""
    return [b for b in net.blocks() if b.removable]


def block_scores(model: nn.Module, data) -> dict[int, float]:
    """``||F(x)|| / ||x||`` of every removable block over calibration images ``data``.

    Keys are ``id(block)``; a small ratio means the block barely changes its
    input, so removing it (the identity remains) changes the network least.
    """
    net, _, _ = unwrap(model)
    blocks = removable_blocks(net)
    num = {id(b): 0.0 for b in blocks}
    den = {id(b): 0.0 for b in blocks}

    def add(acc, key, t):
        acc[key] += float(t.double().pow(2).sum())

    hooks = []
    for b in blocks:
        hooks.append(b.register_forward_hook(lambda m, inp, out: add(den, id(m), inp[0])))
        hooks.append(b.bn2.register_forward_hook(lambda m, inp, out, key=id(b): add(num, key, out)))
    _forward_with_hooks(model, data, hooks)
    return {k: float(np.sqrt(num[k] / max(den[k], 1e-300))) for k in num}


def prune_depth(model: nn.Module, ratio: float, data) -> nn.Module:
    """A copy of ``model`` keeping ``round(ratio * base_removable)`` of the removable blocks.

    Criterion: the blocks with the smallest residual ratio ``||F(x)|| / ||x||``
    on the calibration images ``data`` (:func:`block_scores`) are removed;
    blocks with a projection shortcut are never removed.
    """
    ratio = check_scalar(ratio, "ratio", low=0.0, high=1.0)
    net, size, base = unwrap(model)
    keep = int(round(ratio * net.base_removable))
    candidates = removable_blocks(net)
    n_remove = max(0, len(candidates) - keep)
    new = copy.deepcopy(net)
    if n_remove:
        scores = block_scores(model, data)
        order = sorted(range(len(candidates)), key=lambda i: scores[id(candidates[i])])
        drop = {id(b) for i, b in enumerate(removable_blocks(new)) if i in set(order[:n_remove])}
        for s, stage in enumerate(new.stages):
            new.stages[s] = nn.Sequential(*[b for b in stage if id(b) not in drop])
    return rewrap(new, size, base)


# --- width -------------------------------------------------------------------


def prune_width(model: nn.Module, ratio, *, criterion: str = "l1", data=None, prune_stream: bool = True,
                max_rows: int = 8192, seed: int = 0) -> nn.Module:
    """A copy of ``model`` keeping ``round(ratio * base)`` channels of every prunable channel set.

    Parameters
    ----------
    model : ResNet or Resized(ResNet)
    ratio : float in (0, 1], or one such float per stage
        Kept fraction of the unpruned channel counts (at least one channel
        stays); per stage, it applies to the stage's residual stream and the
        inner channels of its blocks.
    criterion : {"l1", "bn", "lsq"}
        ``"l1"``: L1 norm of the filters writing the channel (summed over the
        tied layers of a residual stream); ``"bn"``: ``|gamma|`` of the
        BatchNorms writing it (network slimming); ``"lsq"``: inner channels by
        least-squares channel selection on calibration data (greedy backward
        elimination of ``conv2``'s input channels, see
        :func:`layertrim.solvers.threshold.channel_selection.backward_group_selection`)
        with the least-squares refit of ``conv2`` written back, and residual
        streams by their mean squared activation.
    data : tensor (n, 1, H, W)
        Calibration images (required for ``"lsq"``).
    prune_stream : bool
        Also prune the residual streams (tied channels); ``False`` keeps them.
    max_rows : int
        Positions sampled (seeded) per block for the least-squares statistics.
    """
    check_choice(criterion, "criterion", CRITERIA)
    if criterion == "lsq" and data is None:
        raise ParameterError("criterion='lsq' needs calibration images: pass data=")
    net, size, base = unwrap(model)
    per_stage = np.ravel(np.asarray(ratio, dtype=np.float64))
    if per_stage.size == 1:
        per_stage = np.repeat(per_stage, len(net.stages))
    if per_stage.size != len(net.stages):
        raise ShapeError(f"ratio needs one value or one per stage ({len(net.stages)}), got {per_stage.size}")
    ratios = [check_scalar(float(v), "ratio", low=0.0, high=1.0, low_open=True) for v in per_stage]
    new = rewrap(copy.deepcopy(net), size, base)
    new_net, _, _ = unwrap(new)
    if prune_stream:
        _prune_streams(new, new_net, ratios, criterion, data)
    _prune_inner(new, new_net, ratios, criterion, data, max_rows, seed)
    return new


def prune_3d(model: nn.Module, d: float, w: float, r: float, *, data, criterion: str = "l1",
             base_size: int = 28, **width_kw) -> nn.Module:
    """Prune along all three dimensions: depth to ``d``, then width to ``w``, then resolution to ``r``.

    Depth and width scores are measured with ``data`` resized to the model's
    current resolution (the wrapper does it); the resolution is changed last.
    """
    out = prune_depth(model, d, data)
    out = prune_width(out, w, criterion=criterion, data=data, **width_kw)
    return prune_resolution(out, r, base_size=base_size)
