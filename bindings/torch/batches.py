"""Calibration batches as users have them, turned into model calls.

An item of the calibration iterable is

- a tensor or array: ``model(x)``;
- a tuple or list ``(inputs, targets, ...)`` (a DataLoader over a
  TensorDataset): only ``inputs`` is used; ``inputs`` may itself be a tuple
  of positional arguments (``model(*inputs)``) or a dict;
- a mapping (dict, transformers' ``BatchEncoding``): ``model(**batch)``,
  without ``labels`` and without keys the model's ``forward`` does not take.

An ``attention_mask`` of shape ``(B, T)`` marks the real tokens: every layer
whose rows are the ``B x T`` token positions keeps only the rows where the
mask is nonzero, so padding never enters a statistic. torch's
``nn.TransformerEncoder`` takes the opposite, a ``src_key_padding_mask``
(True, or nonzero, at padding); it is read the same way, in the row order
of the model's ``nn.MultiheadAttention`` (``(T, B)`` unless ``batch_first``). Models whose
``forward`` takes ``use_cache`` are called with ``use_cache=False`` (a
key/value cache would grow with every calibration pass).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from layertrim.solvers.base.errors import EmptyDataError

#: mapping keys that are training targets, never model inputs
TARGET_KEYS = ("labels", "label")
#: mapping key of torch's encoders for a (B, T) mask that is True (or nonzero) at padded positions
PADDING_KEY = "src_key_padding_mask"


@dataclass
class Batch:
    """One model call: positional ``args``, keyword ``kwargs``, and the token ``mask`` (or None)."""

    args: tuple
    kwargs: dict
    mask: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return Batch(tuple(move(a) for a in self.args), {k: move(v) for k, v in self.kwargs.items()},
                     None if self.mask is None else self.mask.to(device))

    def __call__(self, model: nn.Module):
        return model(*self.args, **self.kwargs)

    def keep(self) -> torch.Tensor | None:
        """Flat boolean mask of the real token positions (``B * T``), or None."""
        return None if self.mask is None else self.mask.reshape(-1).cpu() != 0

    def describe(self) -> str:
        """Shapes and dtypes of the tensors, for error messages."""
        def one(v):
            return f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" if isinstance(v, torch.Tensor) else \
                type(v).__name__
        parts = [one(a) for a in self.args] + [f"{k}={one(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


def _forward_parameters(model: nn.Module):
    """Names ``forward`` accepts, or None when it takes ``**kwargs``."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None, "use_cache" in params
    return set(params), "use_cache" in params


def _tensor(v):
    return torch.as_tensor(v) if not isinstance(v, torch.Tensor) and hasattr(v, "__array__") else v


def _is_token_mask(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 2


def _from_mapping(item: Mapping, accepted, batch_first: bool) -> Batch:
    kwargs = {k: _tensor(v) for k, v in item.items() if k not in TARGET_KEYS and (accepted is None or k in accepted)}
    if not kwargs:
        raise EmptyDataError(f"a calibration batch has no model input among its keys {sorted(item)}")
    mask, pad = kwargs.get("attention_mask"), kwargs.get(PADDING_KEY)
    if not _is_token_mask(mask):
        mask = None if not _is_token_mask(pad) else (pad == 0) if batch_first else (pad == 0).T
    return Batch((), kwargs, mask)


def _batch_first(model: nn.Module) -> bool:
    """False when the model's ``nn.MultiheadAttention`` modules take ``(T, B, E)`` inputs."""
    return all(m.batch_first for m in model.modules() if isinstance(m, nn.MultiheadAttention))


def to_batch(item, accepted=None, batch_first: bool = True) -> Batch:
    """One calibration item as a :class:`Batch` (rules in the module docstring)."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise EmptyDataError("the calibration data yielded an empty tuple")
        item = item[0]
        if isinstance(item, (tuple, list)):
            return Batch(tuple(_tensor(v) for v in item), {})
    if isinstance(item, Mapping):
        return _from_mapping(item, accepted, batch_first)
    return Batch((torch.as_tensor(item),), {})


def model_batches(model: nn.Module, data: Iterable, device=None):
    """The calibration items as :class:`Batch` es ready for ``model`` (on ``device``)."""
    accepted, caches = _forward_parameters(model)
    batch_first = _batch_first(model)
    for item in data:
        batch = to_batch(item, accepted, batch_first)
        if caches and "use_cache" not in batch.kwargs:
            batch.kwargs["use_cache"] = False
        yield batch if device is None else batch.to(device)


def module_device(model: nn.Module):
    """Device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def reusable(data: Iterable):
    """``data`` itself when it can be iterated again, else its items in a list."""
    if iter(data) is data:
        return list(data)
    return data


def _head(value, n: int):
    """The first ``n`` samples of one batch element (tensors along dim 0; containers element-wise)."""
    if isinstance(value, torch.Tensor) or hasattr(value, "__array__"):
        return value[:n]
    if isinstance(value, (tuple, list)):
        return type(value)(_head(v, n) for v in value)
    if isinstance(value, Mapping):
        return {k: _head(v, n) for k, v in value.items()}
    return value


def _batch_size(item) -> int:
    batch = to_batch(item)
    first = next((v for v in list(batch.args) + list(batch.kwargs.values()) if isinstance(v, torch.Tensor)), None)
    if first is None or first.dim() == 0:
        raise EmptyDataError("num_samples needs batches whose inputs are tensors with a batch dimension")
    return int(first.shape[0])


def first_samples(data: Iterable, num_samples=None) -> list | Iterable:
    """The calibration items holding the first ``num_samples`` samples (the last item cut); all when None."""
    if num_samples is None:
        return data
    out, left = [], num_samples
    for item in data:
        if left <= 0:
            break
        size = _batch_size(item)
        out.append(item if size <= left else _head(item, left))
        left -= size
    return out


def _token_counts(item) -> torch.Tensor:
    """Real tokens per sample: the attention mask's ones, else ``T`` of a ``(B, T, ...)`` input (1 for ``(B,)``)."""
    batch = to_batch(item)
    if batch.mask is not None:
        return (batch.mask != 0).sum(dim=1)
    B = _batch_size(item)
    first = next(v for v in list(batch.args) + list(batch.kwargs.values()) if isinstance(v, torch.Tensor))
    return torch.full((B,), int(first.shape[1]) if first.dim() >= 2 else 1)


def first_tokens(data: Iterable, max_tokens=None) -> list | Iterable:
    """The calibration items holding the first whole samples with at most ``max_tokens`` tokens in all."""
    if max_tokens is None:
        return data
    out, left, counts = [], max_tokens, None
    for item in data:
        counts = _token_counts(item)
        fit = int((counts.cumsum(0) <= left).sum())
        if fit:
            out.append(item if fit == len(counts) else _head(item, fit))
            left -= int(counts[:fit].sum())
        if fit < len(counts):
            break
    if not out:
        first = "no data" if counts is None else f"{int(counts[0])} tokens in the first sample"
        raise EmptyDataError(f"max_tokens={max_tokens} holds no whole sample ({first})")
    return out
