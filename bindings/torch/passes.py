"""The forward passes of one calibration batch and the hooks that read them.

Inputs ``X`` of a layer come from ``model``; targets ``Y`` from ``dense``
(another model) or from ``model`` itself with some tensors swapped to other
values for a separate target pass (:class:`TargetSwap`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from layertrim.solvers.base.errors import ParameterError, ShapeError

from .attention import layer_hook
from .layers import named_layers, output_rows


class TargetSwap:
    """Runs a batch through ``model`` for targets (tensors at their target values) and for inputs."""

    def __init__(self, target_values):
        self.pairs = [(t, v) for t, v in target_values]
        self.current = [t.detach().clone() for t, _ in self.pairs]
        self.phase = "both"  # one pass gives inputs and targets when nothing is swapped

    def _load(self, values) -> None:
        for (t, _), v in zip(self.pairs, values):
            t.copy_(v)

    @contextmanager
    def targets(self):
        """The tensors hold their target values inside the block, their current values after it."""
        self.phase = "targets"
        self._load([v for _, v in self.pairs])
        try:
            yield
        finally:
            self._load(self.current)
            self.phase = "inputs"

    def run(self, model, batch) -> None:
        """``batch(model)`` for targets (swapped values) and for inputs (values as they are)."""
        if not self.pairs:
            batch(model)
            return
        with self.targets():
            batch(model)
        batch(model)


def register_hooks(chosen, collectors, dense, model, swap, handles: list) -> None:
    """Forward hooks (appended to ``handles``) feeding each collector its layer's inputs and outputs."""
    dense_modules = named_layers(dense)
    model_modules = named_layers(model)
    for n, mod in chosen.items():
        col = collectors[n]
        if dense is not model:
            other = dense_modules.get(n)
            if other is None:
                raise ParameterError(f"targets_from has no layer named {n!r}")
            if getattr(other, "weight", None) is None or other.weight.shape != mod.weight.shape:
                raise ShapeError(f"layer {n!r}: targets_from holds weights of shape "
                                 f"{tuple(getattr(other, 'weight', torch.empty(0)).shape)}, the model "
                                 f"{tuple(mod.weight.shape)}")

        def grab_in(module, x, y, col=col, n=n):
            if swap.phase != "targets":
                col.add_input(n, module, x)
            if dense is model and swap.phase != "inputs":
                col.add_output(n, output_rows(module, y))

        handles.append(layer_hook(model_modules, n, grab_in))
        if dense is not model:

            def grab_out(module, x, y, col=col, n=n):
                col.add_output(n, output_rows(module, y))

            handles.append(layer_hook(dense_modules, n, grab_out))
