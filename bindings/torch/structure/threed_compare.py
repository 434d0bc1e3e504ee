"""Baselines for :func:`.threed.three_d_prune`: the same FLOPs budget pruned along one
dimension alone (:func:`single_axis_prune`), all four plans compared with equal
fine-tuning (:func:`compare_plans`), and a plot of the fitted accuracy surface."""
from __future__ import annotations

import copy

import numpy as np
from torch import nn

from layertrim.solvers.base.errors import InfeasibleError
from layertrim.solvers.base.validation import check_choice

from .flops import count_flops
from ..training import accuracy, train
from .threed import ThreeDReport, _width_candidates, three_d_prune
from .threed_sampling import AXES, _as_tensors, _step, ratios_of


def single_axis_prune(model: nn.Module, axis: str, flops_budget: float, train_data, *, epochs: int = 3,
                      criterion: str = "lsq", n_calibration: int = 256, lr: float = 1e-3, cosine: bool = True,
                      shift: int = 0, seed: int = 0):
    """Prune along one dimension only, to the realizable configuration with the most counted
    FLOPs within ``flops_budget``, then fine-tune ``epochs`` (as :func:`three_d_prune`'s final
    fine-tune: ``lr``, ``cosine``, ``shift``, seed). Returns ``(model, ratio, flops_fraction)``.

    Depth: the number of removable blocks kept; resolution: whole pixels; width:
    one ratio per stage, each within one channel of a common ratio (uniform
    widths alone jump by the rounding of the narrowest stage, so this lets the
    baseline use its budget as fully as the other plans).
    """
    check_choice(axis, "axis", AXES)
    X, y = _as_tensors(train_data, "train_data")
    size = X.shape[-1]
    calib, sample = X[:n_calibration], X[:1]
    net = copy.deepcopy(model).eval()
    base = count_flops(net, sample).flops
    if axis == "depth":
        grid = list(np.arange(net.base_removable + 1) / max(net.base_removable, 1))
    elif axis == "width":
        grid = _width_candidates(net)
    else:
        grid = list(np.arange(1, size + 1) / size)
    best = None
    for ratio in grid:
        # FLOPs do not depend on which channels are kept: count with the cheap criterion
        m = _step(net, axis, ratio, calib, "l1" if axis == "width" else criterion, size)
        frac = count_flops(m, sample).flops / base
        if frac <= flops_budget and (best is None or frac > best[1]):
            best = (ratio, frac)
    if best is None:
        raise InfeasibleError(f"pruning {axis} alone cannot reach {flops_budget:.3f} of the FLOPs")
    m = _step(net, axis, best[0], calib, criterion, size)
    ratio = float(np.mean(best[0])) if axis == "width" else float(best[0])
    return train(m, X, y, epochs=epochs, lr=lr, seed=seed + 10_000, cosine=cosine, shift=shift), ratio, best[1]


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
    single_kw = {k: kwargs[k] for k in ("criterion", "n_calibration", "lr", "cosine", "shift", "seed") if k in kwargs}
    for axis in AXES:
        m, _, frac = single_axis_prune(model, axis, flops_budget, train_data, epochs=final_epochs, **single_kw)
        rows.append({"plan": f"{axis} only", **dict(zip("dwr", ratios_of(m, size))), "flops": frac,
                     "test_accuracy": accuracy(m, Xt, yt)})
    return rows, report


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
