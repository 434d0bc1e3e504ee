"""Layers as regression problems: im2col views of ``nn.Linear``, ``nn.Conv1d`` and
``nn.Conv2d`` in the samples-as-rows convention of the core.

A layer with ``g`` groups is ``g`` independent problems. For group ``j``

``Y_j = X_j W_j + 1 b_j^T``,  ``X_j (P, K)``, ``W_j (K, M_g)``, ``Y_j (P, M_g)``,

where a row is one (sample, output position) pair. For a Linear layer ``g = 1``,
``K = in_features``, and every leading batch dimension becomes rows. For a
convolution, ``K = (C_in / g) * prod(kernel_size)`` (channel-major, then kernel
offsets: the order of ``weight.reshape(C_out, -1)``), and the input is padded
exactly as the layer pads it (``F.pad`` with the layer's padding mode) and then
unfolded with the layer's stride and dilation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layertrim.solvers.base.errors import ParameterError

#: layer types the binding can turn into regression problems
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def check_supported(name: str, module: nn.Module) -> None:
    """Raise ParameterError naming the layer when it is not Linear/Conv1d/Conv2d."""
    if not isinstance(module, SUPPORTED):
        raise ParameterError(
            f"layer {name!r} is a {type(module).__name__}; supported layer types are "
            f"{', '.join(t.__name__ for t in SUPPORTED)}"
        )


def n_groups(module: nn.Module) -> int:
    """Number of independent problems (the conv ``groups``, 1 for Linear)."""
    return 1 if isinstance(module, nn.Linear) else module.groups


def _as_2d_conv(module: nn.Module, x: torch.Tensor):
    """Input and geometry of a Conv1d/Conv2d as a 2-D problem (Conv1d gets height 1)."""
    if isinstance(module, nn.Conv1d):
        return x.unsqueeze(-2), (1, module.kernel_size[0]), (1, module.stride[0]), (1, module.dilation[0])
    return x, module.kernel_size, module.stride, module.dilation


def unfold_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input ``x`` as rows per group, shape ``(g, P, K)`` (a new tensor)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features).unsqueeze(0).clone()
    unbatched = x.dim() == (2 if isinstance(module, nn.Conv1d) else 3)
    if unbatched:
        x = x.unsqueeze(0)
    pad = module._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    x2, kernel, stride, dilation = _as_2d_conv(module, x)
    cols = F.unfold(x2, kernel, dilation=dilation, stride=stride)  # (B, C_in * k, L)
    g = module.groups
    B, _, L = cols.shape
    cols = cols.reshape(B, g, -1, L).permute(1, 0, 3, 2)  # (g, B, L, K)
    return cols.reshape(g, B * L, -1)


def output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Layer output ``y`` as rows per group, shape ``(g, P, M_g)`` (a new tensor)."""
    if isinstance(module, nn.Linear):
        return y.reshape(-1, module.out_features).unsqueeze(0).clone()
    unbatched = y.dim() == (2 if isinstance(module, nn.Conv1d) else 3)
    if unbatched:
        y = y.unsqueeze(0)
    g = module.groups
    B, C = y.shape[:2]
    y = y.reshape(B, g, C // g, -1).permute(1, 0, 3, 2)  # (g, B, L, M_g)
    return y.reshape(g, -1, C // g).clone()


def weight_matrices(module: nn.Module) -> torch.Tensor:
    """The layer's (effective) weight as ``(g, K, M_g)``: ``Y_j = X_j W_j + b_j``."""
    w = module.weight.detach()
    g = n_groups(module)
    return w.reshape(g, w.shape[0] // g, -1).transpose(1, 2).contiguous()


def bias_vectors(module: nn.Module):
    """The bias as ``(g, M_g)``, or None for a layer without bias."""
    if module.bias is None:
        return None
    g = n_groups(module)
    return module.bias.detach().reshape(g, -1).clone()


def weight_from_matrices(module: nn.Module, W: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weight_matrices`: ``(g, K, M_g)`` back to ``module.weight``'s shape."""
    shape = module.weight.shape
    return W.transpose(1, 2).reshape(shape).contiguous()
