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

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.validation import check_choice, check_scalar

from ..methods import STATUS_ORDER, get_method, solve_group
from .batches import model_batches, module_device, reusable
from .capture import _as_numpy, capture, find_layers
from .layers import bias_vectors, weight_from_matrices, weight_matrices
from .report import LayerReport, PruneReport
from .preflight import check_forward, check_layers, check_model
from .settings import check_keys, layer_specs, tied_layers
from .snapshot import ModelSnapshot

SCHEMES = ("cascade", "parallel")


def execution_order(model: nn.Module, data, names) -> list:
    """``names`` sorted by the first call of each layer on the first batch."""
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
            for batch in model_batches(model, data, module_device(model)):
                batch(model)
                break
    finally:
        for h in handles:
            h.remove()
        for m, f in flags:
            m.training = f
    return order + [n for n in names if n not in order]


def _solve_layer(name, module, spec, data, *, cascade, gamma):
    """Solve every group of one layer; returns (weight tensor, bias tensor or None, LayerReport)."""
    W0 = _as_numpy(weight_matrices(module))
    b0 = bias_vectors(module)
    b0 = None if b0 is None else _as_numpy(b0)
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
    """Solved values first, then the support as a ``torch.nn.utils.prune`` mask.

    A mask from an earlier pruning is folded in first and replaced: the
    solver started from the masked weights, and the new support is the whole
    truth (the model then has exactly the zeros the report counts).
    """
    if hasattr(module, "weight_mask"):
        torch_prune.remove(module, "weight")
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
    Cascade: for layer ``l`` in execution order, ``X_l`` is captured from
    the model whose layers ``< l`` already hold their solved weights, ``Y_l``
    from the same model with those layers at their dense values, in one pass
    over ``data`` (two forward calls per batch; no copy of the model).
    Parallel: one pass captures every layer from the dense model. The masks
    are registered after every layer is solved; on any failure the model is
    restored.
    """
    start = time.perf_counter()
    check_choice(scheme, "scheme", SCHEMES)
    gamma = check_scalar(gamma, "gamma", low=1.0)
    if isinstance(method, dict) and layers is None:
        layers = list(method)
    check_model(model)
    found = find_layers(model, layers)
    check_layers(found)
    skipped = tied_layers(model, found)
    names = [n for n in found if n not in skipped]
    for value, what in ((method, "method"), (sparsity, "sparsity"), (eps, "eps"), (lam, "lam"), (relu, "relu")):
        check_keys(value, list(found), what)
    if isinstance(method, str):
        get_method(method)
    specs = layer_specs(
        names, method=method, sparsity=sparsity, eps=eps, lam=lam, pattern=pattern, refit=refit,
        solver_options=solver_options,
    )
    data = reusable(data)
    check_forward(model, data)
    run = _Run(found=found, specs=specs, data=data, max_rows=max_rows, seed=seed, relu=relu, gamma=gamma)
    snapshot = ModelSnapshot(model)
    try:
        from tqdm.auto import tqdm

        with tqdm(total=len(names), desc="prune", disable=not progress, leave=False) as bar:
            if scheme == "cascade":
                solved = _solve_cascade(model, run, execution_order(model, data, names), snapshot, bar)
            else:
                solved = _solve_parallel(model, run, names, executor, bar)
        for name in names:
            W, b, _ = solved[name]
            _write_layer(found[name], W, b)
    except BaseException:
        snapshot.restore()
        raise
    return PruneReport(layers=[solved[n][2] for n in names], scheme=scheme, time=time.perf_counter() - start,
                       skipped=skipped)


@dataclass(frozen=True)
class _Run:
    """The settings every layer solve of one :func:`prune` call shares."""

    found: dict
    specs: dict
    data: object
    max_rows: int
    seed: int
    relu: object
    gamma: float

    def modes(self) -> dict:
        return {n: s.mode for n, s in self.specs.items()}


def _solve_cascade(model, run: _Run, order, snapshot, bar) -> OrderedDict:
    """Layers in execution order; ``X_l`` from the model holding the solved layers ``< l``.

    The solved values are written into the model as they come; the target
    pass of each capture runs the same model with those layers back at their
    dense values (recorded by ``snapshot``), so no copy of the model is made.
    """
    solved = OrderedDict()
    dense_values = []
    for name in order:
        bar.set_postfix_str(name)
        ld = capture(model, run.data, layers=[name], mode=run.modes(), max_rows=run.max_rows, seed=run.seed,
                     target_values=dense_values, relu=run.relu)[name]
        module = run.found[name]
        solved[name] = _solve_layer(name, module, run.specs[name], ld, cascade=True, gamma=run.gamma)
        tensors = [_param(module, "weight")] + ([_param(module, "bias")] if module.bias is not None else [])
        dense_values += [(t, snapshot.recorded(t)) for t in tensors]
        W, b, _ = solved[name]
        _set_values(module, W, b)
        bar.update()
    return solved


def _solve_parallel(model, run: _Run, names, executor, bar) -> OrderedDict:
    """One capture of every layer from the dense model; layers solved in turn or on ``executor``."""
    captured = capture(model, run.data, layers=names, mode=run.modes(), max_rows=run.max_rows, seed=run.seed,
                       relu=run.relu)

    def solve(n):
        return _solve_layer(n, run.found[n], run.specs[n], captured[n], cascade=False, gamma=run.gamma)

    solved = OrderedDict()
    futures = None if executor is None else {n: executor.submit(solve, n) for n in names}
    for name in names:
        bar.set_postfix_str(name)
        solved[name] = solve(name) if futures is None else futures[name].result()
        bar.update()
    return solved
