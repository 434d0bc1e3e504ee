"""Undo everything done to a model: parameters, buffers, hooks and reparametrizations.

:class:`ModelSnapshot` records, for every submodule, its attribute dictionary
(with copies of the contents of the containers inside it: ``_parameters``,
``_buffers``, ``_modules``, the hook dictionaries, ...) and a clone of every
parameter and buffer value. :meth:`ModelSnapshot.restore` puts back the same
objects, containers included (so optimizers holding parameters and hook
handles holding their hook dictionaries keep working), with their old
contents and values, and removes anything added since
(``weight_orig``/``weight_mask``, pruning pre-hooks, plain attributes).
"""
from __future__ import annotations

import torch
from torch import nn


_CONTAINERS = (dict, set, list)


def _contents(d: dict) -> dict:
    """Copies of the containers among the attribute values (key -> copy)."""
    return {k: v.copy() for k, v in d.items() if isinstance(v, _CONTAINERS)}


def _refill(container, contents) -> None:
    """Give ``container`` back its recorded ``contents``, in place."""
    container.clear()
    if isinstance(container, list):
        container.extend(contents)
    else:
        container.update(contents)


class ModelSnapshot:
    """Everything needed to bring ``model`` back to the state it has now."""

    def __init__(self, model: nn.Module):
        self._modules = [(m, dict(m.__dict__), _contents(m.__dict__)) for m in model.modules()]
        seen = {}
        for m in model.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None and id(t) not in seen:
                    seen[id(t)] = (t, t.detach().clone())
        self._tensors = list(seen.values())
        self._values = {key: value for key, (_, value) in seen.items()}

    def recorded(self, tensor: torch.Tensor) -> torch.Tensor:
        """The value ``tensor`` (a parameter or buffer of the model) had when the snapshot was taken."""
        return self._values[id(tensor)]

    def restore(self) -> None:
        """Put back the recorded structure and values."""
        for m, attributes, contents in self._modules:
            m.__dict__.clear()
            m.__dict__.update(attributes)
            for key, saved in contents.items():
                _refill(attributes[key], saved)
        with torch.no_grad():
            for t, value in self._tensors:
                if t.shape == value.shape:
                    t.copy_(value)
                else:
                    t.data = value.clone()
