"""Run a model in eval mode for a while and give every module its own train/eval flag back."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block (BatchNorm statistics untouched by its forwards),
    each module's train/eval flag restored after it, whatever happens."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
