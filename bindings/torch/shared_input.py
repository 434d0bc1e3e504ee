"""Layers fed one tensor captured as one problem (:class:`SharedCollector`).

The layers of a group read the same tensor: q/k/v of an attention block,
gate/up of a gated MLP. Where they also unfold it the same way
(:func:`shares_input`), their rows ``X`` are equal, and the Gram statistics
of ``(X, [Y_1 ... Y_k])`` hold every layer's: ``X^T X`` once, ``X^T Y_l``
as column blocks. Forming ``X^T X`` once instead of ``k`` times saves
``(k - 1) 2 P K^2`` flops per group (a Llama block: 3 of its 7 products).
"""
from __future__ import annotations

import torch

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.gram import GramStats

from .capture import Collector, LayerData
from .layers import CONV, HF_CONV1D, LINEAR, input_features, kind_of
from .replay import tensor_version


def shares_input(modules: list, modes: list) -> bool:
    """Whether layers fed one tensor give the same rows ``X``: Gram mode, and the built-in
    Linear-like kinds of one input width or plain (ungrouped) convolutions of one geometry. The
    caller leaves out layers an attention module computes functionally (their rows are its own)."""
    kinds = {kind_of(m) for m in modules}
    if len(modules) < 2 or set(modes) != {"gram"} or len(kinds) != 1:
        return False
    kind = kinds.pop()
    if kind is LINEAR or kind is HF_CONV1D:
        return len({input_features(m) for m in modules}) == 1
    if kind is CONV:
        return len({(type(m), m.in_channels, m.kernel_size, m.stride, m.dilation, m.groups, m.padding_mode,
                     tuple(m._reversed_padding_repeated_twice)) for m in modules}) == 1 and modules[0].groups == 1
    return False


class SharedCollector(Collector):
    """Layers fed one tensor with the same rows ``X`` (:func:`shares_input`: q/k/v, gate/up) as one
    problem with their outputs side by side, ``Y = [Y_1 ... Y_k]``: ``X^T X`` is formed once for all
    of them instead of once per layer. :meth:`results` splits the statistics by output columns
    (:meth:`~layertrim.solvers.GramStats.columns`, sharing ``X^T X``); each layer's statistics
    are those of its own ``(X, Y_l)``."""

    def __init__(self, names, modules, mode, max_rows, seed):
        super().__init__(names[0], modules[0], mode, max_rows, seed)
        self.names = list(names)
        self.parts = {n: [] for n in names}
        self.sources, self.widths = [], None
        self._seen = {n: 0 for n in names}

    def add_input(self, name, module, x) -> None:
        """The first layer's calls give the rows; every other layer's must read the same tensors."""
        k = self._seen[name]
        self._seen[name] += 1
        if name == self.names[0]:
            self.sources.append((x, tensor_version(x)))
            super().add_input(name, module, x)
            return
        source, version = self.sources[k] if k < len(self.sources) else (None, None)
        same = source is not None and (tensor_version(x) == version if x is source else torch.equal(x, source))
        if not same:
            raise ParameterError(f"layers {self.names} read one tensor on the traced batch, but call {k + 1} of "
                                 f"{name!r} read other values than call {k + 1} of {self.names[0]!r}")

    def add_output(self, name, rows) -> None:
        """The output rows of a call of layer ``name`` (its block of the side-by-side outputs)."""
        self.parts[name].append(rows)

    def flush(self):
        counts = {n: len(p) for n, p in self.parts.items()}
        if len(set(counts.values())) != 1:
            raise ParameterError(f"layers {self.names} read one tensor but were called {counts} times")
        self.outputs = [torch.cat(ys, dim=-1) for ys in zip(*self.parts.values())]
        if self.outputs and self.widths is None:
            self.widths = [self.parts[n][0].shape[-1] for n in self.names]
        self.parts = {n: [] for n in self.names}
        self.sources, self._seen = [], {n: 0 for n in self.names}
        super().flush()

    def results(self, relu_of) -> dict:
        """``{name: LayerData}``, each layer's statistics the columns of its outputs."""
        whole = self.result(False).groups[0]
        out, start = {}, 0
        for name, width in zip(self.names, self.widths or [0] * len(self.names)):
            part = whole.columns(slice(start, start + width)) if whole.n_samples else GramStats()
            out[name] = LayerData(name, self.mode, [part], relu_of(name), self.rows_seen)
            start += width
        return out
