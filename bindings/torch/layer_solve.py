"""One layer's solve: every group through its method, the solution as tensors and a report line.

``set_values`` writes solved values into the tensors that hold them
(``weight_orig`` under a ``torch.nn.utils.prune`` reparametrization).
"""
from __future__ import annotations

import numpy as np
import torch

from ..methods import STATUS_ORDER, solve_group
from .capture import _as_numpy
from .layers import bias_vectors, weight_from_matrices, weight_matrices
from .report import LayerReport


def solve_layer(name, module, spec, data, *, cascade, gamma):
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


def param_tensor(module, name):
    """The tensor that holds ``name``'s values (``name_orig`` under a pruning reparametrization)."""
    orig = getattr(module, name + "_orig", None)
    return orig if isinstance(orig, torch.Tensor) else getattr(module, name)


def set_values(module, W, b):
    with torch.no_grad():
        param_tensor(module, "weight").copy_(W.to(module.weight.device))
        if b is not None:
            param_tensor(module, "bias").copy_(b.to(module.bias.device))
