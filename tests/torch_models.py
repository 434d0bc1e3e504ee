"""Small real models for the torch-binding tests, trained in about a second on
scikit-learn's 8x8 digits (1,797 images): an MLP and a CNN with BatchNorm, a
residual block and a depthwise convolution."""
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from seeding import torch_seed


@lru_cache(maxsize=None)
def digits():
    """``(X_train, y_train, X_test, y_test)`` as tensors; X is (n, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    X = torch.tensor(d.images[order] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target[order], dtype=torch.int64)
    return X[:1400], y[:1400], X[1400:], y[1400:]


def loader(X, y, batch_size=100):
    return [(X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def _train(model, X, y, epochs, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


class Residual(nn.Module):
    """``relu(x + bn(conv(x)))``."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


# The seeds below (initialisation, digit order, batch order) name the fixed reference models
# that ``trained`` returns; they are not test draws and are not shifted by --seed-shift.
def mlp(seed=0):
    with torch_seed(seed):  # module init draws from torch's global generator
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn(seed=0):
    with torch_seed(seed):
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            Residual(8),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"), nn.ReLU(),  # depthwise
            nn.Conv2d(8, 16, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
        )


@lru_cache(maxsize=None)
def _trained_state(kind):
    X, y, _, _ = digits()
    model = _train(mlp() if kind == "mlp" else cnn(), X, y, epochs=15 if kind == "mlp" else 8)
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained(kind):
    """A fresh copy of the trained ``"mlp"`` or ``"cnn"``."""
    model = mlp() if kind == "mlp" else cnn()
    model.load_state_dict(_trained_state(kind))
    return model.eval()


def accuracy(model, X, y):
    with torch.no_grad():
        return (model(X).argmax(1) == y).float().mean().item()
