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

The sampling itself is in :mod:`.threed_sampling`;
:func:`.threed_compare.single_axis_prune` prunes the same budget along one
dimension (the baselines) and :func:`.threed_compare.compare_plans` runs all
four with equal fine-tuning.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar
from layertrim.solvers.threed import AccuracyModel, ThreeDOptimum

from .flops import count_flops
from ..training import accuracy
from .surgery import prune_width
from .threed_sampling import AXES, Sampling, _as_tensors, _budget_points, ratios_of


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

    flops_budget, trajectory, refine = _check_plan(flops_budget, trajectory, refine, criterion)
    X, y = _as_tensors(train_data, "train_data")
    val = _as_tensors(val_data, "val_data")
    net = copy.deepcopy(model).eval()
    per_stage, grids = _realizable_grids(net, X.shape[-1], X[:1])
    run = Sampling(net, (X, y), val, calib=X[:n_calibration], per_stage=per_stage, criterion=criterion,
                   epochs=finetune_epochs, seed=seed, lr=lr, cosine=cosine, shift=shift)
    fit = {"form": form, "degree": degree, "ridge": ridge, "monotone": monotone}
    budget_points = _budget_points(run.fm, flops_budget)
    start = time.perf_counter()
    bar = tqdm(total=1 + 3 * len(trajectory) + len(budget_points) + refine + 1, desc="3-D pruning",
               disable=not progress)
    run.record(net, "original")
    bar.update()
    for a in range(len(AXES)):
        run.walk(a, trajectory, bar)
    _sample_budget(run, budget_points, grids, flops_budget, bar)
    acc_model, optimum, chosen = run.fit_and_solve(flops_budget, grids, **fit)
    for j in range(refine):
        run.sample_at(chosen.ratios, f"refine {j + 1}", 2000 + j)
        acc_model, optimum, chosen = run.fit_and_solve(flops_budget, grids, **fit)
        bar.update()
    sampling = time.perf_counter() - start
    start = time.perf_counter()
    pruned = run.finetune(run.build(net, *chosen.ratios), final_epochs, 10_000)
    final = time.perf_counter() - start
    bar.update()
    bar.close()
    final_flops = count_flops(pruned, X[:1]).flops
    info = {"flops_model": run.fm, "flops_budget": flops_budget, "sampling_seconds": sampling,
            "final_seconds": final, "sample_finetune_epochs": finetune_epochs * (len(run.samples) - 1)}
    return ThreeDReport(model=pruned, samples=run.samples, accuracy_model=acc_model, optimum=optimum, chosen=chosen,
                        base_accuracy=run.samples[0]["accuracy"], accuracy=accuracy(pruned, *val),
                        base_flops=run.base_flops, flops=final_flops, info=info)


def _check_plan(flops_budget, trajectory, refine, criterion):
    """Validated ``(flops_budget, trajectory, refine)`` of :func:`three_d_prune`."""
    flops_budget = check_scalar(flops_budget, "flops_budget", low=0.0, high=1.0, low_open=True, high_open=True)
    check_choice(criterion, "criterion", ("l1", "bn", "lsq"))
    if trajectory is None:
        trajectory = [flops_budget ** (k / 3) for k in (1, 2, 3, 4)]
    trajectory = [check_scalar(t, "trajectory", low=0.0, high=1.0, low_open=True, high_open=True)
                  for t in trajectory]
    refine = check_scalar(refine, "refine", low=0, integer=True)
    if len(trajectory) < 2:
        raise ParameterError("trajectory needs at least two steps per dimension")
    return flops_budget, trajectory, refine


def _realizable_grids(net, size, sample):
    """``(per_stage, (depths, widths, resolutions))``: the realizable ratios of each dimension
    (whole blocks, near-uniform per-stage widths, whole pixels) and the per-stage ratios
    of each realizable width."""
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
    return per_stage, (depths, np.array(sorted(per_stage)), np.arange(1, size + 1) / size)


def _sample_budget(run, points, grids, budget, bar):
    """Sample each budget point moved onto the budget along its ray (each configuration once)."""
    depths, widths, resolutions = grids
    done = set()
    for j, (name, x) in enumerate(points):
        # the FLOPs model ignores rounding (channels, feature-map sizes): the counted FLOPs decide
        x = _onto_budget(x, (depths[depths > 0], widths, resolutions), run.counted, budget)
        if x is not None and x not in done:
            done.add(x)
            run.sample_at(x, f"budget {name}", 1000 + j)
        bar.update()


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


def _width_candidates(net) -> list[tuple[float, ...]]:
    """Per-stage width ratios within one channel of a uniform ratio ``w``, for every ``w``
    on the finest channel grid: the near-uniform width-only configurations."""
    out = set()
    for w in np.arange(1, max(net.base_widths) + 1) / max(net.base_widths):
        options = [sorted({max(1, int(np.floor(w * c))), min(c, int(np.ceil(w * c)))}) for c in net.base_widths]
        for ks in itertools.product(*options):
            out.add(tuple(k / c for k, c in zip(ks, net.base_widths)))
    return sorted(out)


def format_rows(rows) -> str:
    """The comparison table of :func:`compare_plans` as text."""
    lines = [f"{'plan':<16} {'d':>5} {'w':>5} {'r':>5} {'FLOPs':>6} {'test acc':>9}"]
    lines += [f"{r['plan']:<16} {r['d']:5.2f} {r['w']:5.2f} {r['r']:5.2f} {r['flops']:6.3f} {r['test_accuracy']:9.4f}"
              for r in rows]
    return "\n".join(lines)
