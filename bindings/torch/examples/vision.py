"""torchvision and timm models, random init, for tests and benchmarks (no download).

With a CPU build of torch beside PyPI's torchvision, see
:mod:`layertrim.bindings.torch.hf_imports` for why torchvision is imported through
:func:`~layertrim.bindings.torch.hf_imports.import_torchvision`.
"""
from __future__ import annotations

import torch

from layertrim.bindings.torch.hf_imports import import_torchvision


def torchvision_model(name: str, **kwargs) -> torch.nn.Module:
    """``torchvision.models.<name>(weights=None, **kwargs)`` in eval mode."""
    return getattr(import_torchvision().models, name)(weights=None, **kwargs).eval()


def timm_model(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` in eval mode."""
    import_torchvision()
    import timm

    return timm.create_model(name, pretrained=False, **kwargs).eval()
