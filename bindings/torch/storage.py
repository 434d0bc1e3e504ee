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
import os
from pathlib import Path

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


class SparseFileError(ParameterError):
    """A file that is not a complete, consistent :func:`save_sparse` file."""


def _decode(key: str, entry) -> torch.Tensor:
    """One stored tensor, every field checked (kind, shape, positions in range, value count)."""
    if not isinstance(entry, dict) or entry.get("kind") not in ("dense", "bitmask", "indices"):
        raise SparseFileError(f"entry {key!r}: unknown tensor encoding")
    if entry["kind"] == "dense":
        if not isinstance(entry.get("value"), torch.Tensor):
            raise SparseFileError(f"entry {key!r}: dense entry without a tensor")
        return entry["value"]
    shape, values, positions = entry.get("shape"), entry.get("values"), entry.get("positions")
    if (not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape)
            or not isinstance(values, torch.Tensor) or values.dim() != 1 or not isinstance(positions, torch.Tensor)):
        raise SparseFileError(f"entry {key!r}: malformed sparse entry")
    numel = math.prod(shape)
    out = torch.zeros(numel, dtype=values.dtype)
    if entry["kind"] == "bitmask":
        if positions.dtype != torch.uint8 or positions.numel() != math.ceil(numel / 8):
            raise SparseFileError(f"entry {key!r}: bit mask of the wrong size")
        mask = torch.from_numpy(np.unpackbits(positions.numpy(), count=numel).astype(bool))
        if int(mask.sum()) != values.numel():
            raise SparseFileError(f"entry {key!r}: {int(mask.sum())} positions but {values.numel()} values")
        out[mask] = values
    else:
        idx = positions.long()
        if idx.dim() != 1 or idx.numel() != values.numel() or (idx.numel() and (idx.min() < 0 or idx.max() >= numel)):
            raise SparseFileError(f"entry {key!r}: indices out of range or not one per value")
        out[idx] = values
    return out.reshape(shape)


def _read(path) -> dict:
    """The stored state of a :func:`save_sparse` file, decoded (SparseFileError otherwise)."""
    try:
        blob = torch.load(path, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # truncated, empty, random bytes, a pickle needing code: torch raises many kinds
        raise SparseFileError(f"{path} is not a readable {FORMAT} file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not isinstance(blob.get("tensors"), dict):
        raise SparseFileError(f"{path} is not a {FORMAT} file")
    return {key: _decode(key, entry) for key, entry in blob["tensors"].items()}


def _load_plan(own: dict, state: dict) -> list:
    """``(model tensor, value)`` pairs for every entry, all checked before anything is written."""
    missing = [k for k in own if k not in state and not k.endswith(("_orig", "_mask"))]
    missing += [k[: -len("_orig")] for k in own if k.endswith("_orig") and k[: -len("_orig")] not in state]
    if missing:
        raise ShapeError(f"the file lacks entries the model needs: {missing}")
    plan = []
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
            plan.append((own[k], v))
    return plan


def save_sparse(model: nn.Module, path) -> None:
    """Write ``model``'s effective state compactly to ``path`` (see the module notes).

    ``path`` is a file name (written to a temporary file, then renamed: an
    existing file is replaced whole or not at all) or a writable binary buffer.
    """
    blob = {"format": FORMAT, "version": VERSION,
            "tensors": {key: _encode(value) for key, value in effective_state(model).items()}}
    if not isinstance(path, (str, os.PathLike)):
        torch.save(blob, path)
        return
    path = Path(path)
    check_writable(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_writable(path: Path) -> None:
    """ParameterError unless ``path`` can be created or replaced (checked before any work)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ParameterError(f"cannot write {path}: it is a folder")
    if not parent.is_dir():
        raise ParameterError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ParameterError(f"cannot write {path}: permission denied")


def load_sparse(path, model: nn.Module | None = None):
    """Read a file written by :func:`save_sparse` (with ``weights_only=True``).

    Returns the dense state dict; with ``model``, also loads it into the model
    (into ``weight_orig`` with a matching ``weight_mask`` where the model
    holds a pruning reparametrization) and returns the model. The whole file
    is checked against the model before anything is written: a failed load
    leaves the model unchanged.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise ParameterError(f"load_sparse: model must be a torch nn.Module (or None), got {type(model).__name__}")
    state = _read(path)
    if model is None:
        return state
    plan = _load_plan(model.state_dict(), state)
    with torch.no_grad():
        for target, value in plan:
            target.copy_(value)
    return model
