"""Width surgery in place: per-channel scores and the layer edits behind
:func:`.surgery.prune_width`, and the calibration forward pass the scores use.

Width keeps every dependent layer consistent:

- inner channels of a block (``conv1`` out, ``bn1``, ``conv2`` in) are pruned per block;
- the channels of a stage's residual stream are tied through the identity
  shortcuts: the stem or projection output, every block's ``conv2``/``bn2``
  output, every block's ``conv1`` input, the next stage's inputs and the
  classifier's inputs are pruned together, with one importance per channel
  summed over the tied layers.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from layertrim.solvers.threshold.channel_selection import backward_group_selection
from layertrim.solvers.base.errors import ShapeError
from layertrim.solvers.base.gram import GramStats

from .resnet import ResNet


def _batches(X, batch_size: int = 256):
    X = torch.as_tensor(X)
    for i in range(0, len(X), batch_size):
        yield X[i : i + batch_size]


def _forward_with_hooks(model: nn.Module, data, hooks) -> None:
    """Run ``model`` in eval mode over ``data``, then remove ``hooks`` and restore its mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for xb in _batches(data):
                model(xb)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)



def _conv(conv: nn.Conv2d, out_idx=None, in_idx=None, weight=None) -> nn.Conv2d:
    """A copy of ``conv`` restricted to output / input channels (or with a new weight)."""
    if conv.groups != 1:
        raise ShapeError("width surgery supports convolutions with groups=1")
    w = conv.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    if weight is not None:
        w = weight
    # skip_init: no default initialization (it would draw from torch's global generator); every value is copied
    new = skip_init(nn.Conv2d, w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new.weight.data.copy_(w)
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.detach() if out_idx is None else conv.bias.detach()[out_idx])
    return new


def _bn(bn: nn.BatchNorm2d, idx) -> nn.BatchNorm2d:
    """A copy of ``bn`` restricted to channels ``idx``."""
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.train(bn.training)
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[idx])
        new.bias.data.copy_(bn.bias.detach()[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _top(scores: np.ndarray, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in increasing channel order."""
    return torch.as_tensor(np.sort(np.argsort(-scores, kind="stable")[:k]), dtype=torch.long)


def _stream_layers(net: ResNet, s: int):
    """Writers ``[(conv, bn)]`` and readers ``[(block, part)]`` of stage ``s``'s residual stream."""
    stage = net.stages[s]
    writers = [(net.stem[0], net.stem[1])] if s == 0 else [(stage[0].shortcut[0], stage[0].shortcut[1])]
    writers += [(b.conv2, b.bn2) for b in stage]
    return writers


def _stream_energy(model: nn.Module, net: ResNet, data) -> list[np.ndarray]:
    """Mean squared activation per channel of each stage's residual stream (all its block outputs)."""
    energy = [np.zeros(net.stages[s][0].bn2.num_features if len(net.stages[s]) else net.stem[1].num_features)
              for s in range(len(net.stages))]

    def add(s, out):
        energy[s] += out.double().pow(2).mean(dim=(0, 2, 3)).numpy()

    hooks = []
    for s, stage in enumerate(net.stages):
        mods = list(stage) if len(stage) else [net.stem]
        for m in mods:
            hooks.append(m.register_forward_hook(lambda mod, inp, out, s=s: add(s, out)))
    _forward_with_hooks(model, data, hooks)
    return energy


def _prune_streams(model: nn.Module, net: ResNet, ratios, criterion: str, data) -> None:
    """Prune each stage's residual stream in place (``net`` is a private copy inside ``model``)."""
    energy = _stream_energy(model, net, data) if criterion == "lsq" else None
    keep_idx = []
    for s in range(len(net.stages)):
        writers = _stream_layers(net, s)
        n = writers[0][0].out_channels
        k = min(n, max(1, int(round(ratios[s] * net.base_widths[s]))))
        if criterion == "l1":
            scores = sum(c.weight.detach().abs().sum(dim=(1, 2, 3)).double().numpy() for c, _ in writers)
        elif criterion == "bn":
            scores = sum(b.weight.detach().abs().double().numpy() for _, b in writers)
        else:
            scores = energy[s]
        keep_idx.append(None if k == n else _top(scores, k))
    for s, idx in enumerate(keep_idx):
        if idx is None:
            continue
        stage = net.stages[s]
        if s == 0:
            net.stem[0] = _conv(net.stem[0], out_idx=idx)
            net.stem[1] = _bn(net.stem[1], idx)
        else:
            stage[0].shortcut[0] = _conv(stage[0].shortcut[0], out_idx=idx)
            stage[0].shortcut[1] = _bn(stage[0].shortcut[1], idx)
        for b in stage:
            b.conv2 = _conv(b.conv2, out_idx=idx)
            b.bn2 = _bn(b.bn2, idx)
            if b.shortcut is None:
                b.conv1 = _conv(b.conv1, in_idx=idx)
        if s + 1 < len(net.stages):
            nxt = net.stages[s + 1][0]
            nxt.conv1 = _conv(nxt.conv1, in_idx=idx)
            nxt.shortcut[0] = _conv(nxt.shortcut[0], in_idx=idx)
        else:
            fc = skip_init(nn.Linear, len(idx), net.fc.out_features, bias=net.fc.bias is not None)
            fc.weight.data.copy_(net.fc.weight.detach()[:, idx])
            if net.fc.bias is not None:
                fc.bias.data.copy_(net.fc.bias.detach())
            net.fc = fc


def _conv2_stats(model: nn.Module, net: ResNet, data, max_rows: int, seed: int) -> dict[int, GramStats]:
    """Per block: statistics of ``conv2``'s unfolded input (rows = positions) against its output."""
    gen = torch.Generator().manual_seed(seed)
    blocks = net.blocks()
    stats = {id(b): GramStats() for b in blocks}
    n_images = len(data)

    def hook(conv, inp, out, key):
        x = F.unfold(inp[0], conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C*k*k, L)
        X = x.transpose(1, 2).reshape(-1, x.shape[1])
        Y = out.flatten(2).transpose(1, 2).reshape(-1, out.shape[1])
        per_batch = max(1, int(np.ceil(max_rows * len(inp[0]) / n_images)))
        if X.shape[0] > per_batch:
            rows = torch.randperm(X.shape[0], generator=gen)[:per_batch]
            X, Y = X[rows], Y[rows]
        stats[key].update(X.double().numpy(), Y.double().numpy())

    hooks = [b.conv2.register_forward_hook(lambda m, i, o, key=id(b): hook(m, i, o, key)) for b in blocks]
    _forward_with_hooks(model, data, hooks)
    return stats


def _prune_inner(model: nn.Module, net: ResNet, ratios, criterion: str, data, max_rows: int, seed: int) -> None:
    """Prune the inner channels of every block in place; ``lsq`` refits ``conv2``."""
    stats = _conv2_stats(model, net, data, max_rows, seed) if criterion == "lsq" else None
    for b, ratio in [(b, ratios[s]) for s, stage in enumerate(net.stages) for b in stage]:
        n = b.conv1.out_channels
        k = min(n, max(1, int(round(ratio * b.base_mid))))
        if k == n:
            continue
        if criterion == "lsq":
            kh, kw = b.conv2.kernel_size
            res = backward_group_selection(stats[id(b)], n_groups=n, n_keep=k, intercept=True)
            idx = torch.as_tensor(res.info["kept"], dtype=torch.long)
            cols = np.concatenate([np.arange(g * kh * kw, (g + 1) * kh * kw) for g in res.info["kept"]])
            W = torch.as_tensor(res.W[cols].T.reshape(-1, k, kh, kw), dtype=b.conv2.weight.dtype)
            b.conv2 = _conv(b.conv2, in_idx=idx, weight=W)
            # the fitted intercept b_m shifts conv2's output: fold it into bn2's running mean
            b.bn2.running_mean.sub_(torch.as_tensor(res.b, dtype=b.bn2.running_mean.dtype))
        else:
            if criterion == "l1":
                scores = b.conv1.weight.detach().abs().sum(dim=(1, 2, 3)).double().numpy()
            else:
                scores = b.bn1.weight.detach().abs().double().numpy()
            idx = _top(scores, k)
            b.conv2 = _conv(b.conv2, in_idx=idx)
        b.conv1 = _conv(b.conv1, out_idx=idx)
        b.bn1 = _bn(b.bn1, idx)
