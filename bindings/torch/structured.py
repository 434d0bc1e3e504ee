"""Structured pruning of arbitrary models: remove whole channels / neurons and refit the consumers.

:func:`prune_structured` finds the coupled groups of a model with
``torch-pruning``'s dependency graph (a conv's output channels together with
its BatchNorm, a depthwise conv, residual additions, concatenations, flatten,
the gated ``gate * up`` product of a Llama MLP, and the input channels of every
layer that reads them), chooses the channels of each group by the
reconstruction error of its *consumers* (:mod:`.structured_select`), removes
them physically, then refits every consumer by least squares of its dense
output on its kept inputs (the parallel scheme: inputs and targets from the
dense model, captured once with :func:`.capture.capture`). By default the
refit's ridge, "no refit", and the channel criterion are chosen on held-out
calibration samples (:mod:`.structured_refit`).
"""
from __future__ import annotations

import copy
import fnmatch

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.errors import MissingDependencyError, ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar

from .capture import capture
from .structured_plan import GroupPlan, StructuredReport, layer_flops, plan_counts
from .structured_refit import choose_ridge, held_out_keep, held_out_stats
from .structured_select import group_lasso_keep, lsq_keep, refit

UNITS = {"channels": nn.Conv2d, "neurons": nn.Linear}
METHODS = ("lsq", "group_lasso", "magnitude", "taylor")


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise MissingDependencyError("prune_structured needs torch-pruning: pip install torch-pruning") from None
    return torch_pruning


def _batches(data):
    if isinstance(data, torch.Tensor):
        return list(data.split(256))
    try:
        out = [b[0] if isinstance(b, (tuple, list)) else b for b in data]
    except TypeError:
        raise ParameterError(f"data must be a tensor or an iterable of batches, got {type(data).__name__}") from None
    if not out or not all(isinstance(b, torch.Tensor) for b in out):
        raise ParameterError("data must hold at least one batch of input tensors")
    return out


def _output_layers(model, example):
    """Layers whose output is the model's output (never pruned: it would change the output shape)."""
    seen, hooks = {}, []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, i, o: seen.__setitem__(id(o), mod)))
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [seen[id(o)] for o in outs if id(o) in seen]


def _consumers(tp, group, names):
    """``[(name, module, in_idxs, root_idxs)]`` of the group's layers whose inputs it prunes."""
    in_fns = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
    out = []
    for item in group.items:
        mod = item.dep.target.module
        if item.dep.handler in in_fns and isinstance(mod, (nn.Conv2d, nn.Linear)):
            out.append((names[mod], mod, [int(i) for i in item.idxs], [int(r) for r in item.root_idxs]))
    return out


def _members(tp, group):
    """``{module: "in" | "out"}`` for the FLOPs model: which side of each layer the group prunes."""
    side = {}
    for item in group.items:
        mod = item.dep.target.module
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            side.setdefault(mod, "out" if group._DG.is_out_channel_pruning_fn(item.dep.handler) else "in")
    return side


def _taylor_grads(model, batches):
    """Gradients of the cross-entropy against the model's own argmax (for Torch-Pruning's Taylor)."""
    model.zero_grad()
    for xb in batches:
        out = model(xb)
        nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), out.detach().argmax(-1).reshape(-1)).backward()


def _columns(mod, in_idxs, root_idxs, n):
    """Per root channel, the columns of ``mod``'s unfolded input it feeds."""
    per = mod.kernel_size[0] * mod.kernel_size[1] if isinstance(mod, nn.Conv2d) else 1
    cols = [[] for _ in range(n)]
    for i, r in zip(in_idxs, root_idxs):
        cols[r].extend(range(i * per, (i + 1) * per))
    return cols


def _choose(tp, method, group, plan, stats, ridge, held):
    """Sorted kept root indices of one group."""
    if plan.keep == plan.n:
        return list(range(plan.n))
    if method in ("magnitude", "taylor"):
        return _importance_keep(tp, method, group, plan.keep).tolist()
    problems = [(stats[name], _columns(mod, ii, ri, plan.n)) for name, mod, ii, ri in plan.consumer_info]
    if not problems:
        raise ParameterError(f"group {plan.root!r} has no consumer layer to reconstruct; use method='magnitude'")
    if method == "lsq" and held:
        dense = [_dense_weights(mod) for _, mod, _, _ in plan.consumer_info]
        keep, plan.choice = held_out_keep([(st, *held[name], cols, *wb) for (st, cols), (name, *_), wb
                                           in zip(problems, plan.consumer_info, dense)], plan.n, plan.keep,
                                          fixed={"magnitude": _importance_keep(tp, "magnitude", group, plan.keep)})
    else:
        keep = lsq_keep(problems, plan.n, plan.keep, ridge) if method == "lsq" else group_lasso_keep(problems, plan.n, plan.keep)
    return keep.tolist()


def _importance_keep(tp, method, group, k):
    """The ``k`` root channels of largest Torch-Pruning magnitude (L2) or Taylor importance, sorted."""
    imp = tp.importance.GroupMagnitudeImportance(p=2) if method == "magnitude" else tp.importance.GroupTaylorImportance()
    scores = imp(group).detach().double().numpy()
    return np.sort(np.argsort(-scores, kind="stable")[:k])


def _dense_weights(mod):
    """``(W0 (N, M), b0 (M,))`` of a layer, in the layout of its unfolded input (float64)."""
    W0 = mod.weight.detach().double().reshape(mod.weight.shape[0], -1).T.numpy()
    return W0, (np.zeros(W0.shape[1]) if mod.bias is None else mod.bias.detach().double().numpy())


def _refit_consumer(mod, stats, in_keep, out_keep, ridge, held=None):
    """Write the least-squares refit of one (already shrunk) consumer; returns its ridge.

    With ``held = (fit, val)`` statistics the ridge is chosen on the held-out
    samples (:func:`.structured_refit.choose_ridge`); None: the layer is left as it is.
    """
    per = mod.kernel_size[0] * mod.kernel_size[1] if isinstance(mod, nn.Conv2d) else 1
    cols = np.concatenate([np.arange(i * per, (i + 1) * per) for i in in_keep])
    outs = np.asarray(out_keep)
    W0, b0 = _dense_weights(mod)
    if held is not None:
        ridge = choose_ridge(*held, cols, outs, W0, b0)
        if ridge is None:
            return None
    W, b = refit(stats, cols, outs, W0, ridge)
    mod.weight.data.copy_(torch.as_tensor(W.T.reshape(mod.weight.shape), dtype=mod.weight.dtype))
    bias = torch.as_tensor(b, dtype=mod.weight.dtype)
    if mod.bias is None:
        mod.bias = nn.Parameter(bias)
    else:
        mod.bias.data.copy_(bias)
    return ridge


def _check(unit, method, target, min_keep, ridge, model):
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(unit, "unit", tuple(UNITS))
    check_choice(method, "method", METHODS)
    if not isinstance(target, dict):
        target = check_scalar(target, "target", low=0.0, high=1.0, low_open=True, high_open=True)
    elif not target:
        raise ParameterError("target must be a FLOPs fraction in (0, 1) or a non-empty dict root -> ratio")
    if ridge != "auto":
        ridge = check_scalar(ridge, "ridge", low=0.0)
    return target, check_scalar(min_keep, "min_keep", low=0.0, high=1.0, low_open=True), ridge


def prune_structured(model: nn.Module, data, *, target, unit: str = "channels", method: str = "lsq",
                     layers=None, min_keep: float = 0.1, ridge="auto", refit_consumers=None,
                     seed: int = 0) -> StructuredReport:
    """A copy of ``model`` with whole channels (Conv2d) or neurons (Linear) removed; consumers refit.

    Parameters
    ----------
    model : nn.Module
        Left unchanged (the pruned network is ``report.model``).
    data : tensor or iterable of batches
        Calibration inputs (``(inputs, targets)`` tuples: the inputs are used).
    target : float in (0, 1) or dict
        Fraction of the FLOPs (multiply-accumulates of Conv2d/Linear) to
        remove, by one uniform channel ratio over the chosen groups with at
        least ``min_keep`` of each kept; or ``{root layer name: fraction of its
        channels to remove}``.
    unit : {"channels", "neurons"}
        Groups rooted at Conv2d output channels or at Linear output neurons.
    method : {"lsq", "group_lasso", "magnitude", "taylor"}
        Channel choice: consumer least-squares backward elimination, group
        lasso over the consumer's input rows, or Torch-Pruning's magnitude /
        Taylor importance (the baselines; no refit unless ``refit_consumers``).
    layers : list of glob patterns, optional
        Group roots to prune (default: every group whose root is not an output layer).
    ridge : "auto" or float >= 0
        Refit pulled toward the dense weights, ``delta = ridge * mean diag(G)``
        (0: plain least squares). "auto" holds out 20% of the calibration
        samples (:mod:`.structured_refit`): each consumer's ridge, or no refit
        at all, is the candidate of least held-out error (``report.refit``),
        and for "lsq" the channel choice too (lsq with several ridges or
        Torch-Pruning's magnitude; ``report.groups[i].choice``). A float: that
        ridge for the choice and every refit.
    refit_consumers : bool, optional
        Default True for "lsq" / "group_lasso", False for the baselines.
    """
    target, min_keep, ridge = _check(unit, method, target, min_keep, ridge, model)
    tp, batches = _tp(), _batches(data)
    work = copy.deepcopy(model).eval()
    names = {m: n for n, m in work.named_modules()}
    example = batches[0][:2]
    with torch.enable_grad():  # the graph is traced through autograd
        DG = tp.DependencyGraph().build_dependency(work, example_inputs=example)
    groups, plans, sides = [], [], []
    for g in DG.get_all_groups(ignored_layers=_output_layers(work, example), root_module_types=[UNITS[unit]]):
        root = names[g.items[0].dep.target.module]
        if layers is not None and not any(fnmatch.fnmatchcase(root, pat) for pat in layers):
            continue
        info = _consumers(tp, g, names)
        plan = GroupPlan(root, len(g.items[0].idxs), len(g.items[0].idxs), [c[0] for c in info])
        plan.consumer_info = info
        groups.append(g), plans.append(plan), sides.append(_members(tp, g))
    if not plans:
        raise ParameterError(f"no prunable {unit} group found (layers={layers!r})")
    flops = layer_flops(work, example)
    for p, k in zip(plans, plan_counts(plans, sides, flops, target, min_keep)):
        p.keep = k
    before = tp.utils.count_ops_and_params(work, example)
    refit_on = (method in ("lsq", "group_lasso")) if refit_consumers is None else bool(refit_consumers)
    consumers = sorted({c for p in plans if p.keep < p.n for c in p.consumers})
    stats, held = {}, {}
    if consumers and (refit_on or method in ("lsq", "group_lasso")):
        if ridge == "auto" and (refit_on or method == "lsq"):
            stats, held = held_out_stats(work, batches, consumers, seed)
        else:
            stats = {n: d.groups[0] for n, d in capture(work, batches, layers=consumers, mode="gram", seed=seed).items()}
    if method == "taylor":
        with torch.enable_grad():
            _taylor_grads(work, batches)
    for g, p in zip(groups, plans):
        p.kept = _choose(tp, method, g, p, stats, ridge, held)
    return _apply(tp, DG, work, groups, plans, (stats, held), ridge if refit_on else None, example, before, method,
                  names)


def _apply(tp, DG, work, groups, plans, data, ridge, example, before, method, names):
    """Remove the unchosen channels of every group, refit the consumers, count FLOPs."""
    in_keep, out_keep = {}, {}
    for g, p in zip(groups, plans):
        for item in g.items:
            mod = item.dep.target.module
            kept = set(p.kept)
            idx = [int(i) for i, r in zip(item.idxs, item.root_idxs) if int(r) in kept]
            (in_keep if item.dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
             else out_keep).setdefault(mod, sorted(idx))
    for g, p in zip(groups, plans):
        drop = sorted(set(range(p.n)) - set(p.kept))
        if drop:
            root = g.items[0].dep.target.module
            DG.get_pruning_group(root, g.items[0].dep.handler, drop).prune()
    stats, held = data
    ridges = {}
    if ridge is not None:
        for mod, keep in in_keep.items():
            name = names[mod]
            if name in stats:
                outs = out_keep.get(mod, list(range(stats[name].n_outputs)))
                ridges[name] = _refit_consumer(mod, stats[name], keep, outs, ridge, held.get(name))
    work.zero_grad(set_to_none=True)
    after = tp.utils.count_ops_and_params(work, example)
    return StructuredReport(work, plans, (before[0], after[0]), (before[1], after[1]), method, ridges)
