"""Checks of a model and its calibration data before :func:`~layertrim.bindings.torch.prune`
does any work: every refusal is a LayerTrimError that names the layer or the
batch and the fix, raised while nothing has been changed."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from layertrim.solvers.base.errors import EmptyDataError, ParameterError, ShapeError

from .batches import model_batches, module_device
from .modes import eval_mode

#: weight dtypes prune handles (half precisions are solved in float32 and rounded back)
SOLVABLE = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_model(model: nn.Module) -> None:
    """A plain torch module (not a compiled wrapper, whose hooks and weights are its original's)."""
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise ParameterError("model is a torch.compile wrapper: prune the original module (model._orig_mod), "
                             "then compile the pruned one")


def check_layers(layers: dict) -> None:
    """Each chosen layer holds real float32/float64 values that can be solved and written back."""
    for name, module in layers.items():
        if parametrize.is_parametrized(module, "weight"):
            raise ParameterError(f"layer {name!r}: its weight is a parametrization (e.g. weight_norm); "
                                 "remove it first (torch.nn.utils.parametrize.remove_parametrizations)")
        weight = module.weight
        if weight.device.type == "meta":
            raise ParameterError(f"layer {name!r}: weights on the meta device hold no values; load them first")
        if weight.dtype not in SOLVABLE:
            raise ParameterError(
                f"layer {name!r}: weights of dtype {str(weight.dtype).replace('torch.', '')} are not solved "
                "solved; prune a float32 copy (model.float()) and cast the result back"
            )


def check_forward(model: nn.Module, data) -> None:
    """One forward pass on the first calibration batch, under ``no_grad`` and in eval mode."""
    first = next(iter(model_batches(model, data, module_device(model))), None)
    if first is None:
        raise EmptyDataError("the calibration data is empty")
    try:
        with eval_mode(model), torch.no_grad():
            first(model)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise ShapeError(f"the model rejects a calibration batch of {first.describe()}: {message}") from None
