"""Hard thresholding without retraining, as a function of depth.

MLPs ``784 - w - ... - w - 10`` with ``d`` hidden layers of equal width ``w``,
all trained by the same recipe on the reference MNIST images, are pruned to
the same uniform per-layer sparsity and evaluated without retraining. With
magnitude pruning each layer's output error ``||X_l (W_l - H_s(W_l))||`` is
not corrected by the next layer, so the errors compound along the depth; a
data-aware layer solver (``l0``, ``iht``: ``min ||X_l W - Y_l||`` over the
sparse ``W``, cascade scheme) refits each layer to the already-pruned inputs.
The claim checked (Pitas et al., 2019): the accuracy loss of hard
thresholding grows with ``d``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from layertrim.solvers.base.validation import check_choice, check_scalar, check_sparsity

from ..prune import prune
from ..training import accuracy
from .mnist import cache_dir, load_mnist, mlp, trained_and_cached
from .total_time import METHODS


def deep_mlp(depth: int, width: int = 128) -> nn.Sequential:
    """A ReLU MLP ``784 -> width (x depth) -> 10``: ``depth + 1`` Linear layers."""
    depth = check_scalar(depth, "depth", low=1, integer=True)
    width = check_scalar(width, "width", low=1, integer=True)
    return mlp((784,) + (width,) * depth + (10,))


def trained_deep_mlp(depth: int, *, width: int = 128, epochs: int = 20, seed: int = 0,
                     cache: bool = True) -> nn.Sequential:
    """:func:`deep_mlp` trained by the reference recipe (Adam, lr 1e-3, batch 64), cached on disk."""
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    path = cache_dir() / f"deep_mlp_d{depth}_w{width}_seed{seed}_ep{epochs}.pt"
    return trained_and_cached(lambda: deep_mlp(depth, width), path, lambda: load_mnist(seed), seed=seed,
                              epochs=epochs, cache=cache)


@dataclass(frozen=True)
class DepthRow:
    """Test accuracy of one depth before and after pruning (no retraining)."""

    depth: int
    method: str
    sparsity: float
    dense_accuracy: float
    pruned_accuracy: float

    @property
    def loss(self) -> float:
        """Accuracy points lost by pruning (dense - pruned)."""
        return self.dense_accuracy - self.pruned_accuracy


def depth_curve(depths=(2, 3, 4, 5, 6, 7, 8), *, sparsity: float = 0.9, methods=("magnitude", "l0"),
                width: int = 128, epochs: int = 20, n_calibration: int = 4000, seed: int = 0) -> list:
    """:class:`DepthRow` for every depth and method: prune a trained :func:`deep_mlp` copy, no retraining.

    Calibration: the first ``n_calibration`` training images (the data-aware methods).
    """
    sparsity = check_sparsity(sparsity)
    n_calibration = check_scalar(n_calibration, "n_calibration", low=1, integer=True)
    depths = [check_scalar(d, "depths", low=1, integer=True) for d in depths]
    methods = [check_choice(m, "methods", METHODS) for m in methods]
    X_train, _, X_test, y_test = load_mnist(seed)
    X_cal = torch.as_tensor(X_train[:n_calibration])
    calibration = [X_cal[i : i + 500] for i in range(0, len(X_cal), 500)]
    rows = []
    for depth in depths:
        base = trained_deep_mlp(depth, width=width, epochs=epochs, seed=seed)
        dense = accuracy(base, X_test, y_test)
        for method in methods:
            model = copy.deepcopy(base)
            prune(model, calibration, sparsity=sparsity, progress=False, **METHODS[method])
            rows.append(DepthRow(depth, method, sparsity, dense, accuracy(model, X_test, y_test)))
    return rows


def plot_depth(rows, ax=None):
    """Accuracy points lost by pruning without retraining, against the number of hidden layers."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.gca()
    for method in dict.fromkeys(r.method for r in rows):
        own = [r for r in rows if r.method == method]
        ax.plot([r.depth for r in own], [100 * r.loss for r in own], marker="o", label=method)
    if rows:
        ax.set_title(f"no retraining, {rows[0].sparsity:.0%} sparsity per layer")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("accuracy loss [points]")
    ax.legend()
    return ax
