"""Prune a torch model layer by layer with the core solvers.

Each chosen layer ``l`` (with ``g`` groups) is the problem
``min_W  penalty(W)  s.t./+  fit(X_l W + 1 b^T, Y_l)`` of its method (see
:mod:`layertrim.bindings.methods`), where ``Y_l`` is the dense network's output of the layer
and ``X_l`` its input: from the dense network (``scheme="parallel"``) or from
the network whose preceding layers are already pruned (``scheme="cascade"``,
layers taken in execution order, so that later layers compensate the error of
earlier ones).

The solved values are written into the weights, then the support is registered
with ``torch.nn.utils.prune.custom_from_mask``: the module gets
``weight_orig`` and a ``weight_mask`` buffer, and masked entries stay zero
during fine-tuning. :func:`make_permanent` folds them back into plain weights.
The whole call is atomic: on any exception (including KeyboardInterrupt) the
model's parameters, buffers, hooks and structure are restored before the
exception propagates.
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar, check_sparsity

from .capture import capture, find_layers, reusable
from ..methods import STATUS_ORDER, LayerSpec, get_method, solve_group
from .layers import bias_vectors, weight_from_matrices, weight_matrices
from .report import LayerReport, PruneReport
from .snapshot import ModelSnapshot

SCHEMES = ("cascade", "parallel")


def _per_layer(value, name):
    return value.get(name) if isinstance(value, dict) else value


def layer_specs(names, *, method, sparsity, eps, lam, pattern, refit, solver_options) -> "OrderedDict[str, LayerSpec]":
    """Resolve global and per-layer settings into one :class:`LayerSpec` per layer.

    ``method`` is a name or a dict layer -> name or layer -> dict of settings
    (``method``, ``sparsity``, ``eps``, ``lam``, ``pattern``, ``refit`` and
    solver options); ``sparsity``/``eps``/``lam`` may be dicts layer -> value.
    """
    specs = OrderedDict()
    for name in names:
        m = _per_layer(method, name)
        overrides = {}
        if isinstance(m, dict):
            overrides = dict(m)
            m = overrides.pop("method", None)
        if m is None:
            raise ParameterError(f"no method given for layer {name!r}")
        spec = LayerSpec(
            method=m,
            sparsity=overrides.pop("sparsity", _per_layer(sparsity, name)),
            eps=overrides.pop("eps", _per_layer(eps, name)),
            lam=overrides.pop("lam", _per_layer(lam, name)),
            pattern=overrides.pop("pattern", _per_layer(pattern, name)),
            refit=bool(overrides.pop("refit", _per_layer(refit, name))),
            options={**solver_options, **overrides},
        )
        spec.check(name)
        if spec.sparsity is not None:
            check_sparsity(spec.sparsity)
        if spec.eps is not None:
            check_scalar(spec.eps, f"eps of layer {name!r}", low=0.0, low_open=True)
        if spec.lam is not None:
            check_scalar(spec.lam, f"lam of layer {name!r}", low=0.0)
        specs[name] = spec
    return specs


def _check_keys(value, names, what):
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ParameterError(f"{what} names layers {unknown} that are not being pruned; layers are {list(names)}")


def execution_order(model: nn.Module, data, names) -> list:
    """``names`` sorted by the first call of each layer on the first batch."""
    from .capture import batches, _module_device

    modules = dict(model.named_modules())
    order = []
    handles = [
        modules[n].register_forward_hook(lambda mod, a, o, n=n: order.append(n) if n not in order else None)
        for n in names
    ]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            for x in batches(data):
                model(x.to(_module_device(model)))
                break
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.training = f
    return order + [n for n in names if n not in order]


def _solve_layer(name, module, spec, data, *, cascade, gamma):
    """Solve every group of one layer; returns (weight tensor, bias tensor or None, LayerReport)."""
    W0 = weight_matrices(module).cpu().numpy()
    b0 = bias_vectors(module)
    b0 = None if b0 is None else b0.cpu().numpy()
    sols = [
        solve_group(spec, g_data, W0[j], None if b0 is None else b0[j], relu=data.relu, cascade=cascade, gamma=gamma)
        for j, g_data in enumerate(data.groups)
    ]
    dtype = module.weight.dtype
    W = weight_from_matrices(module, torch.as_tensor(np.stack([s.W for s in sols])).to(dtype))
    b = None if b0 is None else torch.as_tensor(np.concatenate([s.b for s in sols])).to(dtype)
    err2, norm2 = sum(s.err2 for s in sols), sum(s.norm2 for s in sols)
    info = dict(sols[0].info) if len(sols) == 1 else {"groups": [s.info for s in sols]}
    info["rows_seen"] = data.rows_seen
    report = LayerReport(
        name=name,
        method=sols[0].method,
        shape=tuple(module.weight.shape),
        zeros=int((W == 0).sum()),
        total=W.numel(),
        rel_error=float(np.sqrt(err2 / norm2)) if norm2 > 0 else float(np.sqrt(err2)),
        error_kind="relu" if (data.relu and data.mode == "rows") else "linear",
        status=max((s.status for s in sols), key=STATUS_ORDER.index),
        iterations=sum(s.iterations for s in sols),
        time=sum(s.time for s in sols),
        info=info,
    )
    return W, b, report


def _param(module, name):
    """The tensor that holds ``name``'s values (``name_orig`` under a pruning reparametrization)."""
    orig = getattr(module, name + "_orig", None)
    return orig if isinstance(orig, torch.Tensor) else getattr(module, name)


def _set_values(module, W, b):
    with torch.no_grad():
        _param(module, "weight").copy_(W.to(module.weight.device))
        if b is not None:
            _param(module, "bias").copy_(b.to(module.bias.device))


def _write_layer(module, W, b):
    """Solved values first, then the support as a ``torch.nn.utils.prune`` mask."""
    _set_values(module, W, b)
    torch_prune.custom_from_mask(module, "weight", (W != 0).to(module.weight.device))


def prune(
    model: nn.Module,
    data,
    *,
    method,
    sparsity=None,
    eps=None,
    lam=None,
    pattern="unstructured",
    scheme: str = "cascade",
    layers=None,
    max_rows: int = 20000,
    refit: bool = True,
    progress: bool = True,
    executor=None,
    relu=None,
    gamma: float = 1.1,
    seed: int = 0,
    **solver_options,
) -> PruneReport:
    """Prune ``model``'s Linear/Conv layers in place; return a :class:`PruneReport`.

    Parameters
    ----------
    model : nn.Module
        Pruned in place (weights solved, masks registered).
    data : iterable
        Calibration batches: input tensors or ``(inputs, targets)`` tuples
        (a DataLoader works). Iterated once per layer in the cascade scheme;
        a one-shot iterator is first stored in a list.
    method : str or dict
        A registered method (:func:`~layertrim.bindings.methods.registered_methods`:
        ``"magnitude"``, ``"iht"``, ``"lasso"``, ``"group_lasso"``,
        ``"nettrim"``, ``"feta"`` and any added by
        :func:`~layertrim.bindings.methods.register_method`); or a dict layer name -> method name, or
        layer name -> dict of per-layer settings (``method``, ``sparsity``,
        ``eps``, ``lam``, ``pattern``, ``refit``, solver options).
    sparsity, eps, lam : float or dict layer -> float
        Per-layer target (exactly one, as the method accepts): fraction of
        zero weights; Net-Trim's relative error budget ``eps`` (of
        ``||Y||_F``); the lasso/FeTa weight ``lam``.
    pattern : str
        Sparsity pattern of magnitude/iht (``"unstructured"``, ``"per_output"``,
        ``"2:4"``, ``"input_rows"``, ``"output_columns"``).
    scheme : {"cascade", "parallel"}
        Inputs from the already-pruned network, or all from the dense one.
    layers : list of str, optional
        Qualified names (default: every Linear/Conv1d/Conv2d, or the keys of
        a ``method`` dict).
    max_rows : int
        Row sample per layer for the row-based methods (Net-Trim, FeTa).
    refit : bool
        Least-squares refit of the solved support (squared-loss methods, and
        Net-Trim on layers without ReLU).
    progress : bool
        A tqdm bar over layers.
    executor : concurrent.futures.Executor, optional
        Solves layers concurrently in the parallel scheme.
    relu : dict layer -> bool, optional
        Overrides whether a ReLU follows a layer (auto-detected in
        ``nn.Sequential``).
    gamma : float
        Net-Trim cascade slack (see :mod:`layertrim.bindings.methods.nettrim`).
    seed : int
        Seed of the row sampling.
    **solver_options
        Passed to every solver call (``tol``, ``max_iter``, ...).

    Returns
    -------
    PruneReport

    Notes
    -----
    Cascade: for layer ``l`` in execution order, ``X_l`` is captured from a
    working copy whose layers ``< l`` hold their solved weights, ``Y_l``
    from the untouched model, in one pass over ``data``. Parallel: one pass
    captures every layer from the dense model. Only after every layer is
    solved are the results written into ``model``.
    """
    start = time.perf_counter()
    check_choice(scheme, "scheme", SCHEMES)
    gamma = check_scalar(gamma, "gamma", low=1.0)
    if isinstance(method, dict) and layers is None:
        layers = list(method)
    found = find_layers(model, layers)
    names = list(found)
    for value, what in ((method, "method"), (sparsity, "sparsity"), (eps, "eps"), (lam, "lam"), (relu, "relu")):
        _check_keys(value, names, what)
    if isinstance(method, str):
        get_method(method)
    specs = layer_specs(
        names, method=method, sparsity=sparsity, eps=eps, lam=lam, pattern=pattern, refit=refit,
        solver_options=solver_options,
    )
    data = reusable(data)
    modes = {n: s.mode for n, s in specs.items()}
    snapshot = ModelSnapshot(model)
    try:
        order = execution_order(model, data, names) if scheme == "cascade" else names
        solved = OrderedDict()
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="prune", disable=not progress, leave=False)
        try:
            if scheme == "cascade":
                work = copy.deepcopy(model)
                work_modules = dict(work.named_modules())
                for name in order:
                    bar.set_postfix_str(name)
                    ld = capture(
                        work, data, layers=[name], mode=modes, max_rows=max_rows, seed=seed, targets_from=model,
                        relu=relu,
                    )[name]
                    solved[name] = _solve_layer(name, found[name], specs[name], ld, cascade=True, gamma=gamma)
                    W, b, _ = solved[name]
                    _set_values(work_modules[name], W, b)
                    bar.update()
                del work
            else:
                captured = capture(model, data, layers=names, mode=modes, max_rows=max_rows, seed=seed, relu=relu)
                if executor is None:
                    for name in names:
                        bar.set_postfix_str(name)
                        solved[name] = _solve_layer(name, found[name], specs[name], captured[name], cascade=False,
                                                    gamma=gamma)
                        bar.update()
                else:
                    futures = {
                        n: executor.submit(_solve_layer, n, found[n], specs[n], captured[n], cascade=False, gamma=gamma)
                        for n in names
                    }
                    for name in names:
                        solved[name] = futures[name].result()
                        bar.update()
        finally:
            bar.close()
        for name in names:
            W, b, _ = solved[name]
            _write_layer(found[name], W, b)
    except BaseException:
        snapshot.restore()
        raise
    return PruneReport(layers=[solved[n][2] for n in names], scheme=scheme, time=time.perf_counter() - start)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` reparametrization into plain parameters (zeros kept)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model
