"""Import torchvision and transformers beside a torch build that torchvision's compiled operators do not match.

PyPI's torchvision wheels are built against a CUDA build of torch. Beside a
CPU build of the same version their compiled operators do not load, and
``import torchvision`` fails with "operator torchvision::nms does not exist"
(its Python side registers fake kernels for ``nms`` and ``qnms``, whose
schemas the compiled library would have defined). transformers imports
torchvision whenever it is installed (its image utilities, reached even from
``LlamaConfig``), and timm always does, so they fail with it.
:func:`import_torchvision` defines the two schemas (without kernels: calling
those detection operators still fails; classification models never do) and
imports again; with a matching build it is a plain import.
"""
from __future__ import annotations

import importlib
import importlib.util
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


def import_transformers():
    """``transformers``, with torchvision made importable first where it is installed."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
    return importlib.import_module("transformers")
