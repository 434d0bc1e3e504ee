"""Total pruning time: prune, then retrain with the masks held until the accuracy is back.

For a method ``m`` at sparsity ``s`` the cost of a usable sparse network is

    T(m, s) = t_prune(m, s) + t_retrain(m, s),
    t_retrain = training seconds until the first evaluation with acc >= acc_dense - tol

(Pitas, Davies & Vandergheynst, "Revisiting hard thresholding for DNN
pruning", 2019: hard thresholding is cheap to prune and quick to retrain, so it
should win on ``T``, while data-aware layer solvers win when no retraining is
allowed). Every method sees the same calibration data, the same optimizer
(Adam, constant learning rate), the same batches in the same order and the
same evaluation points (every ``eval_every`` steps). Evaluation time is not
counted in ``t_retrain``.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar, check_sparsity

from ..finetune import fine_tune
from ..masks import sparsity as model_sparsity
from ..prune import prune
from .mnist import cache_dir, trained_and_cached
from .resnet import mnist_images

#: the prune settings of each method (uniform per-layer sparsity, cascade scheme):
#: ``magnitude`` is plain hard thresholding (no least-squares refit); the row-based
#: methods sample rows of the calibration set; Net-Trim runs a loose ADMM (tol 1e-2,
#: at most 300 iterations per eps of its bisection) so that one network takes seconds
METHODS = {
    "magnitude": dict(method="magnitude", refit=False),
    "iht": dict(method="iht"),
    "lasso": dict(method="lasso"),
    "feta": dict(method="feta", max_rows=2000),
    "nettrim": dict(method="nettrim", max_rows=1000, tol=1e-2, max_iter=300),
    "l0": dict(method="l0"),
}


def tiny_convnet() -> nn.Sequential:
    """Conv(1->16, 5x5, stride 2) - ReLU - Conv(16->32, 5x5, stride 2) - ReLU - Linear(512 -> 10), 28x28 input."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2), nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def trained_convnet(seed: int = 0, *, epochs: int = 8, cache: bool = True) -> nn.Sequential:
    """:func:`tiny_convnet` trained like the reference MLP (Adam, lr 1e-3, batch 64) on the 4,000 training images."""
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    path = cache_dir() / f"convnet_16-32_seed{seed}_ep{epochs}.pt"
    return trained_and_cached(tiny_convnet, path, lambda: mnist_images(seed), seed=seed, epochs=epochs, cache=cache)


def epoch_batches(X, y, *, epoch: int, batch_size: int = 64, seed: int = 0) -> list:
    """The ``(inputs, targets)`` batches of one epoch: a permutation seeded by ``(seed, epoch)``."""
    gen = torch.Generator().manual_seed(1_000_003 * seed + epoch)
    perm = torch.randperm(len(y), generator=gen)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    return [(X[perm[i : i + batch_size]], y[perm[i : i + batch_size]]) for i in range(0, len(y), batch_size)]


@dataclass(frozen=True)
class Evaluation:
    """Accuracy after ``step`` optimizer steps and ``seconds`` of training."""

    step: int
    seconds: float
    accuracy: float


def first_recovery(history, target: float):
    """The first :class:`Evaluation` of ``history`` with ``accuracy >= target``, or None."""
    return next((e for e in history if e.accuracy >= target), None)


@dataclass(frozen=True)
class Retraining:
    """The evaluations of one masked retraining run; ``recovered`` is the first at or above ``target``."""

    history: tuple
    target: float

    @property
    def recovered(self):
        return first_recovery(self.history, self.target)

    @property
    def seconds(self):
        """Training seconds to recovery (None if the cap came first)."""
        return None if self.recovered is None else self.recovered.seconds

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].accuracy


def retrain_until_recovered(model, X, y, evaluate, *, target: float, max_epochs: int = 10, eval_every: int = 21,
                            lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> Retraining:
    """Masked fine-tuning (:func:`~layertrim.bindings.torch.fine_tune`) of ``model`` in place, evaluated
    every ``eval_every`` steps, until ``evaluate(model) >= target`` or ``max_epochs`` epochs.

    One Adam optimizer (constant ``lr``) runs over all chunks; batches come
    from :func:`epoch_batches`. Step 0 (no training) is evaluated first.
    """
    target = check_scalar(target, "target", low=0.0, high=1.0)
    max_epochs = check_scalar(max_epochs, "max_epochs", low=1, integer=True)
    eval_every = check_scalar(eval_every, "eval_every", low=1, integer=True)
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    if not callable(evaluate):
        raise ParameterError(f"evaluate must be a callable model -> accuracy, got {type(evaluate).__name__}")
    history = [Evaluation(0, 0.0, float(evaluate(model)))]
    if history[0].accuracy >= target:
        return Retraining(tuple(history), target)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    step, seconds = 0, 0.0
    for epoch in range(max_epochs):
        batches = epoch_batches(X, y, epoch=epoch, batch_size=batch_size, seed=seed)
        for start in range(0, len(batches), eval_every):
            chunk = batches[start : start + eval_every]
            t0 = time.perf_counter()
            fine_tune(model, chunk, epochs=1, lr=lr, optimizer=opt)
            seconds += time.perf_counter() - t0
            step += len(chunk)
            history.append(Evaluation(step, seconds, float(evaluate(model))))
            if history[-1].accuracy >= target:
                return Retraining(tuple(history), target)
    return Retraining(tuple(history), target)


@dataclass(frozen=True)
class TotalTime:
    """One (network, method, sparsity) row: pruning, then retraining to within ``tolerance`` of dense.

    ``prune_seconds`` is the wall time of the whole :func:`prune` call (data
    capture included); ``solve_seconds`` the part spent in the layer solvers.
    """

    network: str
    method: str
    sparsity: float
    achieved: float
    dense_accuracy: float
    pruned_accuracy: float
    prune_seconds: float
    solve_seconds: float
    retraining: Retraining

    @property
    def total_seconds(self):
        """``prune_seconds + retraining.seconds``, or None when the accuracy did not come back."""
        return None if self.retraining.seconds is None else self.prune_seconds + self.retraining.seconds

    @property
    def final_accuracy(self) -> float:
        return self.retraining.final_accuracy


def total_time(base: nn.Module, method: str, sparsity: float, *, calibration, X_train, y_train, evaluate,
               dense_accuracy: float, tolerance: float = 0.005, repeats: int = 1, network: str = "",
               **retrain_options) -> TotalTime:
    """Prune a copy of ``base`` with ``method`` (:data:`METHODS`) at uniform ``sparsity``, then
    :func:`retrain_until_recovered` to ``dense_accuracy - tolerance``.

    The pruning times are medians over ``repeats`` prunings of fresh copies
    (the last one is retrained). ``base`` is left unchanged.
    """
    check_choice(method, "method", METHODS)
    sparsity = check_sparsity(sparsity)
    tolerance = check_scalar(tolerance, "tolerance", low=0.0, high=1.0)
    dense_accuracy = check_scalar(dense_accuracy, "dense_accuracy", low=0.0, high=1.0)
    repeats = check_scalar(repeats, "repeats", low=1, integer=True)
    times, solves = [], []
    for _ in range(repeats):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        report = prune(model, calibration, sparsity=sparsity, progress=False, **METHODS[method])
        times.append(time.perf_counter() - t0)
        solves.append(sum(layer.time for layer in report.layers))
    pruned = float(evaluate(model))
    retraining = retrain_until_recovered(model, X_train, y_train, evaluate,
                                         target=max(dense_accuracy - tolerance, 0.0), **retrain_options)
    return TotalTime(network=network, method=method, sparsity=sparsity, achieved=model_sparsity(model).overall,
                     dense_accuracy=dense_accuracy, pruned_accuracy=pruned, prune_seconds=statistics.median(times),
                     solve_seconds=statistics.median(solves), retraining=retraining)


def plot_recovery(rows, ax=None):
    """Test accuracy (%) against total wall time ``t_prune + t_train`` for each row of one
    (network, sparsity); the dashed line is the recovery target."""
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.gca()
    for row in rows:
        seconds = [row.prune_seconds + e.seconds for e in row.retraining.history]
        ax.plot(seconds, [100 * e.accuracy for e in row.retraining.history], marker=".", label=row.method)
    if rows:
        ax.axhline(100 * rows[0].retraining.target, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{rows[0].network} at {rows[0].sparsity:.0%}")
    ax.set_xlabel("total wall time: prune + retrain [s]")
    ax.set_ylabel("test accuracy [%]")
    ax.legend(fontsize="small")
    return ax
