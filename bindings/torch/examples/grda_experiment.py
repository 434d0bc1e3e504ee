"""The directional-pruning experiment on the reference network: train the
784-300-100-10 MLP on the MNIST subset twice from one initialization, with
SGD and with gRDA (same learning rate, no momentum, same batches), and look at
the straight line between the two solutions."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from layertrim.solvers.threshold.projection import project
from layertrim.solvers.base.validation import check_scalar

from ..optim.grda import GRDA, SparsityLogger
from ..masks import sparsity as weight_sparsity
from .grda_cnn import train_epoch
from .mnist import accuracy, load_mnist, mlp


@dataclass
class Comparison:
    """Outcome of :func:`compare_sgd_grda`.

    ``history`` maps ``epoch``, ``sgd_acc``, ``grda_acc`` (test accuracy),
    ``sgd_loss``, ``grda_loss`` (mean training cross-entropy over the epoch's
    batches), ``grda_sparsity`` (fraction of zeros over all parameters,
    biases included, as in the published experiments) and
    ``grda_weight_sparsity`` (over the Linear weights only) to per-epoch lists; ``seconds`` holds the training time
    of each optimizer.
    """

    sgd: nn.Module
    grda: nn.Module
    history: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)


def compare_sgd_grda(
    *,
    epochs: int = 20,
    lr: float = 0.1,
    c: float = 0.005,
    mu: float = 0.7,
    batch_size: int = 64,
    seed: int = 0,
    data=None,
) -> Comparison:
    """Train the reference MLP with SGD and with gRDA from one initialization.

    Both runs see the same batches in the same order; SGD has no momentum and
    no weight decay, as in the published comparison. ``data`` is
    ``(X_train, y_train, X_test, y_test)`` (default: :func:`load_mnist(seed)`).
    gRDA acts on all parameters, biases included.
    """
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    batch_size = check_scalar(batch_size, "batch_size", low=1, integer=True)
    X_tr, y_tr, X_te, y_te = load_mnist(seed) if data is None else data
    X_tr, y_tr = torch.as_tensor(X_tr), torch.as_tensor(y_tr)
    X_te, y_te = torch.as_tensor(X_te), torch.as_tensor(y_te)
    with torch.random.fork_rng(devices=[]):  # a seeded initialization; the caller's generator is left alone
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are not forked
        sgd_model = mlp()
    grda_model = copy.deepcopy(sgd_model)
    sgd_opt = torch.optim.SGD(sgd_model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    grda_opt = GRDA(grda_model.parameters(), lr=lr, c=c, mu=mu)
    logger = SparsityLogger(grda_model)
    gen = torch.Generator().manual_seed(seed)
    keys = ("epoch", "sgd_acc", "grda_acc", "sgd_loss", "grda_loss", "grda_sparsity", "grda_weight_sparsity")
    hist = {k: [] for k in keys}
    seconds = {"sgd": 0.0, "grda": 0.0}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y_tr), generator=gen)
        for name, model, opt in (("sgd", sgd_model, sgd_opt), ("grda", grda_model, grda_opt)):
            t0 = time.perf_counter()
            hist[f"{name}_loss"].append(train_epoch(model, opt, X_tr, y_tr, order, batch_size))
            seconds[name] += time.perf_counter() - t0
            hist[f"{name}_acc"].append(accuracy(model, X_te, y_te))
        hist["epoch"].append(epoch)
        hist["grda_sparsity"].append(logger(epoch))
        hist["grda_weight_sparsity"].append(weight_sparsity(grda_model).overall)
    settings = {"epochs": epochs, "lr": lr, "c": c, "mu": mu, "batch_size": batch_size, "seed": seed}
    return Comparison(sgd_model, grda_model, hist, seconds, settings)


def interpolation_losses(model_a: nn.Module, model_b: nn.Module, X, y, ts) -> np.ndarray:
    """Mean cross-entropy on ``(X, y)`` of ``(1 - t) * a + t * b`` for each ``t`` in ``ts``.

    ``t = 0`` is ``model_a``, ``t = 1`` is ``model_b``; every parameter and
    buffer is interpolated along the straight line.
    """
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    probe = copy.deepcopy(model_a).eval()
    loss_fn = nn.CrossEntropyLoss()
    out = []
    with torch.no_grad():
        for t in ts:
            probe.load_state_dict({k: torch.lerp(sa[k], sb[k], float(t)) for k in sa})
            out.append(loss_fn(probe(X), y).item())
    return np.asarray(out)


def magnitude_pruned_like(model: nn.Module, reference: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear weights keep their largest magnitudes, with
    each layer as sparse as the same layer of ``reference`` (no retraining).

    The control for :func:`interpolation_losses`: a sparse point reached by
    pruning the SGD solution instead of training with gRDA.
    """
    pruned = copy.deepcopy(model)
    layers = weight_sparsity(reference).layers
    modules = dict(pruned.named_modules())
    with torch.no_grad():
        for name, count in layers.items():
            w = modules[name].weight
            kept, _ = project(w.detach().cpu().numpy().T, sparsity=min(count.sparsity, 1 - 1e-12))
            w.copy_(torch.from_numpy(kept.T.copy()))
    return pruned


def parameter_distance(model_a: nn.Module, model_b: nn.Module) -> float:
    """Euclidean distance between two models' parameters."""
    with torch.no_grad():
        sq = sum(((pa - pb) ** 2).sum() for pa, pb in zip(model_a.parameters(), model_b.parameters()))
        return float(torch.sqrt(sq))
