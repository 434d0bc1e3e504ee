"""The fused in-projection of ``nn.MultiheadAttention`` as a layer named ``<attention>.in_proj``.

Called as self-attention (query, key and value the same tensor ``X``, as
``nn.TransformerEncoderLayer`` and torchvision's ViT call it), the attention
module computes ``[Q K V] = X W^T + 1 b^T`` with ``W = in_proj_weight``
``(3E, E)`` and ``b = in_proj_bias`` ``(3E,)``: one linear map ``E -> 3E``
whose rows are the tokens. Rows are taken in (batch, token) order whatever
``batch_first`` is, so a batch's ``attention_mask`` drops padded tokens as it
does for every other layer, and so does the call's own ``key_padding_mask``
(:func:`.attention.token_rows`).

:class:`InProjection` is a stateless view of that map (nothing is added to
the model): its ``weight``/``bias`` are the attention module's tensors, so
the solved values go into ``in_proj_weight``/``in_proj_bias`` and the mask
onto the attention module (``in_proj_weight_orig``, ``in_proj_weight_mask``,
applied by the module's own pre-hook, hence kept through fine-tuning).
Attention modules with separate q/k/v weights, and those called as
cross-attention (key/value other tensors than the query), are left dense and
reported in ``PruneReport.skipped``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError

from .batches import model_batches, module_device
from .modes import eval_mode

SUFFIX = "in_proj"


class InProjection:
    """View of ``attention``'s fused in-projection ``Y = X W^T + b`` (``W = in_proj_weight``)."""

    def __init__(self, attention: nn.MultiheadAttention):
        self.attention = attention

    @property
    def weight(self):
        return self.attention.in_proj_weight

    @property
    def bias(self):
        return self.attention.in_proj_bias

    @property
    def weight_orig(self):
        """The solved-into tensor under a pruning reparametrization of ``in_proj_weight`` (else None)."""
        return getattr(self.attention, "in_proj_weight_orig", None)


def layer_name(attention_name: str) -> str:
    return f"{attention_name}.{SUFFIX}" if attention_name else SUFFIX


def named_layers(model: nn.Module) -> "OrderedDict[str, object]":
    """``model.named_modules()`` plus an :class:`InProjection` right after every ``nn.MultiheadAttention``."""
    out = OrderedDict()
    for name, module in model.named_modules():
        out[name] = module
        if isinstance(module, nn.MultiheadAttention):
            out[layer_name(name)] = InProjection(module)
    return out


def rows(m: InProjection, t: torch.Tensor) -> torch.Tensor:
    """``(..., F)`` query-shaped tensor as ``(1, P, F)`` rows in (batch, token) order (a new tensor)."""
    if t.dim() == 3 and not m.attention.batch_first:
        t = t.transpose(0, 1)
    return t.reshape(-1, t.shape[-1]).unsqueeze(0).clone()


def refusal(m: InProjection):
    """Why the view cannot be pruned (None when it can)."""
    if not m.attention._qkv_same_embed_dim or m.attention.in_proj_weight is None:
        return ("separate q/k/v projection weights (kdim or vdim differs from embed_dim); only a fused "
                "in_proj_weight is pruned; left dense")
    return None


def attention_inputs(args, kwargs) -> tuple:
    """``(query, key, value)`` of one ``nn.MultiheadAttention.forward`` call."""
    given = list(args[:3])
    return tuple(given + [kwargs.get(k) for k in ("query", "key", "value")[len(given):]])


def self_attention_input(name: str, args, kwargs) -> torch.Tensor:
    """The query ``X`` of a self-attention call; ParameterError naming the layer for cross-attention."""
    query, key, value = attention_inputs(args, kwargs)
    if not (query is key and key is value):
        raise ParameterError(f"layer {name!r}: the attention module is called with key/value other than the "
                             "query (cross-attention); its in-projection is pruned only for self-attention")
    return query


def cross_attention_layers(model: nn.Module, layers: dict, data) -> dict:
    """In-projections among ``layers`` whose attention module gets key/value other than the query on the
    first calibration batch (in eval mode, no grad): ``name -> reason``."""
    views = {n: m for n, m in layers.items() if isinstance(m, InProjection)}
    if not views:
        return {}
    self_calls = {n: [] for n in views}
    handles = [
        m.attention.register_forward_pre_hook(
            lambda mod, a, k, n=n: self_calls[n].append(len(set(map(id, attention_inputs(a, k)))) == 1),
            with_kwargs=True)
        for n, m in views.items()
    ]
    try:
        with eval_mode(model), torch.no_grad():
            next(iter(model_batches(model, data, module_device(model))))(model)
    finally:
        for h in handles:
            h.remove()
    return {n: "cross-attention (key/value other than the query); its in-projection is pruned only for "
               "self-attention; left dense" for n, calls in self_calls.items() if not all(calls)}
