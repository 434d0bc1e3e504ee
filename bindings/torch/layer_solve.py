"""One layer's solve: every group (and column block) through its method, the solution as tensors and a report line.

:func:`start_layer` submits a layer's tasks to a :class:`~.tasks.TaskPool`:
one per group and column block, or one for all the groups of a grouped conv
whose method solves them together (``Method.solve_groups``);
:func:`finish_layer` stitches their solutions.
``set_values`` writes solved values into the tensors that hold them
(``weight_orig`` under a ``torch.nn.utils.prune`` reparametrization).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from layertrim.solvers.base.gram import GramStats

from ..methods import STATUS_ORDER, GroupSolution, get_method, solve_group
from ..methods.solve import solve_groups
from .capture import _as_numpy
from .layers import bias_vectors, weight_from_matrices, weight_matrices
from .report import LayerReport
from .tasks import TaskPool, column_blocks


@dataclass
class PendingLayer:
    """A layer whose group/block tasks are submitted: ``futures[j]`` holds group ``j``'s blocks."""

    name: str
    module: torch.nn.Module
    data: object
    futures: list
    has_bias: bool


def start_layer(name, module, spec, data, *, cascade, gamma, pool: TaskPool, blocks=1) -> PendingLayer:
    """Submit one task per group and column block (``blocks`` > 1 only for separable methods)."""
    W0 = _as_numpy(weight_matrices(module))
    b0 = bias_vectors(module)
    b0 = None if b0 is None else _as_numpy(b0)
    method = get_method(spec.method)
    methods = {spec.method: method}
    if method.linear_fallback is not None:
        methods[method.linear_fallback] = get_method(method.linear_fallback)
    if len(data.groups) > 1 and method.solve_groups is not None and column_blocks(W0.shape[2], blocks) == [None]:
        together = pool.submit(solve_groups, spec, data.groups, W0, b0, relu=data.relu, cascade=cascade,
                               gamma=gamma, methods=methods)
        futures = [[_Member(together, j)] for j in range(len(data.groups))]
        return PendingLayer(name=name, module=module, data=data, futures=futures, has_bias=b0 is not None)
    futures = []
    for j, g_data in enumerate(data.groups):
        slices = column_blocks(W0[j].shape[1], blocks)
        shared = pool.share(g_data) if len(slices) > 1 else g_data
        futures.append([
            pool.submit(solve_block, spec, shared, cols, W0[j] if cols is None else W0[j][:, cols],
                        None if b0 is None else (b0[j] if cols is None else b0[j][cols]),
                        relu=data.relu, cascade=cascade, gamma=gamma, methods=methods)
            for cols in slices
        ])
    return PendingLayer(name=name, module=module, data=data, futures=futures, has_bias=b0 is not None)


class _Member:
    """Group ``j``'s solution out of a future of every group's solutions (``result()`` as a future's)."""

    def __init__(self, together, j: int):
        self.together, self.j = together, j

    def result(self) -> GroupSolution:
        return self.together.result()[self.j]


def solve_block(spec, data, cols, W0, b0, *, relu, cascade, gamma, methods) -> GroupSolution:
    """One group's problem restricted to the output columns ``cols`` (None: all of them)."""
    if cols is not None:
        data = data.columns(cols) if isinstance(data, GramStats) else (data[0], data[1][:, cols])
    return solve_group(spec, data, W0, b0, relu=relu, cascade=cascade, gamma=gamma, methods=methods)


def finish_layer(pending: PendingLayer):
    """Wait for the tasks, stitch the column blocks; returns (weight, bias or None, LayerReport)."""
    sols = [_stitch([f.result() for f in group]) for group in pending.futures]
    module, data = pending.module, pending.data
    dtype = module.weight.dtype
    W = weight_from_matrices(module, torch.as_tensor(np.stack([s.W for s in sols])).to(dtype))
    b = torch.as_tensor(np.concatenate([s.b for s in sols])).to(dtype) if pending.has_bias else None
    err2, norm2 = sum(s.err2 for s in sols), sum(s.norm2 for s in sols)
    info = dict(sols[0].info) if len(sols) == 1 else {"groups": [s.info for s in sols]}
    info["rows_seen"] = data.rows_seen
    report = LayerReport(
        name=pending.name,
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


def _stitch(blocks: list) -> GroupSolution:
    """One group's solution from its column blocks, side by side."""
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    return GroupSolution(
        W=np.hstack([s.W for s in blocks]),
        b=None if first.b is None else np.concatenate([s.b for s in blocks]),
        method=first.method,
        status=max((s.status for s in blocks), key=STATUS_ORDER.index),
        iterations=sum(s.iterations for s in blocks),
        time=sum(s.time for s in blocks),
        err2=sum(s.err2 for s in blocks),
        norm2=sum(s.norm2 for s in blocks),
        info={**first.info, "column_blocks": len(blocks)},
    )


def param_tensor(module, name):
    """The tensor that holds ``name``'s values (``name_orig`` under a pruning reparametrization)."""
    orig = getattr(module, name + "_orig", None)
    return orig if isinstance(orig, torch.Tensor) else getattr(module, name)


def set_values(module, W, b):
    with torch.no_grad():
        param_tensor(module, "weight").copy_(W.to(module.weight.device))
        if b is not None:
            param_tensor(module, "bias").copy_(b.to(module.bias.device))
