"""Layers a parent calls functionally: the out- and in-projections of ``nn.MultiheadAttention``.

``nn.MultiheadAttention`` never calls its ``out_proj`` (a ``nn.Linear``); it
passes ``out_proj.weight`` to ``F.multi_head_attention_forward``. The
projection's input ``Z`` (the attention output, heads concatenated) is
recovered in a hook on the attention module by running it once more with
``out_proj`` set to the identity (``W = I``, ``b = 0``): then the output is
``Z`` itself, and the projection's output is ``Z W^T + b`` (``mha.forward`` is
called directly, so no hook fires twice). The fused in-projection
(``<attention>.in_proj``, :mod:`.in_projection`) reads the query of a
self-attention call in the same hook: ``Y = X W^T + b`` with the module's
``in_proj_weight``/``in_proj_bias`` as they are at that call. Both hand
their layer ``(P, E)`` token rows in (batch, token) order, without the tokens
that a self-attention call's ``key_padding_mask`` marks as padding
(:func:`token_rows`).

:func:`layer_hook` registers a hook ``fn(layer, x, y)`` for any prunable
layer, on the layer itself or on its attention host.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .in_projection import InProjection, attention_inputs, layer_name, self_attention_input


def attention_host(modules: dict, name: str):
    """The ``nn.MultiheadAttention`` whose ``out_proj`` or in-projection is layer ``name``, or None.

    ``modules`` maps names to modules, with or without the in-projection views.
    """
    prefix = name.rsplit(".", 1)[0] if "." in name else ""
    parent = modules.get(prefix)
    if not isinstance(parent, nn.MultiheadAttention):
        return None
    if name == layer_name(prefix) or parent.out_proj is modules.get(name):
        return parent
    return None


def projection_input(mha: nn.MultiheadAttention, args, kwargs) -> torch.Tensor:
    """``Z``: the attention output of this call before the out-projection.

    Runs ``mha.forward`` (no hooks fire) with ``out_proj`` holding ``I`` and
    ``0`` for the call; its values are restored afterwards.
    """
    proj = mha.out_proj
    saved = [(t, t.detach().clone()) for t in (proj.weight, proj.bias) if t is not None]
    with torch.no_grad():
        try:
            proj.weight.copy_(torch.eye(proj.weight.shape[0], dtype=proj.weight.dtype, device=proj.weight.device))
            if proj.bias is not None:
                proj.bias.zero_()
            return mha.forward(*args, **kwargs)[0]
        finally:
            for t, value in saved:
                t.copy_(value)


def _padding(mha: nn.MultiheadAttention, args, kwargs):
    """The call's ``key_padding_mask`` as a boolean "padded" tensor, or None.

    A boolean mask is True at padded keys; a float mask (``nn.TransformerEncoder``
    converts boolean ones) holds ``-inf`` there.
    """
    pad = kwargs.get("key_padding_mask", args[3] if len(args) > 3 else None)
    if pad is None:
        return None
    return pad if pad.dtype == torch.bool else torch.isneginf(pad)


def token_rows(mha: nn.MultiheadAttention, t: torch.Tensor, args, kwargs) -> torch.Tensor:
    """Query-shaped ``t`` as ``(P, E)`` rows in (batch, token) order, whatever ``batch_first`` is.

    For self-attention (key = query) the tokens that the call's
    ``key_padding_mask`` marks as padding are dropped: as keys they are
    ignored, so as queries they are padding too. Cross-attention keeps every
    query token (the mask is over the other sequence).
    """
    if t.dim() == 3 and not mha.batch_first:
        t = t.transpose(0, 1)
    rows = t.reshape(-1, t.shape[-1])
    query, key, _ = attention_inputs(args, kwargs)
    pad = _padding(mha, args, kwargs)
    if pad is None or key is not query or pad.numel() != rows.shape[0]:
        return rows
    return rows[~pad.reshape(-1).to(rows.device)]


def layer_hook(modules: dict, name: str, fn):
    """A forward hook calling ``fn(layer, x, y)`` with the layer's input and output; returns its handle."""
    host = attention_host(modules, name)
    layer = modules.get(name)
    if host is None:
        return layer.register_forward_hook(lambda m, args, output: fn(m, args[0], output))
    if layer is None or isinstance(layer, InProjection):  # the host's in-projection
        view = layer or InProjection(host)

        def on_in_projection(m, args, kwargs, output):
            x = token_rows(m, self_attention_input(name, args, kwargs), args, kwargs)
            fn(view, x, F.linear(x, m.in_proj_weight, m.in_proj_bias))

        return host.register_forward_hook(on_in_projection, with_kwargs=True)

    def on_attention(m, args, kwargs, output):
        z = token_rows(m, projection_input(m, args, kwargs), args, kwargs)
        fn(layer, z, F.linear(z, layer.weight, layer.bias))

    return host.register_forward_hook(on_attention, with_kwargs=True)


@contextmanager
def explicit_attention():
    """Turn off the fused fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``,
    which bypasses the submodules (and their hooks) in eval mode."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
