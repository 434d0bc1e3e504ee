"""Compact files for pruned models: sparse tensors as positions + values.

The file is a plain dict of tensors, lists and strings, so it loads with
``torch.load(path, weights_only=True)``. Each tensor of the model's state is
stored under its plain name (``weight``, never ``weight_orig``/``weight_mask``:
the effective, masked values are saved, so the file also loads into an
unpruned model). A tensor with many zeros is stored sparse, in the smaller of
two encodings: a bit mask of the nonzero positions (``numel / 8`` bytes) or
their flat indices (4 bytes each), plus the nonzero values; the file shrinks
with sparsity.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError, ShapeError

FORMAT = "layertrim-sparse"
VERSION = 1


def effective_state(model: nn.Module) -> dict:
    """``state_dict`` with every pruning reparametrization folded (``w = w_orig * w_mask``)."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            base = key[: -len("_orig")]
            out[base] = (value * state[base + "_mask"]).detach()
        else:
            out[key] = value.detach()
    return out


def _encode(t: torch.Tensor) -> dict:
    flat = t.reshape(-1).cpu()
    nz = torch.nonzero(flat, as_tuple=True)[0]
    values = flat[nz].clone()
    dense_bytes = flat.numel() * flat.element_size()
    bitmask_bytes = math.ceil(flat.numel() / 8)
    index_bytes = 4 * nz.numel()
    if min(bitmask_bytes, index_bytes) + values.numel() * values.element_size() >= dense_bytes:
        return {"kind": "dense", "value": t.detach().cpu().clone()}
    entry = {"kind": "", "shape": list(t.shape), "values": values}
    if bitmask_bytes <= index_bytes:
        bits = np.packbits((flat != 0).numpy())
        entry.update(kind="bitmask", positions=torch.from_numpy(bits))
    else:
        entry.update(kind="indices", positions=nz.to(torch.int32) if flat.numel() < 2**31 else nz)
    return entry


def _decode(entry: dict) -> torch.Tensor:
    kind = entry["kind"]
    if kind == "dense":
        return entry["value"]
    shape, values = entry["shape"], entry["values"]
    numel = math.prod(shape)
    out = torch.zeros(numel, dtype=values.dtype)
    if kind == "bitmask":
        mask = np.unpackbits(entry["positions"].numpy(), count=numel).astype(bool)
        out[torch.from_numpy(mask)] = values
    elif kind == "indices":
        out[entry["positions"].long()] = values
    else:
        raise ParameterError(f"unknown tensor encoding {kind!r}")
    return out.reshape(shape)


def save_sparse(model: nn.Module, path) -> None:
    """Write ``model``'s effective state compactly to ``path`` (see the module notes)."""
    tensors = {key: _encode(value) for key, value in effective_state(model).items()}
    torch.save({"format": FORMAT, "version": VERSION, "tensors": tensors}, path)


def load_sparse(path, model: nn.Module | None = None):
    """Read a file written by :func:`save_sparse` (with ``weights_only=True``).

    Returns the dense state dict; with ``model``, also loads it into the model
    (into ``weight_orig`` with a matching ``weight_mask`` where the model
    holds a pruning reparametrization) and returns the model.
    """
    blob = torch.load(path, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ParameterError(f"{path} is not a {FORMAT} file")
    state = {key: _decode(entry) for key, entry in blob["tensors"].items()}
    if model is None:
        return state
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(("_orig", "_mask"))]
    missing += [k[: -len("_orig")] for k in own if k.endswith("_orig") and k[: -len("_orig")] not in state]
    if missing:
        raise ShapeError(f"the file lacks entries the model needs: {missing}")
    with torch.no_grad():
        for key, value in state.items():
            if key + "_orig" in own:
                targets = {key + "_orig": value, key + "_mask": (value != 0).to(own[key + "_mask"].dtype)}
            elif key in own:
                targets = {key: value}
            else:
                raise ShapeError(f"the model has no entry {key!r} stored in the file")
            for k, v in targets.items():
                if own[k].shape != v.shape:
                    raise ShapeError(f"{k}: the file holds shape {tuple(v.shape)}, the model {tuple(own[k].shape)}")
                own[k].copy_(v)
    return model
