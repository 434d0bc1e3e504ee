"""One compiled call for a run of sparse layers and ReLUs at batch 1: :class:`SparseChain`.

At batch 1 a pruned layer's product takes a few microseconds, and each
module call around it (torch's dispatch, the conversion between a tensor and
a numpy array, a ReLU module) costs as much again. In an ``nn.Sequential``,
a run such as ``SparseLinear, ReLU, SparseLinear, ReLU`` computes

``h_0 = x,  h_l = relu_l(W_l h_{l-1} + b_l)``  (``relu_l`` the identity where no ReLU follows)

and :class:`SparseChain` runs the whole run as one call of
:func:`chain_matvec`, each layer through :func:`.csr_kernel.sparse_matvec`
(by rows or by the columns of the nonzero inputs, per layer), the
intermediate vectors never leaving the kernel. The result is the one the
modules give one by one, bit for bit: the same kernel, the same rounding to
the weights' dtype between layers. Any other input (a batch, a tensor that
needs a gradient, another device or dtype) runs the modules one by one.

:func:`fusable_runs` finds the runs; :func:`fused_modules` builds the
replacements, following ``torch.ao.quantization.fuse_modules``: the chain
takes the first module's place and the others become ``nn.Identity``, so the
names of the modules around them do not move.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit
from torch import nn

from layertrim.solvers.base.errors import ParameterError, ShapeError

from .csr_kernel import KernelArrays, sparse_matvec
from .sparse_linear import SparseLinear

#: seconds of one-sample calls run once per process before the first batch-1 timing: in a fresh
#: process the compiled one-sample paths ran 1.2-1.4x slower in their first timings than in later
#: ones (the MNIST MLP's first layer, 2-core machine), enough to swing a decision near 1x
WARM_UP_SECONDS = 0.5
_WARM = []

#: columns of the per-layer table: inputs, outputs, and the offsets of its row
#: pointers, stored weights, column pointers and bias in the packed arrays; ReLU flag
N_IN, N_OUT, PTR, NNZ, COLPTR, BIAS, RELU = range(7)


@njit(cache=True, nogil=True)
def chain_matvec(table, indptr, indices, data, colptr, rows, cvals, bias, x):
    """``h_L`` of ``h_l = relu_l(W_l h_{l-1} + b_l)``, ``h_0 = x``, layer ``l`` being row ``l`` of
    ``table`` (offsets into the packed arrays); each ``h_l`` is rounded to the weights' dtype."""
    h = x.astype(data.dtype)
    for l in range(table.shape[0]):
        n_in, n_out = table[l, N_IN], table[l, N_OUT]
        p, z, c, b = table[l, PTR], table[l, NNZ], table[l, COLPTR], table[l, BIAS]
        nnz = indptr[p + n_out]
        out = np.empty(n_out, data.dtype)
        sparse_matvec(indptr[p:p + n_out + 1], indices[z:z + nnz], data[z:z + nnz], colptr[c:c + n_in + 1],
                      rows[z:z + nnz], cvals[z:z + nnz], h, bias[b:b + n_out], out)
        if table[l, RELU]:
            for i in range(n_out):
                if out[i] < 0:  # a NaN stays NaN, as with torch.relu
                    out[i] = 0
        h = out
    return h


def _layers(steps) -> list:
    """``[(SparseLinear, relu after it), ...]`` of a run (a ReLU sets the flag of the layer before it)."""
    layers = []
    for step in steps:
        if isinstance(step, SparseLinear):
            layers.append((step, False))
        else:
            layers[-1] = (layers[-1][0], True)
    return layers


def pack(layers, arrays) -> tuple[np.ndarray, KernelArrays] | None:
    """``(table, arrays)``: the layers' kernel arrays (``arrays``, one
    :class:`.csr_kernel.KernelArrays` per ``(SparseLinear, relu)`` of ``layers``) end to end
    and the per-layer table of :func:`chain_matvec`; ``None`` when a layer's weight is not
    one the kernel runs."""
    if any(a is None for a in arrays) or len({a.dtype for a in arrays}) != 1:
        return None
    table = np.zeros((len(layers), 7), dtype=np.int64)
    offsets = np.zeros(4, dtype=np.int64)  # row pointers, stored weights, column pointers, bias
    for row, (m, relu), a in zip(table, layers, arrays):
        row[:] = (m.in_features, m.out_features, *offsets, relu)
        offsets += (len(a.indptr), len(a.data), len(a.colptr), len(a.bias))
    joined = [np.concatenate([a[i] for a in arrays]) for i in range(len(KernelArrays._fields) - 1)]
    return table, KernelArrays(*joined, arrays[0].dtype)


def _check_steps(steps) -> None:
    if not steps or not _starts(steps[0]) or not all(_starts(m) or _is_relu(m) for m in steps):
        raise ParameterError("a SparseChain runs CSR SparseLinear layers (the first step) and nn.ReLU modules, "
                             f"got {[type(m).__name__ for m in steps]}")
    layers = [m for m in steps if _starts(m)]
    for a, b in zip(layers, layers[1:]):
        if a.out_features != b.in_features:
            raise ShapeError(f"a SparseChain's layers must chain: {a.out_features} outputs feed {b.in_features} inputs")


class SparseChain(nn.Module):
    """A run of :class:`SparseLinear` (CSR, Linear) and ``nn.ReLU`` modules; one sample runs as
    one call of :func:`chain_matvec`, anything else through ``steps`` one by one.

    The packed arrays follow each layer's own kernel arrays (rebuilt when a buffer is replaced
    or loaded: ``.to()``, ``load_state_dict``); edit weights through those, not in place."""

    def __init__(self, steps):
        super().__init__()
        steps = list(steps)
        _check_steps(steps)
        self.steps = nn.ModuleList(steps)
        self._layers = _layers(steps)  # a plain list: the per-call check stays short
        self.in_features, self.out_features = self._layers[0][0].in_features, self._layers[-1][0].out_features
        self._packed = self._packed_of = None

    def _arrays(self) -> tuple[np.ndarray, KernelArrays] | None:
        """The packed arrays, rebuilt when a layer's kernel arrays are."""
        of = self._packed_of
        if of is not None:
            for (m, _), a in zip(self._layers, of):  # a plain loop: this runs on every call
                if not m.holds(a):
                    break
            else:
                return self._packed
        arrays = [m._kernel_arrays() for m, _ in self._layers]
        self._packed, self._packed_of = pack(self._layers, arrays), arrays
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == self.in_features and x.is_cpu and not x.requires_grad:
            packed = self._arrays()
            if packed is not None and x.dtype == packed[1].dtype:
                out = chain_matvec(packed[0], *packed[1][:7], x.numpy().reshape(-1))
                # a numpy reshape: torch's view with a computed size costs several microseconds more
                return torch.from_numpy(out[None] if x.dim() == 2 else out.reshape(x.shape[:-1] + out.shape))
        for step in self.steps:
            x = step(x)
        return x

    def __getstate__(self):
        return {**self.__dict__, "_packed": None, "_packed_of": None}


def _unhooked(m) -> bool:
    """No forward hooks: a fused module's hooks would not run at batch 1."""
    return not (m._forward_hooks or m._forward_pre_hooks)


def _starts(m: nn.Module) -> bool:
    return type(m) is SparseLinear and m._vector and _unhooked(m)


def _is_relu(m: nn.Module) -> bool:
    return type(m) is nn.ReLU and _unhooked(m)


def _extends(width: int | None, m: nn.Module) -> bool:
    """Whether ``m`` continues a run whose last layer has ``width`` outputs (``None``: no run)."""
    return width is not None and (_is_relu(m) or (_starts(m) and m.in_features == width))


def fusable_runs(model: nn.Module) -> list:
    """Every run to fuse, as the dotted names of its modules: in each ``nn.Sequential`` (or a
    subclass that keeps its ``forward``), a maximal run of CSR ``SparseLinear`` layers and
    ``nn.ReLU`` that starts with a layer, holds at least two modules, and whose layers' shapes
    chain (``out`` of one = ``in`` of the next)."""
    runs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue  # a subclass with its own forward may not chain its children
        run, width = [], None
        for name, m in seq._modules.items():  # every place, a module used twice included
            if not _extends(width, m):
                runs.append(run)
                run, width = [], None
                if not _starts(m):
                    continue
            run.append(f"{prefix}.{name}" if prefix else name)
            width = m.out_features if _starts(m) else width
        runs.append(run)
    return [run for run in runs if len(run) >= 2]


def fused_modules(model: nn.Module, runs) -> dict:
    """``{dotted name: module}`` that fuses each run: a :class:`SparseChain` of the run's modules in
    the first one's place, ``nn.Identity`` in the others'."""
    fused = {}
    for names in runs:
        first = module_at(model, names[0])
        fused[names[0]] = SparseChain([module_at(model, n) for n in names]).train(first.training)
        fused.update({n: nn.Identity().train(first.training) for n in names[1:]})
    return fused


def module_at(model: nn.Module, name: str) -> nn.Module:
    """The module in the place ``name`` (a dotted path; also a second place of a shared module,
    which ``named_modules`` lists only once)."""
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model)._modules[child]


def warm_up() -> None:
    """Run a small :class:`SparseChain` and its first layer at batch 1 for :data:`WARM_UP_SECONDS`,
    once per process (both compiled one-sample paths)."""
    if _WARM:
        return
    _WARM.append(True)
    w = torch.zeros(64, 64)
    w[::3, ::2] = 1.0
    chain = SparseChain([SparseLinear(w, None, "csr"), nn.ReLU(), SparseLinear(w, None, "csr")])
    x = torch.ones(1, 64)
    start = time.perf_counter()
    with torch.no_grad():
        while time.perf_counter() - start < WARM_UP_SECONDS:
            chain(x)
            chain.steps[0](x)
