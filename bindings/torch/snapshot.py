"""Undo everything done to a model: parameters, buffers, hooks and reparametrizations.

:class:`ModelSnapshot` records, for every submodule, its attribute dictionary
(with copies of the containers inside it: ``_parameters``, ``_buffers``,
``_modules``, the hook dictionaries, ...) and a clone of every parameter and
buffer value. :meth:`ModelSnapshot.restore` puts back the same objects
(so optimizers holding references keep working) with their old values and
removes anything added since (``weight_orig``/``weight_mask``, pruning
pre-hooks, plain attributes).
"""
from __future__ import annotations

import torch
from torch import nn


def _copy_containers(d: dict) -> dict:
    return {k: (v.copy() if isinstance(v, (dict, set, list)) else v) for k, v in d.items()}


class ModelSnapshot:
    """Everything needed to bring ``model`` back to the state it has now."""

    def __init__(self, model: nn.Module):
        self._modules = [(m, _copy_containers(m.__dict__)) for m in model.modules()]
        seen = {}
        for m in model.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None and id(t) not in seen:
                    seen[id(t)] = (t, t.detach().clone())
        self._tensors = list(seen.values())

    def restore(self) -> None:
        """Put back the recorded structure and values."""
        for m, d in self._modules:
            m.__dict__.clear()
            m.__dict__.update(_copy_containers(d))
        with torch.no_grad():
            for t, value in self._tensors:
                if t.shape == value.shape:
                    t.copy_(value)
                else:
                    t.data = value.clone()
