"""Directional pruning of a small CNN: a VGG-like network on the reference MNIST
images trained three ways from one initialization, over the same batches and
the same number of epochs: ``sgd`` (SGD with momentum, dense: the accuracy to
match); ``grda`` (no momentum, prunes while it trains); ``magnitude`` (the SGD
run up to ``prune_epoch``, each parameter tensor pruned by magnitude to gRDA's
final fraction of zeros in that tensor, then retrained with the masks held on
the rest of SGD's schedule). Plus the validation split, grid and selection rule.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar

from ..masks import sparsity as weight_sparsity
from ..optim.grda import GRDA, SparsityLogger
from ..training import accuracy
from .resnet import mnist_images

RUNS = ("sgd", "grda", "magnitude")
SCHEDULES = ("constant", "step", "cosine")
DECAY_START = 2 / 3  # fraction of the epochs run at the full learning rate
DECAY_FACTOR = 0.1  # learning rate at the end of a decay, relative to the start


def lr_multipliers(epochs: int, schedule: str = "constant") -> list[float]:
    """Factor ``m_e`` on a learning rate (gRDA's or SGD's) in epoch ``e = 1..E``, one entry per epoch.

    ``constant``: ``m_e = 1``. With ``e0 = round(2E/3)`` and ``f = 0.1``, ``m_e = 1`` for
    ``e <= e0``, then ``step``: ``m_e = f``; ``cosine``: ``m_e = f + (1 - f)(1 + cos(pi (e - e0) /
    (E - e0))) / 2``, which reaches ``f`` (never 0) in the last epoch.

    :class:`GRDA` reads ``lr_k`` at every step ``k`` (the count runs on), so its threshold is
    ``T_n = sum_k c lr_k^(mu+1/2) (k^mu - (k-1)^mu)``: a decay never lowers ``T`` but slows its
    growth by ``m^(mu+1/2)`` (0.063 at ``m = 0.1, mu = 0.7``) while the accumulator's steps shrink
    by ``m``: sparsity is nearly frozen and the gradient noise of the constant lr is damped.
    """
    check_choice(schedule, "schedule", SCHEDULES)
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    e0 = round(DECAY_START * epochs)
    if schedule == "constant" or e0 >= epochs:
        return [1.0] * epochs
    if schedule == "step":
        return [1.0 if e <= e0 else DECAY_FACTOR for e in range(1, epochs + 1)]
    f = DECAY_FACTOR
    return [1.0 if e <= e0 else f + (1 - f) * (1 + math.cos(math.pi * (e - e0) / (epochs - e0))) / 2
            for e in range(1, epochs + 1)]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the optimizer's next step uses it)."""
    for group in opt.param_groups:
        group["lr"] = lr


def vgg_cnn(widths=(16, 32, 64), num_classes: int = 10, image_size: int = 28) -> nn.Sequential:
    """``Linear . flatten . [MaxPool2 . ReLU . Conv3x3]^k`` for ``(batch, 1, size, size)`` images:
    one padded 3x3 convolution (with bias) per stage, each halving the resolution (28 -> 14 -> 7
    -> 3 with three stages); no BatchNorm: every parameter is one that gRDA may set to zero."""
    if not widths or any(int(w) < 1 for w in widths):
        raise ParameterError(f"widths must be a non-empty list of positive channel counts, got {widths!r}")
    size = check_scalar(image_size, "image_size", low=1, integer=True) // 2 ** len(widths)
    if size < 1:
        raise ParameterError(f"{len(widths)} stages halve {image_size} px below one pixel")
    layers, prev = [], 1
    for w in widths:
        layers += [nn.Conv2d(prev, int(w), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        prev = int(w)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(prev * size * size, num_classes))


def seeded_cnn(seed: int = 0, widths=(16, 32, 64)) -> nn.Sequential:
    """:func:`vgg_cnn` initialized from ``seed`` (torch's global generator is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are not forked
        return vgg_cnn(widths)


def zero_fractions(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros of each parameter tensor, by qualified name."""
    return {n: float((p.detach() == 0).sum()) / p.numel() for n, p in model.named_parameters()}


def magnitude_masks(model: nn.Module, fractions: dict[str, float]) -> dict[str, torch.Tensor]:
    """Per-tensor magnitude masks: tensor ``name`` keeps its ``round((1 - s) numel)``
    largest ``|w|`` for ``s = fractions[name]`` (ties broken by position)."""
    masks = {}
    for name, p in model.named_parameters():
        flat = p.detach().abs().flatten()
        keep = int(round((1.0 - fractions[name]) * flat.numel()))
        mask = torch.zeros_like(flat)
        mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
        masks[name] = mask.view_as(p)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor], *, grads: bool = False) -> None:
    """Multiply every masked parameter (or, with ``grads=True``, its gradient) by its mask."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                target = p.grad if grads else p
                if target is not None:
                    target.mul_(masks[name])


def train_epoch(model, opt, X, y, order, batch_size, masks=None) -> float:
    """One pass over ``X[order]`` in batches; mean cross-entropy of the batches. With ``masks`` the
    gradients are masked before each step and the weights after it: pruned entries (and their
    momentum) stay exactly zero."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        opt.zero_grad()
        loss = loss_fn(model(X[idx]), y[idx])
        loss.backward()
        if masks is not None:
            apply_masks(model, masks, grads=True)
        opt.step()
        if masks is not None:
            apply_masks(model, masks)
        total += loss.item() * len(idx)
    model.eval()
    return total / len(order)


@dataclass
class CNNComparison:
    """Outcome of :func:`compare_cnn`: ``history`` maps ``epoch`` and, for each run in ``RUNS``,
    ``<run>_acc`` (test accuracy after the epoch) and ``<run>_sparsity`` (zeros over all
    parameters, biases included), plus ``grda_weight_sparsity`` (conv and linear weights only), to
    per-epoch lists; ``models`` holds the final networks, ``seconds`` each run's training time
    (``magnitude``: its retraining only; its first phase is the SGD run's)."""

    models: dict[str, nn.Module]
    history: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def _check(epochs, prune_epoch, batch_size, lr, c, mu, sgd_lr, momentum, schedule, sgd_schedule):
    """Validate the settings of :func:`compare_cnn` before any work; returns ``(epochs, prune_epoch)``."""
    epochs = check_scalar(epochs, "epochs", low=2, integer=True)  # one epoch before pruning, one after
    prune_epoch = check_scalar(prune_epoch, "prune_epoch", low=1, high=epochs - 1, integer=True)
    check_scalar(batch_size, "batch_size", low=1, integer=True)
    for value, name in ((lr, "lr"), (sgd_lr, "sgd_lr"), (c, "c"), (mu, "mu")):
        check_scalar(value, name, low=0.0, low_open=name.endswith("lr"))
    check_scalar(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    check_choice(schedule, "schedule", SCHEDULES)
    check_choice(sgd_schedule, "sgd_schedule", SCHEDULES)
    return epochs, prune_epoch


def compare_cnn(*, epochs: int = 100, prune_epoch: int | None = None, lr: float = 0.2, c: float = 0.003,
                mu: float = 0.7, sgd_lr: float = 0.01, momentum: float = 0.9, batch_size: int = 64,
                widths=(16, 32, 64), seed: int = 0, data=None, schedule: str = "constant",
                sgd_schedule: str = "constant") -> CNNComparison:
    """Train :func:`vgg_cnn` with SGD + momentum, with gRDA, and by magnitude pruning
    + masked retraining at gRDA's final per-tensor sparsity, all for ``epochs`` epochs.

    gRDA uses ``lr``, ``c``, ``mu``, its learning rate in epoch ``e`` scaled by
    ``lr_multipliers(epochs, schedule)[e-1]``; SGD uses ``sgd_lr`` and ``momentum`` (no weight
    decay) scaled by ``lr_multipliers(epochs, sgd_schedule)``, and the retraining runs on through
    the remaining epochs of that same schedule. ``prune_epoch`` (default two thirds of ``epochs``)
    is when the magnitude run prunes the SGD network. ``data`` is ``(X_train, y_train, X_test,
    y_test)`` with images ``(n, 1, 28, 28)`` (default: :func:`mnist_images(seed)`).
    """
    prune_epoch = max(1, round(2 * epochs / 3)) if prune_epoch is None else prune_epoch
    epochs, prune_epoch = _check(epochs, prune_epoch, batch_size, lr, c, mu, sgd_lr, momentum, schedule,
                                 sgd_schedule)
    lrs = {"grda": [lr * m for m in lr_multipliers(epochs, schedule)],
           "sgd": [sgd_lr * m for m in lr_multipliers(epochs, sgd_schedule)]}
    X, y, Xt, yt = mnist_images(seed) if data is None else data
    models = {"sgd": seeded_cnn(seed, widths)}
    models["grda"] = copy.deepcopy(models["sgd"])
    opts = {"sgd": torch.optim.SGD(models["sgd"].parameters(), lr=sgd_lr, momentum=momentum),
            "grda": GRDA(models["grda"].parameters(), lr=lr, c=c, mu=mu)}
    logger = SparsityLogger(models["grda"])
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(y), generator=gen) for _ in range(epochs)]
    hist = {"epoch": list(range(1, epochs + 1)), "grda_weight_sparsity": []}
    hist.update({f"{r}_{k}": [] for r in RUNS for k in ("acc", "sparsity")})
    seconds = {r: 0.0 for r in RUNS}
    snapshot = None
    for epoch, order in enumerate(orders, start=1):
        for name in ("sgd", "grda"):
            set_lr(opts[name], lrs[name][epoch - 1])
            t0 = time.perf_counter()
            train_epoch(models[name], opts[name], X, y, order, batch_size)
            seconds[name] += time.perf_counter() - t0
            hist[f"{name}_acc"].append(accuracy(models[name], Xt, yt))
        hist["sgd_sparsity"].append(SparsityLogger(models["sgd"]).current())
        hist["grda_sparsity"].append(logger(epoch))
        hist["grda_weight_sparsity"].append(weight_sparsity(models["grda"]).overall)
        if epoch == prune_epoch:
            snapshot = (copy.deepcopy(models["sgd"]), copy.deepcopy(opts["sgd"].state_dict()))
    _magnitude_run(models, snapshot, orders[prune_epoch:], hist, seconds, (X, y, Xt, yt),
                   lrs["sgd"][prune_epoch:], momentum, batch_size)
    settings = {"epochs": epochs, "prune_epoch": prune_epoch, "lr": lr, "c": c, "mu": mu, "sgd_lr": sgd_lr,
                "momentum": momentum, "batch_size": batch_size, "widths": tuple(widths), "seed": seed,
                "schedule": schedule, "sgd_schedule": sgd_schedule}
    return CNNComparison(models, hist, seconds, settings)


def _magnitude_run(models, snapshot, orders, hist, seconds, data, sgd_lrs, momentum, batch_size) -> None:
    """Prune the SGD snapshot to gRDA's final per-tensor sparsity and retrain it with masks,
    epoch ``j`` of ``orders`` at learning rate ``sgd_lrs[j]``."""
    X, y, Xt, yt = data
    model, opt_state = snapshot
    opt = torch.optim.SGD(model.parameters(), lr=sgd_lrs[0], momentum=momentum)
    opt.load_state_dict(opt_state)
    masks = magnitude_masks(model, zero_fractions(models["grda"]))
    apply_masks(model, masks)
    for name, p in model.named_parameters():  # momentum of pruned entries would push them off zero
        buf = opt.state[p].get("momentum_buffer")
        if buf is not None:
            buf.mul_(masks[name])
    n_before = len(hist["epoch"]) - len(orders)
    hist["magnitude_acc"], hist["magnitude_sparsity"] = hist["sgd_acc"][:n_before], hist["sgd_sparsity"][:n_before]
    t0 = time.perf_counter()
    for order, lr in zip(orders, sgd_lrs):
        set_lr(opt, lr)
        train_epoch(model, opt, X, y, order, batch_size, masks)
        hist["magnitude_acc"].append(accuracy(model, Xt, yt))
        hist["magnitude_sparsity"].append(SparsityLogger(model).current())
    seconds["magnitude"] = time.perf_counter() - t0
    models["magnitude"] = model


def validation_grid(train_data, val_data, *, grda_grid, sgd_grid, momentum: float = 0.9, epochs: int = 100,
                    batch_size: int = 64, widths=(16, 32, 64), seed: int = 0) -> list[dict]:
    """Validation accuracy and final sparsity of each gRDA setting ``(lr, c, mu[, schedule])`` in
    ``grda_grid`` and SGD + momentum setting ``lr`` or ``(lr, schedule)`` in ``sgd_grid`` (default
    schedule ``constant``), all from one initialization over the same batches, ``epochs`` epochs on
    ``train_data``, scored on ``val_data`` (never the test set). Rows: ``{"optimizer", "lr", "c",
    "mu", "schedule", "val_acc", "sparsity"}``."""
    epochs = check_scalar(epochs, "epochs", low=1, integer=True)
    runs = [("grda", float(g[0]), float(g[1]), float(g[2]), g[3] if len(g) > 3 else "constant") for g in grda_grid]
    sgd_grid = [g if isinstance(g, (tuple, list)) else (g,) for g in sgd_grid]
    runs += [("sgd", float(g[0]), 0.0, 0.0, g[1] if len(g) > 1 else "constant") for g in sgd_grid]
    multipliers = {kind: lr_multipliers(epochs, kind) for *_, kind in runs}  # checks every schedule first
    (X, y), (Xv, yv) = train_data, val_data
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(y), generator=gen) for _ in range(epochs)]
    rows = []
    for kind, lr, c, mu, schedule in runs:
        model = seeded_cnn(seed, widths)
        opt = (GRDA(model.parameters(), lr=lr, c=c, mu=mu) if kind == "grda"
               else torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum))
        for order, m in zip(orders, multipliers[schedule]):
            set_lr(opt, lr * m)
            train_epoch(model, opt, X, y, order, batch_size)
        rows.append({"optimizer": kind, "lr": lr, "c": c, "mu": mu, "schedule": schedule,
                     "val_acc": accuracy(model, Xv, yv), "sparsity": SparsityLogger(model).current()})
    return rows


def stratified_split(y: torch.Tensor, n_val: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``, ``n_val`` validation images in each class's share of ``y``: the
    indices shuffled with ``seed`` and stably sorted by label, the validation set takes positions
    ``floor(j n / n_val)``, ``j < n_val``, so class ``k`` gets ``n_k n_val / n`` images up to one."""
    n_val = check_scalar(n_val, "n_val", low=1, high=len(y) - 1, integer=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    by_class = order[torch.sort(y[order], stable=True).indices]
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[[j * len(y) // n_val for j in range(n_val)]] = True
    return torch.sort(by_class[~is_val]).values, torch.sort(by_class[is_val]).values


def matching_epochs(epochs: int, n_full: int, n_part: int, batch_size: int) -> int:
    """Epochs on ``n_part`` images that take (at least) the optimizer steps of ``epochs`` epochs on
    ``n_full``: ``ceil(epochs ceil(n_full / B) / ceil(n_part / B))``. gRDA's threshold grows with
    the step count (``T_n ~ c lr^(mu+1/2) n^mu``), so a validation run on fewer images must take as
    many steps as the final run for its sparsity to predict the final one."""
    steps = epochs * -(-n_full // batch_size)
    return -(-steps // -(-n_part // batch_size))


def select_settings(rows: list[dict], min_sparsity: float = 0.9) -> tuple[dict, dict]:
    """``(sgd_row, grda_row)`` picked from :func:`validation_grid` rows by the rule fixed in advance:
    SGD: the highest validation accuracy; gRDA: among the settings ending with at least ``min_sparsity``
    zeros, the highest validation accuracy, or the sparsest when none does. Ties: the first in grid order."""
    sgd = [r for r in rows if r["optimizer"] == "sgd"]
    grda = [r for r in rows if r["optimizer"] == "grda"]
    if not sgd or not grda:
        raise ParameterError("rows must hold at least one sgd and one grda row")
    sparse = [r for r in grda if r["sparsity"] >= min_sparsity]
    best = max(sparse, key=lambda r: r["val_acc"]) if sparse else max(grda, key=lambda r: r["sparsity"])
    return max(sgd, key=lambda r: r["val_acc"]), best
