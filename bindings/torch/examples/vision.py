"""torchvision and timm models, random init, for tests and benchmarks.

PyPI's torchvision wheels are built against a CUDA build of torch. Beside a
CPU build of the same version their compiled operators do not load, and
``import torchvision`` fails with "operator torchvision::nms does not exist"
(its Python side registers fake kernels for ``nms`` and ``qnms``, whose
schemas the compiled library would have defined). The classification models
use none of those operators, so :func:`import_torchvision` defines the two
schemas (without kernels: calling them still fails) and imports again. timm
and transformers import torchvision when it is installed: call it first.
"""
from __future__ import annotations

import importlib
import sys

import torch

#: the schemas of the detection operators that torchvision's Python side refers to at import
_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARIES = []  # a torch.library.Library unregisters its definitions when collected


def import_torchvision():
    """``torchvision``, importable beside a torch build its compiled operators do not match."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARIES.append(library)
    return importlib.import_module("torchvision")


def torchvision_model(name: str, **kwargs) -> torch.nn.Module:
    """``torchvision.models.<name>(weights=None, **kwargs)`` in eval mode (no download)."""
    models = import_torchvision().models
    return getattr(models, name)(weights=None, **kwargs).eval()


def timm_model(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` in eval mode (no download)."""
    import_torchvision()
    import timm

    return timm.create_model(name, pretrained=False, **kwargs).eval()
