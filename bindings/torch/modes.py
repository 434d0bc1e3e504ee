"""Change modules for a while and give them back as they were: eval mode (every module's own
train/eval flag back), forwards replaced."""
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


@contextmanager
def forwards_replaced(replacements: dict):
    """Inside the block, each module ``m`` of ``replacements`` (``{m: fn}``) runs ``fn`` in place of
    its ``forward`` (an instance attribute: hooks still run); the forwards are restored after it."""
    patched = []
    try:
        for module, fn in replacements.items():
            previous = module.__dict__.get("forward")
            module.forward = fn
            patched.append((module, previous))
        yield
    finally:
        for module, previous in patched:
            if previous is None:
                del module.forward
            else:
                module.forward = previous
