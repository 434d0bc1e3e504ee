"""The sampling of :func:`.threed.three_d_prune`: realized ratios of a pruned ResNet,
the sample points along each dimension and on the FLOPs budget, and
:class:`Sampling`, which prunes, fine-tunes and records the accuracy samples
and fits and maximizes the accuracy model over them."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.threed import FlopsModel, fit_accuracy_model, maximize_accuracy, realizable_optimum

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


def _ancestor(pool, target):
    """The most pruned sampled model whose realized ratios all dominate ``target``
    (iterative pruning continues from it); ``pool`` holds ``(model, ratios, flops)``."""
    ok = [(f, i) for i, (_, x, f) in enumerate(pool) if all(xa >= ta - 1e-9 for xa, ta in zip(x, target))]
    return pool[min(ok)[1]][0]


class Sampling:
    """The accuracy samples of one :func:`.threed.three_d_prune` run.

    ``samples`` holds ``{"d", "w", "r", "accuracy", "flops", "path"}`` per
    measured model and ``pool`` the models themselves, ``(model, ratios,
    flops)``, to prune further. ``per_stage`` maps each realizable width to its
    per-stage ratios; ``train_kw`` (``lr``, ``cosine``, ``shift``) goes to
    :func:`..training.train`, with seed ``seed`` plus an offset per fine-tune.
    ``fm`` is the network's FLOPs model as a fraction of its FLOPs.
    """

    def __init__(self, net, train_data, val_data, *, calib, per_stage, criterion, epochs, seed, **train_kw):
        self.net, self.calib, self.per_stage, self.criterion = net, calib, per_stage, criterion
        self.epochs, self.seed, self.train_kw = epochs, seed, train_kw
        (self.X, self.y), (self.Xv, self.yv) = train_data, val_data
        self.size, self.sample = self.X.shape[-1], self.X[:1]
        self.base_flops = count_flops(net, self.sample).flops
        fm = resnet_flops_model(net, self.size)
        self.fm = FlopsModel(fm.coef / fm.total, fm.powers)
        self.samples, self.pool, self._flops_of = [], [], {}

    def record(self, m, path):
        """Measure ``m`` (validation accuracy, counted FLOPs) and keep it as a sample."""
        d, w, r = ratios_of(m, self.size)
        s = {"d": d, "w": w, "r": r, "accuracy": accuracy(m, self.Xv, self.yv),
             "flops": count_flops(m, self.sample).flops / self.base_flops, "path": path}
        self.samples.append(s)
        self.pool.append((m, (d, w, r), s["flops"]))

    def finetune(self, m, epochs, offset):
        return train(m, self.X, self.y, epochs=epochs, seed=self.seed + offset, **self.train_kw)

    def build(self, start, d, w, r, criterion=None):
        """``start`` pruned to ``(d, w, r)``, the width as its per-stage ratios."""
        return prune_3d(start, d, self.per_stage.get(w, w), r, data=self.calib,
                        criterion=criterion or self.criterion, base_size=self.size)

    def sample_at(self, x, path, offset):
        """Prune the most pruned dominating sample to ``x``, fine-tune it briefly, record it."""
        self.record(self.finetune(self.build(_ancestor(self.pool, x), *x), self.epochs, offset), path)

    def walk(self, a, trajectory, bar):
        """Prune along axis ``a`` alone, step by step down ``trajectory`` (FLOPs fractions),
        each step from the previous fine-tuned one; a step that rounds to no change is skipped."""
        axis, current = AXES[a], self.net
        for i, target in enumerate(trajectory):
            step = _step(current, axis, _axis_ratio(self.fm, a, target), self.calib, self.criterion, self.size)
            if ratios_of(step, self.size) != ratios_of(current, self.size):
                current = self.finetune(step, self.epochs, 100 * a + i)
                self.record(current, f"{axis} {ratios_of(current, self.size)[a]:.2f}")
            bar.update()

    def counted(self, d, w, r):
        """Counted FLOPs fraction of the original pruned to ``(d, w, r)`` (cached)."""
        # FLOPs do not depend on which channels are kept: count with the cheap criterion
        if (d, w, r) not in self._flops_of:
            flops = count_flops(self.build(self.net, d, w, r, "l1"), self.sample).flops
            self._flops_of[(d, w, r)] = flops / self.base_flops
        return self._flops_of[(d, w, r)]

    def fit_and_solve(self, budget, grids, **model_kw):
        """Fit ``acc(d, w, r)`` to the samples (``model_kw``: form, degree, ridge, monotone) and
        return it with its continuous optimum and the best realizable configuration of
        ``grids`` (depths, widths, resolutions) inside the sampled box."""
        pts = np.array([[s["d"], s["w"], s["r"]] for s in self.samples])
        acc_model = fit_accuracy_model(pts, np.array([s["accuracy"] for s in self.samples]), **model_kw)
        lower = pts.min(axis=0)
        optimum = maximize_accuracy(acc_model, self.fm, budget, lower=lower, upper=1.0)
        inside = [g[g >= lo - 1e-9] for g, lo in zip(grids, lower)]
        chosen = realizable_optimum(acc_model, self.fm, budget, *inside, check=self.counted, slack=0.5)
        return acc_model, optimum, chosen
