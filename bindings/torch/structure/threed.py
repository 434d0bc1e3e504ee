"""Three-dimensional pruning of a :class:`ResNet`, end to end (Wang et al.).

1. Sample: from the trained model walk each dimension alone (depth, width,
   resolution) down a schedule of FLOPs fractions that brackets the budget,
   pruning the previous, already fine-tuned model a step further and
   fine-tuning it briefly (iterative pruning reuses the earlier results);
   then up to ten off-axis points on the FLOPs budget, where the
   constrained optimum lies (each pair of dimensions splitting the FLOPs
   reduction 1:2, 1:1 and 2:1, and all three sharing it equally), each
   snapped to the realizable configuration on its ray with the most
   counted FLOPs within the budget.
   Record the validation accuracy at every ``(d, w, r)``.
2. Fit ``acc(d, w, r)`` (:func:`layertrim.solvers.fit_accuracy_model`),
   by default constrained to be nondecreasing in each ratio, so it cannot
   extrapolate above the unpruned accuracy.
3. Maximize it under the FLOPs budget with the network's own FLOPs model
   (:func:`layertrim.solvers.maximize_accuracy`), over the box the samples
   span, then pick the best realizable configuration (whole blocks; the
   same near-uniform per-stage channel counts as the width-only baseline;
   whole pixels) whose *counted* FLOPs meet the budget
   (:func:`layertrim.solvers.realizable_optimum`); sample
   that configuration too, refit and solve again (``refine`` rounds).
4. Prune the original model to it and fine-tune.

:func:`single_axis_prune` prunes the same budget along one dimension (the
baselines) and :func:`compare_plans` runs all four with equal fine-tuning.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.errors import InfeasibleError, ParameterError
from layertrim.solvers.threed import (
    AccuracyModel,
    FlopsModel,
    ThreeDOptimum,
    fit_accuracy_model,
    maximize_accuracy,
    realizable_optimum,
)
from layertrim.solvers.base.validation import check_choice, check_scalar

from .flops import count_flops, resnet_flops_model
from ..training import accuracy, train
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
        lines = [f"{'path':<30} {'d':>5} {'w':>5} {'r':>5} {'FLOPs':>7} {'val acc':>8}"]
        for s in self.samples:
            lines.append(f"{s['path']:<30} {s['d']:5.2f} {s['w']:5.2f} {s['r']:5.2f} {s['flops']:7.3f} {s['accuracy']:8.4f}")
        o, c = self.optimum, self.chosen
        lines += [
            f"fit: {self.accuracy_model.form} degree {self.accuracy_model.degree}, rms residual {self.accuracy_model.residual:.4f}",
            f"continuous optimum d={o.d:.3f} w={o.w:.3f} r={o.r:.3f}: predicted {o.accuracy:.4f} "
            f"(certified <= {o.upper_bound:.4f}), FLOPs {o.flops:.3f}",
            f"realized d={c.d:.3f} w={c.w:.3f} r={c.r:.3f}: predicted {c.accuracy:.4f}, counted FLOPs {c.flops:.3f}",
            f"accuracy {self.base_accuracy:.4f} -> {self.accuracy:.4f}, FLOPs {self.base_flops:,} -> {self.flops:,} "
            f"({self.flops / self.base_flops:.3f})",
        ]
        if "sampling_seconds" in self.info:
            lines.append(f"cost: {len(self.samples) - 1} samples, {self.info['sample_finetune_epochs']} fine-tuning epochs, "
                         f"{self.info['sampling_seconds']:.1f} s; final fine-tune {self.info['final_seconds']:.1f} s")
        return "\n".join(lines)


def _as_tensors(data, name):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ParameterError(f"{name} must be a pair (images, labels)")
    X, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    if X.dim() != 4 or len(X) != len(y) or len(y) == 0:
        raise ParameterError(f"{name} needs images (n, C, H, W) and n labels, got {tuple(X.shape)} and {tuple(y.shape)}")
    return X, y


def _axis_ratio(fm: FlopsModel, axis: int, target: float) -> float:
    """The ratio along ``axis`` alone (others at 1) whose modelled FLOPs fraction is ``target``
    (bisection; ``F`` is nondecreasing along the axis)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        x = [1.0, 1.0, 1.0]
        x[axis] = mid
        lo, hi = (mid, hi) if float(fm(*x)) < target else (lo, mid)
    return hi


def _budget_points(fm: FlopsModel, budget: float) -> list[tuple[str, tuple[float, float, float]]]:
    """Off-axis points on the budget surface: each pair of dimensions splitting the FLOPs
    reduction 1:2, 1:1 and 2:1, and all three sharing it equally (a dimension with share
    ``s`` keeps the ratio whose modelled FLOPs alone are ``budget^s``)."""
    points = []
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        for share in (1 / 3, 1 / 2, 2 / 3):
            x = [1.0, 1.0, 1.0]
            x[a], x[b] = _axis_ratio(fm, a, budget ** share), _axis_ratio(fm, b, budget ** (1 - share))
            points.append((f"{AXES[a]} {share:.2f} + {AXES[b]}", tuple(x)))
    points.append(("depth+width+resolution", tuple(_axis_ratio(fm, a, budget ** (1 / 3)) for a in range(3))))
    return points


def _onto_budget(x, grids, counted, budget):
    """The realizable configuration with the most counted FLOPs within ``budget`` on the ray
    ``x^t`` (``t`` in [0.5, 3], log-spaced ratios keep the split between the pruned
    dimensions), each ratio snapped to the nearest value of its grid; ``None`` if none fits."""
    logx = np.log(np.asarray(x, dtype=np.float64))
    best, seen = None, set()
    for t in np.linspace(0.5, 3.0, 51):
        y = tuple(float(g[np.argmin(np.abs(np.log(g) - t * lx))]) for g, lx in zip(grids, logx))
        if y in seen:
            continue
        seen.add(y)
        f = counted(*y)
        if f <= budget and (best is None or f > best[0] + 1e-12):
            best = (f, y)
    return None if best is None else best[1]


def _ancestor(pool, target):
    """The most pruned sampled model whose realized ratios all dominate ``target``
    (iterative pruning continues from it); ``pool`` holds ``(model, ratios, flops)``."""
    ok = [(f, i) for i, (_, x, f) in enumerate(pool) if all(xa >= ta - 1e-9 for xa, ta in zip(x, target))]
    return pool[min(ok)[1]][0]


def three_d_prune(
    model: nn.Module,
    train_data,
    val_data,
    *,
    flops_budget: float = 0.5,
    trajectory=None,
    finetune_epochs: int = 1,
    final_epochs: int = 3,
    criterion: str = "lsq",
    form: str = "specialized",
    degree: int = 2,
    ridge: float = 1e-4,
    monotone: bool = True,
    refine: int = 1,
    n_calibration: int = 256,
    lr: float = 1e-3,
    cosine: bool = True,
    shift: int = 0,
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
    trajectory : sequence of float, optional
        FLOPs fractions (decreasing) at which each single-dimension trajectory
        is sampled, by the FLOPs model; default ``flops_budget ** (k / 3)``
        for ``k = 1, 2, 3, 4``, geometric steps that end just below the
        budget so that the budget surface is interpolated, not extrapolated.
        A step that rounds to the previous realizable configuration (whole
        blocks, channels, pixels) is skipped.
    finetune_epochs, final_epochs : int
        Adam epochs after each sampling step and after the final pruning.
    criterion : {"l1", "bn", "lsq"}
        Width criterion (see :func:`layertrim.bindings.torch.structure.surgery.prune_width`).
    form, degree, ridge, monotone
        The accuracy model (see :func:`layertrim.solvers.fit_accuracy_model`);
        the monotone fit cannot predict more than the unpruned accuracy.
    refine : int
        Rounds of sequential design: sample the chosen configuration itself
        (pruned from its closest sampled ancestor and fine-tuned briefly),
        refit and solve again.
    n_calibration : int
        Training images used to score blocks and channels.
    lr, cosine, shift
        Fine-tuning: Adam learning rate, cosine decay to 0 within every
        fine-tune, random translations of up to ``shift`` pixels
        (:func:`layertrim.bindings.torch.training.train`).

    Returns
    -------
    ThreeDReport

    Notes
    -----
    Samples: the unpruned model; up to ``len(trajectory)`` steps along each
    dimension alone; up to ten points on the FLOPs budget (each pair of
    dimensions splitting the reduction 1:2, 1:1 and 2:1 by the FLOPs model,
    and all three sharing it equally; each point ``x`` then moved along the
    ray ``x^t``, which keeps the split, to the realizable configuration with
    the most counted FLOPs within the budget; duplicates sampled once),
    where the optimum lies since accuracy is nondecreasing in each ratio;
    and ``refine`` points at the chosen optimum. Each off-axis point is
    pruned from the most pruned sampled model that dominates it, so
    fine-tuning is reused as in the iterative scheme of the method. The
    final network is pruned from the original model, not from a sample.
    Realizable candidates are ranked by the fitted model; those whose
    modelled FLOPs exceed the budget by up to 50% are still counted, since
    the FLOPs model ignores the rounding of channels and feature maps.
    """
    from tqdm.auto import tqdm

    flops_budget = check_scalar(flops_budget, "flops_budget", low=0.0, high=1.0, low_open=True, high_open=True)
    check_choice(criterion, "criterion", ("l1", "bn", "lsq"))
    if trajectory is None:
        trajectory = [flops_budget ** (k / 3) for k in (1, 2, 3, 4)]
    trajectory = [check_scalar(t, "trajectory", low=0.0, high=1.0, low_open=True, high_open=True)
                  for t in trajectory]
    refine = check_scalar(refine, "refine", low=0, integer=True)
    if len(trajectory) < 2:
        raise ParameterError("trajectory needs at least two steps per dimension")
    X, y = _as_tensors(train_data, "train_data")
    Xv, yv = _as_tensors(val_data, "val_data")
    size = X.shape[-1]
    calib = X[:n_calibration]
    net = copy.deepcopy(model).eval()
    sample = X[:1]
    base_flops = count_flops(net, sample).flops
    fm = resnet_flops_model(net, size)
    fm = FlopsModel(fm.coef / fm.total, fm.powers)
    samples, pool = [], []

    def record(m, path):
        d, w, r = ratios_of(m, size)
        s = {"d": d, "w": w, "r": r, "accuracy": accuracy(m, Xv, yv),
             "flops": count_flops(m, sample).flops / base_flops, "path": path}
        samples.append(s)
        pool.append((m, (d, w, r), s["flops"]))

    def finetune(m, epochs, offset):
        return train(m, X, y, epochs=epochs, lr=lr, seed=seed + offset, cosine=cosine, shift=shift)

    base_removable = max(net.base_removable, 1)
    depths = np.arange(base_removable + 1) / base_removable
    # realizable widths: the near-uniform per-stage ratios of the width-only baseline, by their kept
    # fraction of channels; of several with the same fraction, the closest to a uniform scaling of
    # all stages (the smallest spread of the per-stage ratios), then the one with the fewest FLOPs
    per_stage, rank = {}, {}
    for ws in _width_candidates(net):
        m = prune_width(net, ws)
        w, key = ratios_of(m, size)[1], (float(np.ptp(ws)), count_flops(m, sample).flops)
        if key < rank.get(w, (np.inf, np.inf)):
            per_stage[w], rank[w] = ws, key
    widths = np.array(sorted(per_stage))
    resolutions = np.arange(1, size + 1) / size

    def build(start, d, w, r, crit=criterion):
        return prune_3d(start, d, per_stage.get(w, w), r, data=calib, criterion=crit, base_size=size)

    def sample_at(x, path, offset):
        record(finetune(build(_ancestor(pool, x), *x), finetune_epochs, offset), path)

    flops_of = {}

    def counted(d, w, r):
        # FLOPs do not depend on which channels are kept: count with the cheap criterion
        if (d, w, r) not in flops_of:
            flops_of[(d, w, r)] = count_flops(build(net, d, w, r, "l1"), sample).flops / base_flops
        return flops_of[(d, w, r)]

    def fit_and_solve():
        pts = np.array([[s["d"], s["w"], s["r"]] for s in samples])
        acc_model = fit_accuracy_model(pts, np.array([s["accuracy"] for s in samples]), form=form, degree=degree,
                                       ridge=ridge, monotone=monotone)
        lower = pts.min(axis=0)
        optimum = maximize_accuracy(acc_model, fm, flops_budget, lower=lower, upper=1.0)
        keep = lambda v, lo: v[v >= lo - 1e-9]  # noqa: E731 - stay inside the sampled box
        chosen = realizable_optimum(acc_model, fm, flops_budget, keep(depths, lower[0]), keep(widths, lower[1]),
                                    keep(resolutions, lower[2]), check=counted, slack=0.5)
        return acc_model, optimum, chosen

    budget_points = _budget_points(fm, flops_budget)
    start = time.perf_counter()
    bar = tqdm(total=1 + 3 * len(trajectory) + len(budget_points) + refine + 1, desc="3-D pruning",
               disable=not progress)
    record(net, "original")
    bar.update()
    for a, axis in enumerate(AXES):
        current = net
        for i, target in enumerate(trajectory):
            step = _step(current, axis, _axis_ratio(fm, a, target), calib, criterion, size)
            if ratios_of(step, size) != ratios_of(current, size):
                current = finetune(step, finetune_epochs, 100 * a + i)
                record(current, f"{axis} {ratios_of(current, size)[a]:.2f}")
            bar.update()
    done = set()
    for j, (name, x) in enumerate(budget_points):
        # the FLOPs model ignores rounding (channels, feature-map sizes): the counted FLOPs decide
        x = _onto_budget(x, (depths[depths > 0], widths, resolutions), counted, flops_budget)
        if x is not None and x not in done:
            done.add(x)
            sample_at(x, f"budget {name}", 1000 + j)
        bar.update()
    acc_model, optimum, chosen = fit_and_solve()
    for j in range(refine):
        sample_at(chosen.ratios, f"refine {j + 1}", 2000 + j)
        acc_model, optimum, chosen = fit_and_solve()
        bar.update()
    sampling = time.perf_counter() - start
    start = time.perf_counter()
    pruned = finetune(build(net, *chosen.ratios), final_epochs, 10_000)
    final = time.perf_counter() - start
    bar.update()
    bar.close()
    final_flops = count_flops(pruned, sample).flops
    return ThreeDReport(
        model=pruned, samples=samples, accuracy_model=acc_model, optimum=optimum, chosen=chosen,
        base_accuracy=samples[0]["accuracy"], accuracy=accuracy(pruned, Xv, yv),
        base_flops=base_flops, flops=final_flops, info={"flops_model": fm, "flops_budget": flops_budget,
                                                         "sampling_seconds": sampling, "final_seconds": final,
                                                         "sample_finetune_epochs": finetune_epochs * (len(samples) - 1)},
    )


def _width_candidates(net) -> list[tuple[float, ...]]:
    """Per-stage width ratios within one channel of a uniform ratio ``w``, for every ``w``
    on the finest channel grid: the near-uniform width-only configurations."""
    out = set()
    for w in np.arange(1, max(net.base_widths) + 1) / max(net.base_widths):
        options = [sorted({max(1, int(np.floor(w * c))), min(c, int(np.ceil(w * c)))}) for c in net.base_widths]
        for ks in itertools.product(*options):
            out.add(tuple(k / c for k, c in zip(ks, net.base_widths)))
    return sorted(out)


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
