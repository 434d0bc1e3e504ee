"""Layers as regression problems, one adapter per layer kind.

A layer with ``g`` groups is ``g`` independent problems. For group ``j``

``Y_j = X_j W_j + 1 b_j^T``,  ``X_j (P, K)``, ``W_j (K, M_g)``, ``Y_j (P, M_g)``,

where a row is one (sample, output position) pair. A :class:`LayerKind` says
how a module of its kind turns its input into rows ``X_j`` (``unfold``), its
output into rows ``Y_j`` (``rows``), and which tensor holds ``W``:

- ``nn.Linear``: ``g = 1``, ``K = in_features``, every leading dimension
  (batch, tokens) becomes rows;
- transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored as
  ``(in, out)``, i.e. already ``W``;
- ``nn.Conv1d``/``nn.Conv2d``: ``K = (C_in / g) * prod(kernel_size)``
  (channel-major, then kernel offsets: the order of ``weight.reshape(C_out,
  -1)``); the input is padded exactly as the layer pads it and unfolded with
  its stride and dilation;
- the fused in-projection of ``nn.MultiheadAttention`` (``<attention>.in_proj``,
  a view holding no tensors of its own, :mod:`.in_projection`): ``g = 1``,
  ``K = E``, ``M = 3E``, rows the query tokens; selected by name or pattern
  only (``by_default=False``), its weight lives on the attention module.

:func:`register_kind` adds a kind (first match wins, newest first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from layertrim.solvers.base.errors import ParameterError

from . import in_projection
from .in_projection import named_layers  # noqa: F401  (the name -> layer lookup of every module)


@dataclass(frozen=True)
class LayerKind:
    """How one kind of layer is a regression problem.

    ``groups(m)`` is ``g``; ``unfold(m, x)`` gives ``(g, P, K)`` and
    ``rows(m, y)`` ``(g, P, M_g)`` (new tensors); ``to_matrices(m, w)`` maps
    the weight tensor to ``(g, K, M_g)`` and ``from_matrices(m, W)`` back.
    ``site(m)`` is ``(owner, attribute)``: where the weight and its mask live
    (``(m, "weight")``, or the parent of a pseudo-layer); ``refusal(m)`` a
    reason the layer is left dense (None: prunable); ``by_default`` whether
    ``layers=None`` selects the kind.
    """

    name: str
    matches: Callable
    groups: Callable
    unfold: Callable
    rows: Callable
    to_matrices: Callable
    from_matrices: Callable
    site: Callable = lambda m: (m, "weight")
    refusal: Callable = lambda m: None
    by_default: bool = True


def _linear_unfold(m, x):
    return x.reshape(-1, x.shape[-1]).unsqueeze(0).clone()


def _linear_rows(m, y):
    return y.reshape(-1, y.shape[-1]).unsqueeze(0).clone()


def _is_hf_conv1d(m) -> bool:
    """transformers.pytorch_utils.Conv1D, recognised without importing transformers."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) is not None


def _conv_geometry(module: nn.Module, x: torch.Tensor):
    """Input and geometry of a Conv1d/Conv2d as a 2-D problem (Conv1d gets height 1)."""
    if isinstance(module, nn.Conv1d):
        return x.unsqueeze(-2), (1, module.kernel_size[0]), (1, module.stride[0]), (1, module.dilation[0])
    return x, module.kernel_size, module.stride, module.dilation


def _unbatched(module, t) -> bool:
    return t.dim() == (2 if isinstance(module, nn.Conv1d) else 3)


def _conv_unfold(module, x):
    if _unbatched(module, x):
        x = x.unsqueeze(0)
    pad = module._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    x2, kernel, stride, dilation = _conv_geometry(module, x)
    cols = F.unfold(x2, kernel, dilation=dilation, stride=stride)  # (B, C_in * k, L)
    g = module.groups
    B, _, L = cols.shape
    cols = cols.reshape(B, g, -1, L).permute(1, 0, 3, 2)  # (g, B, L, K)
    return cols.reshape(g, B * L, -1)


def _conv_rows(module, y):
    if _unbatched(module, y):
        y = y.unsqueeze(0)
    g = module.groups
    B, C = y.shape[:2]
    y = y.reshape(B, g, C // g, -1).permute(1, 0, 3, 2)  # (g, B, L, M_g)
    return y.reshape(g, -1, C // g).clone()


def _out_first_to_matrices(m, w):
    g = 1 if isinstance(m, nn.Linear) else m.groups
    return w.reshape(g, w.shape[0] // g, -1).transpose(1, 2).contiguous()


def _out_first_from_matrices(m, W):
    return W.transpose(1, 2).reshape(m.weight.shape).contiguous()


#: the built-in kinds (a registered kind goes before them in :data:`KINDS`)
IN_PROJECTION = LayerKind(
    "MultiheadAttention.in_proj", lambda m: isinstance(m, in_projection.InProjection), lambda m: 1,
    in_projection.rows, in_projection.rows, lambda m, w: w.t().unsqueeze(0).contiguous(),
    lambda m, W: W[0].t().contiguous(), site=lambda m: (m.attention, "in_proj_weight"),
    refusal=in_projection.refusal, by_default=False)
LINEAR = LayerKind("Linear", lambda m: isinstance(m, nn.Linear), lambda m: 1, _linear_unfold, _linear_rows,
                   _out_first_to_matrices, _out_first_from_matrices)
HF_CONV1D = LayerKind("Conv1D", _is_hf_conv1d, lambda m: 1, _linear_unfold, _linear_rows,
                      lambda m, w: w.unsqueeze(0).contiguous(), lambda m, W: W[0].contiguous())
CONV = LayerKind("Conv", lambda m: isinstance(m, (nn.Conv1d, nn.Conv2d)), lambda m: m.groups, _conv_unfold,
                 _conv_rows, _out_first_to_matrices, _out_first_from_matrices)
KINDS: list = [IN_PROJECTION, LINEAR, HF_CONV1D, CONV]


def register_kind(kind: LayerKind) -> None:
    """Make a new layer kind prunable (checked before the built-in kinds)."""
    KINDS.insert(0, kind)


def kind_of(module: nn.Module):
    """The :class:`LayerKind` of ``module``, or None when it is not prunable."""
    return next((k for k in KINDS if k.matches(module)), None)


def check_supported(name: str, module: nn.Module) -> LayerKind:
    """The layer's kind; ParameterError naming the layer when no kind matches."""
    kind = kind_of(module)
    if kind is None:
        raise ParameterError(
            f"layer {name!r} is a {type(module).__name__}; prunable layer kinds are "
            f"{', '.join(k.name for k in KINDS)}"
        )
    return kind


def refused_layers(layers: dict) -> dict:
    """``name -> reason`` for the layers whose kind refuses them (e.g. q/k/v held as separate weights)."""
    reasons = {n: check_supported(n, m).refusal(m) for n, m in layers.items()}
    return {n: why for n, why in reasons.items() if why is not None}


def weight_site(module) -> tuple:
    """``(owner, attribute)`` of the layer's weight: ``owner.attribute`` is written and masked."""
    return check_supported("", module).site(module)


def weight_names(name: str, module) -> set:
    """Qualified parameter names of the layer's weight (plain and ``_orig``); a pseudo-layer's owner is its parent."""
    owner, attr = weight_site(module)
    prefix = name if owner is module else (name.rsplit(".", 1)[0] if "." in name else "")
    return {f"{prefix}.{a}" if prefix else a for a in (attr, attr + "_orig")}


def n_groups(module: nn.Module) -> int:
    """Number of independent problems (the conv ``groups``, 1 for Linear)."""
    return check_supported("", module).groups(module)


def unfold_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input ``x`` as rows per group, shape ``(g, P, K)`` (a new tensor)."""
    return check_supported("", module).unfold(module, x)


def output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Layer output ``y`` as rows per group, shape ``(g, P, M_g)`` (a new tensor)."""
    return check_supported("", module).rows(module, y)


def weight_matrices(module: nn.Module) -> torch.Tensor:
    """The layer's (effective) weight as ``(g, K, M_g)``: ``Y_j = X_j W_j + b_j``."""
    return check_supported("", module).to_matrices(module, module.weight.detach())


def bias_vectors(module: nn.Module):
    """The bias as ``(g, M_g)``, or None for a layer without bias."""
    if module.bias is None:
        return None
    return module.bias.detach().reshape(n_groups(module), -1).clone()


def weight_from_matrices(module: nn.Module, W: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weight_matrices`: ``(g, K, M_g)`` back to ``module.weight``'s shape."""
    return check_supported("", module).from_matrices(module, W)


def input_features(module: nn.Module) -> int:
    """``K``: the length of one row of the layer's input per group."""
    return int(weight_matrices(module).shape[1])
