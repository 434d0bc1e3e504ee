"""Three-dimensional pruning of a :class:`ResNet`, end to end (Wang et al.).

1. Sample: from the trained model walk each dimension alone (depth, width,
   resolution) down a schedule of ratios, pruning the previous, already
   fine-tuned model a step further and fine-tuning it briefly (iterative
   pruning reuses the earlier results); then a few off-axis points, each one
   step along a second dimension from a trajectory model. Record the
   validation accuracy at every ``(d, w, r)``.
2. Fit ``acc(d, w, r)`` (:func:`layertrim.solvers.fit_accuracy_model`).
3. Maximize it under the FLOPs budget with the network's own FLOPs model
   (:func:`layertrim.solvers.maximize_accuracy`), over the box the samples
   span, then pick the best realizable configuration whose *counted* FLOPs
   meet the budget (:func:`layertrim.solvers.realizable_optimum`).
4. Prune the original model to it and fine-tune.

:func:`single_axis_prune` prunes the same budget along one dimension (the
baselines) and :func:`compare_plans` runs all four with equal fine-tuning.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from layertrim.solvers.errors import InfeasibleError, ParameterError
from layertrim.solvers.threed import (
    AccuracyModel,
    FlopsModel,
    ThreeDOptimum,
    fit_accuracy_model,
    maximize_accuracy,
    realizable_optimum,
)
from layertrim.solvers.validation import check_choice, check_scalar

from .flops import count_flops, resnet_flops_model
from .mnist import accuracy, train
from .surgery import prune_3d, prune_depth, prune_resolution, prune_width, unwrap

AXES = ("depth", "width", "resolution")


def ratios_of(model: nn.Module, image_size: int = 28) -> tuple[float, float, float]:
    """Realized ``(d, w, r)`` of a (pruned) ResNet: kept fraction of the removable
    blocks, of all prunable channels (inner and stream), and of the resolution."""
    net, size, base = unwrap(model)
    d = sum(b.removable for b in net.blocks()) / max(net.base_removable, 1)
    kept = sum(b.conv1.out_channels for b in net.blocks()) + sum(
        (s[0].bn2.num_features if len(s) else net.stem[1].num_features) for s in net.stages)
    # the unpruned count over the blocks still present (depth is measured separately)
    full = sum(b.base_mid for b in net.blocks()) + sum(net.base_widths)
    r = 1.0 if size is None else size / base
    return (float(d), float(kept / full), float(r))


def _step(model, axis, ratio, data, criterion, image_size):
    if axis == "depth":
        return prune_depth(model, ratio, data)
    if axis == "width":
        return prune_width(model, ratio, criterion=criterion, data=data)
    return prune_resolution(model, ratio, base_size=image_size)


@dataclass
class ThreeDReport:
    """Outcome of :func:`three_d_prune`.

    Attributes
    ----------
    model : nn.Module
        The pruned, fine-tuned network.
    samples : list of dict
        ``{"d", "w", "r", "accuracy", "flops", "path"}`` for every measured point.
    accuracy_model : AccuracyModel
    optimum : ThreeDOptimum
        Continuous optimum of the fitted model (FLOPs as a fraction of the original).
    chosen : ThreeDOptimum
        The realizable configuration used, with its counted FLOPs fraction.
    base_accuracy, accuracy : float
        Validation accuracy before pruning and after the final fine-tune.
    base_flops, flops : int
        Counted FLOPs per sample before and after.
    """

    model: nn.Module
    samples: list
    accuracy_model: AccuracyModel
    optimum: ThreeDOptimum
    chosen: ThreeDOptimum
    base_accuracy: float
    accuracy: float
    base_flops: int
    flops: int
    info: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{'path':<22} {'d':>5} {'w':>5} {'r':>5} {'FLOPs':>7} {'val acc':>8}"]
        for s in self.samples:
            lines.append(f"{s['path']:<22} {s['d']:5.2f} {s['w']:5.2f} {s['r']:5.2f} {s['flops']:7.3f} {s['accuracy']:8.4f}")
        o, c = self.optimum, self.chosen
        lines += [
            f"fit: {self.accuracy_model.form} degree {self.accuracy_model.degree}, rms residual {self.accuracy_model.residual:.4f}",
            f"continuous optimum d={o.d:.3f} w={o.w:.3f} r={o.r:.3f}: predicted {o.accuracy:.4f} "
            f"(certified <= {o.upper_bound:.4f}), FLOPs {o.flops:.3f}",
            f"realized d={c.d:.3f} w={c.w:.3f} r={c.r:.3f}: predicted {c.accuracy:.4f}, counted FLOPs {c.flops:.3f}",
            f"accuracy {self.base_accuracy:.4f} -> {self.accuracy:.4f}, FLOPs {self.base_flops:,} -> {self.flops:,} "
            f"({self.flops / self.base_flops:.3f})",
        ]
        return "\n".join(lines)


def _as_tensors(data, name):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ParameterError(f"{name} must be a pair (images, labels)")
    X, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    if X.dim() != 4 or len(X) != len(y) or len(y) == 0:
        raise ParameterError(f"{name} needs images (n, C, H, W) and n labels, got {tuple(X.shape)} and {tuple(y.shape)}")
    return X, y


def three_d_prune(
    model: nn.Module,
    train_data,
    val_data,
    *,
    flops_budget: float = 0.5,
    ratios=(0.75, 0.5, 0.25),
    finetune_epochs: int = 1,
    final_epochs: int = 3,
    criterion: str = "l1",
    form: str = "specialized",
    degree: int = 2,
    ridge: float = 1e-4,
    n_calibration: int = 256,
    lr: float = 1e-3,
    progress: bool = True,
    seed: int = 0,
) -> ThreeDReport:
    """Prune ``model`` along depth, width and resolution to ``flops_budget`` of its FLOPs.

    Parameters
    ----------
    model : ResNet
        Trained, unpruned; left unchanged.
    train_data, val_data : (images (n, 1, H, W), labels (n,))
        Fine-tuning data and the data the accuracy samples are measured on.
    flops_budget : float in (0, 1)
        Allowed fraction of the original FLOPs (counted per sample).
    ratios : sequence of float
        Per-dimension schedule of the sampling trajectories (decreasing).
    finetune_epochs, final_epochs : int
        Adam epochs after each sampling step and after the final pruning.
    criterion : {"l1", "bn", "lsq"}
        Width criterion (see :func:`layertrim.bindings.torch.surgery.prune_width`).
    form, degree, ridge
        The accuracy model (see :func:`layertrim.solvers.fit_accuracy_model`).
    n_calibration : int
        Training images used to score blocks and channels.

    Returns
    -------
    ThreeDReport
    """
    from tqdm.auto import tqdm

    flops_budget = check_scalar(flops_budget, "flops_budget", low=0.0, high=1.0, low_open=True, high_open=True)
    check_choice(criterion, "criterion", ("l1", "bn", "lsq"))
    ratios = [check_scalar(r, "ratios", low=0.0, high=1.0, low_open=True, high_open=True) for r in ratios]
    if len(ratios) < 2:
        raise ParameterError("ratios needs at least two steps per dimension")
    X, y = _as_tensors(train_data, "train_data")
    Xv, yv = _as_tensors(val_data, "val_data")
    size = X.shape[-1]
    calib = X[:n_calibration]
    net = copy.deepcopy(model).eval()
    sample = X[:1]
    base_flops = count_flops(net, sample).flops

    def measure(m, path):
        d, w, r = ratios_of(m, size)
        return {"d": d, "w": w, "r": r, "accuracy": accuracy(m, Xv, yv),
                "flops": count_flops(m, sample).flops / base_flops, "path": path}

    def finetune(m, epochs, offset):
        return train(m, X, y, epochs=epochs, lr=lr, seed=seed + offset)

    total = 3 * len(ratios) + 3 + 1
    bar = tqdm(total=total, desc="3-D pruning", disable=not progress)
    samples = [measure(net, "original")]
    trajectories = {}
    for a, axis in enumerate(AXES):
        current = net
        trajectories[axis] = []
        for i, ratio in enumerate(ratios):
            current = finetune(_step(current, axis, ratio, calib, criterion, size), finetune_epochs, 100 * a + i)
            trajectories[axis].append(current)
            samples.append(measure(current, f"{axis} {ratio:.2f}"))
            bar.update()
    mid = len(ratios) // 2
    for a, (first, second) in enumerate([("depth", "width"), ("depth", "resolution"), ("width", "resolution")]):
        m = finetune(_step(trajectories[first][mid], second, ratios[mid], calib, criterion, size),
                     finetune_epochs, 1000 + a)
        samples.append(measure(m, f"{first}+{second} {ratios[mid]:.2f}"))
        bar.update()

    pts = np.array([[s["d"], s["w"], s["r"]] for s in samples])
    acc_model = fit_accuracy_model(pts, np.array([s["accuracy"] for s in samples]), form=form, degree=degree, ridge=ridge)
    fm = resnet_flops_model(net, size)
    fm = FlopsModel(fm.coef / fm.total, fm.powers)
    lower = pts.min(axis=0)
    optimum = maximize_accuracy(acc_model, fm, flops_budget, lower=lower, upper=1.0)

    base_removable = max(net.base_removable, 1)
    depths = np.arange(base_removable + 1) / base_removable
    c_min = min(net.base_widths)
    widths = np.arange(1, c_min + 1) / c_min
    resolutions = np.arange(1, size + 1) / size
    keep = lambda v, lo: v[v >= lo - 1e-9]  # noqa: E731 - stay inside the sampled box
    built = {}

    def counted(d, w, r):
        m = prune_3d(net, d, w, r, data=calib, criterion=criterion, base_size=size)
        built[(d, w, r)] = m
        return count_flops(m, sample).flops / base_flops

    chosen = realizable_optimum(acc_model, fm, flops_budget, keep(depths, lower[0]), keep(widths, lower[1]),
                                keep(resolutions, lower[2]), check=counted)
    pruned = finetune(built[(chosen.d, chosen.w, chosen.r)], final_epochs, 10_000)
    bar.update()
    bar.close()
    final_flops = count_flops(pruned, sample).flops
    return ThreeDReport(
        model=pruned, samples=samples, accuracy_model=acc_model, optimum=optimum, chosen=chosen,
        base_accuracy=samples[0]["accuracy"], accuracy=accuracy(pruned, Xv, yv),
        base_flops=base_flops, flops=final_flops, info={"flops_model": fm, "flops_budget": flops_budget},
    )


def single_axis_prune(model: nn.Module, axis: str, flops_budget: float, train_data, *, epochs: int = 3,
                      criterion: str = "l1", n_calibration: int = 256, lr: float = 1e-3, seed: int = 0):
    """Prune along one dimension only, to the largest realizable ratio whose counted
    FLOPs meet ``flops_budget``, then fine-tune ``epochs``. Returns ``(model, ratio, flops_fraction)``."""
    check_choice(axis, "axis", AXES)
    X, y = _as_tensors(train_data, "train_data")
    size = X.shape[-1]
    calib, sample = X[:n_calibration], X[:1]
    net = copy.deepcopy(model).eval()
    base = count_flops(net, sample).flops
    if axis == "depth":
        grid = np.arange(net.base_removable + 1) / max(net.base_removable, 1)
    elif axis == "width":
        grid = np.arange(1, max(net.base_widths) + 1) / max(net.base_widths)
    else:
        grid = np.arange(1, size + 1) / size
    for ratio in grid[::-1]:
        if ratio <= 0 and axis != "depth":
            continue
        m = _step(net, axis, float(ratio), calib, criterion, size)
        frac = count_flops(m, sample).flops / base
        if frac <= flops_budget:
            return train(m, X, y, epochs=epochs, lr=lr, seed=seed + 10_000), float(ratio), frac
    raise InfeasibleError(f"pruning {axis} alone cannot reach {flops_budget:.3f} of the FLOPs")


def compare_plans(model: nn.Module, train_data, val_data, test_data, *, flops_budget: float = 0.5,
                  final_epochs: int = 3, **kwargs):
    """Three-dimensional plan against depth-, width- and resolution-only pruning at the
    same FLOPs budget and the same final fine-tuning. Returns ``(rows, report)`` with
    rows ``{"plan", "d", "w", "r", "flops", "test_accuracy"}``."""
    Xt, yt = _as_tensors(test_data, "test_data")
    report = three_d_prune(model, train_data, val_data, flops_budget=flops_budget, final_epochs=final_epochs, **kwargs)
    size = Xt.shape[-1]
    sample = Xt[:1]
    base = count_flops(model, sample).flops
    rows = [{"plan": "unpruned", **dict(zip("dwr", ratios_of(model, size))), "flops": 1.0,
             "test_accuracy": accuracy(model, Xt, yt)}]
    rows.append({"plan": "3-D (fitted)", **dict(zip("dwr", ratios_of(report.model, size))),
                 "flops": report.flops / base, "test_accuracy": accuracy(report.model, Xt, yt)})
    single_kw = {k: kwargs[k] for k in ("criterion", "n_calibration", "lr", "seed") if k in kwargs}
    for axis in AXES:
        m, _, frac = single_axis_prune(model, axis, flops_budget, train_data, epochs=final_epochs, **single_kw)
        rows.append({"plan": f"{axis} only", **dict(zip("dwr", ratios_of(m, size))), "flops": frac,
                     "test_accuracy": accuracy(m, Xt, yt)})
    return rows, report


def format_rows(rows) -> str:
    """The comparison table of :func:`compare_plans` as text."""
    lines = [f"{'plan':<16} {'d':>5} {'w':>5} {'r':>5} {'FLOPs':>6} {'test acc':>9}"]
    lines += [f"{r['plan']:<16} {r['d']:5.2f} {r['w']:5.2f} {r['r']:5.2f} {r['flops']:6.3f} {r['test_accuracy']:9.4f}"
              for r in rows]
    return "\n".join(lines)


def plot_accuracy_surface(report: ThreeDReport, ax=None, n: int = 60):
    """Contours of the fitted ``acc(d*, w, r)`` over width and resolution at the chosen depth,
    the FLOPs-budget curve (dashed), the samples and the chosen point."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    pts = np.array([[s["d"], s["w"], s["r"]] for s in report.samples])
    w = np.linspace(pts[:, 1].min(), 1, n)
    r = np.linspace(pts[:, 2].min(), 1, n)
    d = report.chosen.d
    Z = report.accuracy_model.grid(np.array([d]), w, r)[0]
    cs = ax.contourf(r, w, Z, levels=20, cmap="viridis")
    plt.colorbar(cs, ax=ax, label="predicted accuracy")
    F = report.info["flops_model"].grid(np.array([d]), w, r)[0]
    ax.contour(r, w, F, levels=[report.info["flops_budget"]], colors="red", linestyles="--")
    ax.scatter(pts[:, 2], pts[:, 1], c="white", edgecolors="k", s=20, label="samples")
    ax.scatter([report.chosen.r], [report.chosen.w], marker="*", c="red", s=150, label="chosen")
    ax.set_xlabel("resolution ratio r")
    ax.set_ylabel("width ratio w")
    ax.set_title(f"fitted accuracy at d = {d:.2f}")
    ax.legend(loc="lower right", fontsize=8)
    return ax
