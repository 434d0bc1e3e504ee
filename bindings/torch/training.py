"""Supervised training and evaluation loops shared by the fine-tuning of
three-dimensional pruning and the examples: Adam on cross-entropy, seeded,
with optional cosine decay and random-translation augmentation."""
from __future__ import annotations

import torch
from torch import nn

from layertrim.solvers.base.validation import check_scalar


def accuracy(model: nn.Module, X, y, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on numpy or torch data."""
    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            correct += (model(X[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
    return correct / len(y)


def random_shift(images: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of ``(n, C, H, W)`` by whole pixels drawn from ``[-shift, shift]``
    along each axis, filling with zeros (augmentation)."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    off = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(off)])


def train(model: nn.Module, X, y, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
          cosine: bool = False, shift: int = 0):
    """Adam on cross-entropy; deterministic for a given seed.

    ``cosine=True`` decays the learning rate from ``lr`` to 0 along a half
    cosine over all steps; ``shift > 0`` augments images ``(n, C, H, W)`` by
    random translations of up to ``shift`` pixels (:func:`random_shift`).
    """
    shift = check_scalar(shift, "shift", low=0, integer=True)
    gen = torch.Generator().manual_seed(seed)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(y) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if cosine else None
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            xb = random_shift(X[idx], shift, gen) if shift else X[idx]
            opt.zero_grad()
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
            if schedule is not None:
                schedule.step()
    model.eval()
    return model
