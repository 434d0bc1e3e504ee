"""Plans of :func:`.structured.prune_structured`: channels kept per group for a FLOPs or per-layer
target (a FLOPs model from one forward pass), and the report."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from layertrim.solvers.base.errors import InfeasibleError, ParameterError
from layertrim.solvers.base.validation import check_scalar


@dataclass
class GroupPlan:
    """One coupled group: its root layer, channels before/kept, its consumers, the criterion that chose."""

    root: str
    n: int
    keep: int
    consumers: list
    kept: list = field(default_factory=list)
    choice: str = ""


@dataclass
class StructuredReport:
    """The pruned model (a new one; the argument is unchanged), its groups, FLOPs and parameters.

    ``refit`` maps each refit consumer to its ridge (relative to ``mean diag(G)``;
    None: no refit did better on held-out samples, the kept dense weights stay).
    """

    model: nn.Module
    groups: list
    flops: tuple
    params: tuple
    method: str
    refit: dict = field(default_factory=dict)

    def group(self, root: str) -> GroupPlan:
        """The plan of the group rooted at layer ``root``."""
        for g in self.groups:
            if g.root == root:
                return g
        raise ParameterError(f"no group is rooted at {root!r}; roots: {[g.root for g in self.groups]}")

    @property
    def flops_removed(self) -> float:
        return 1 - self.flops[1] / self.flops[0]

    def __str__(self) -> str:
        rows = [f"{'group root':<28}{'channels':>9}{'kept':>6}  consumers"]
        rows += [f"{g.root:<28}{g.n:>9}{g.keep:>6}  {', '.join(g.consumers) or '-'}" for g in self.groups]
        if self.refit:
            rows.append("refit ridge: " + ", ".join(f"{n} {'none' if r is None else f'{r:g}'}"
                                                    for n, r in self.refit.items()))
        rows.append(f"method {self.method}: FLOPs {self.flops[0]:.4g} -> {self.flops[1]:.4g} "
                    f"({self.flops_removed:.1%} removed), parameters {self.params[0]:,} -> {self.params[1]:,}")
        return "\n".join(rows)


def layer_flops(model, example):
    """Multiply-accumulates of every Conv2d / Linear on ``example`` (per layer, from hooks)."""
    flops, hooks = {}, []

    def hook(mod, inp, out):
        per_out = mod.weight[0].numel()  # in/groups * kh * kw, or in_features
        flops[mod] = flops.get(mod, 0) + per_out * out.numel()

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return flops


def _estimate(flops, plans, sides, keeps):
    frac = {m: 1.0 for m in flops}
    for p, side, k in zip(plans, sides, keeps):
        for m in side:
            frac[m] *= k / p.n
    return sum(f * frac[m] for m, f in flops.items())


def plan_counts(plans, sides, flops, target, min_keep):
    """Channels kept per group: per-layer ratios (dict) or one uniform ratio hitting the FLOPs target."""
    floor = [max(1, math.ceil(min_keep * p.n)) for p in plans]
    if isinstance(target, dict):
        by_root = {p.root: i for i, p in enumerate(plans)}
        keeps = [p.n for p in plans]
        for name, ratio in target.items():
            if name not in by_root:
                raise ParameterError(f"target names {name!r}, not a prunable group root; roots: {sorted(by_root)}")
            ratio = check_scalar(ratio, f"target[{name!r}]", low=0.0, high=1.0, high_open=True)
            k = plans[by_root[name]].n - int(round(ratio * plans[by_root[name]].n))
            if k < 1:
                raise ParameterError(f"target[{name!r}]={ratio} would remove every channel of {name!r}")
            keeps[by_root[name]] = k
        return keeps
    total = sum(flops.values())
    goal = (1 - target) * total

    def counts(r):
        return [max(f, min(p.n, int(round((1 - r) * p.n)))) for p, f in zip(plans, floor)]

    if _estimate(flops, plans, sides, counts(1.0)) > goal:
        best = 1 - _estimate(flops, plans, sides, counts(1.0)) / total
        raise InfeasibleError(f"target={target} removes more FLOPs than these groups allow with "
                              f"min_keep={min_keep}: at most {best:.1%}")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _estimate(flops, plans, sides, counts(mid)) > goal else (lo, mid)
    return counts(hi)
