"""Collect each chosen layer's regression data over a calibration iterable.

Forward hooks turn every call of a layer into rows ``X_j (P_b, K)`` (its input,
unfolded per group, see :mod:`.layers`) and ``Y_j (P_b, M_g)`` (its output).
Inputs may come from one network and targets from another (the cascade
scheme: inputs from the partly pruned network, targets from the dense one):
another model, or the same model with some tensors swapped to other values
for the target pass; both passes run on the same batch, so rows correspond.

Two storage modes:

``"rows"``
    A uniform sample without replacement of at most ``max_rows`` rows over all
    samples and output positions seen (reservoir sampling, Vitter's algorithm R,
    seeded; :mod:`.reservoir`). Needed by the ReLU-aware solvers (Net-Trim, FeTa).
``"gram"``
    Streamed :class:`~layertrim.solvers.GramStats` per group (float64): enough
    for every squared-loss solver, whatever the number of samples. The groups
    of a grouped conv are accumulated together
    (:class:`~layertrim.solvers.base.grouped_gram.GroupedGramStats`). Batches
    are pooled until they hold ``max(1024, K/g)`` rows before each update: an
    update merges ``O((K/g)^2)`` moments whatever its rows, so a layer seen
    at a few positions per image (4,608 inputs on 16 rows per batch at 1x1
    resolution) would otherwise spend most of its capture merging.

Peak memory per captured layer, with ``K``/``M`` summed over groups, ``R =
max_rows``, ``P_b`` the rows of one batch (images x output positions) and
``P_u = max(1024, K/g) + P_b`` the rows pooled for one update: rows mode
``4 (R + 2 P_b) (K + M)`` bytes; gram mode ``8 (K K/g + K M/g) + 4 (P_u +
2 P_b) (K + M)`` bytes (per-group Gram blocks, the pooled rows, and one
batch of unfolded inputs and outputs from each of the two models).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from layertrim.solvers.base.grouped_gram import GroupedGramStats
from layertrim.solvers.base.errors import EmptyDataError, NonFiniteError, ParameterError
from layertrim.solvers.base.validation import check_choice, check_scalar

from .attention import explicit_attention
from .batches import model_batches, module_device
from .layers import input_features, n_groups, unfold_input
from .passes import TargetSwap, register_hooks
from .reservoir import RowReservoir
from .selection import select_layers

MODES = ("rows", "gram")
#: modules that pass values through unchanged in eval mode (skipped when looking for a ReLU)
_TRANSPARENT = (nn.Dropout, nn.Identity)


def find_layers(model: nn.Module, layers=None, ignore=None) -> "OrderedDict[str, nn.Module]":
    """The layers to prune (names, globs, ``re:`` regexes; see :mod:`.selection`), in registration order."""
    return select_layers(model, layers, ignore)


def relu_layers(model: nn.Module) -> set[str]:
    """Names of layers whose output goes straight into an ``nn.ReLU``.

    Detected in every ``nn.Sequential`` (a layer followed by ReLU, possibly
    through Dropout/Identity). Anything else (functional ``F.relu`` in a
    custom ``forward``, a BatchNorm in between) counts as not followed by a
    ReLU; override per layer with ``prune(..., relu={name: True})``.
    """
    out = set()
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        children = list(mod.named_children())
        for i, (name, child) in enumerate(children):
            j = i + 1
            while j < len(children) and isinstance(children[j][1], _TRANSPARENT):
                j += 1
            if j < len(children) and isinstance(children[j][1], nn.ReLU):
                out.add(f"{prefix}.{name}" if prefix else name)
    return out


@dataclass
class LayerData:
    """Captured regression data of one layer.

    ``groups`` holds one entry per conv group: ``(X, Y)`` arrays in rows mode,
    a :class:`GramStats` in gram mode. ``Y`` is the layer's raw output
    (pre-activation); ``relu`` says whether a ReLU follows it. ``rows_seen``
    counts all rows that went by (before sampling).
    """

    name: str
    mode: str
    groups: list = field(default_factory=list)
    relu: bool = False
    rows_seen: int = 0


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32/float64 numpy copy (half and bfloat16 inputs are widened to float32)."""
    t = t.detach().cpu()
    return (t if t.dtype in (torch.float32, torch.float64) else t.float()).numpy()


#: the fewest rows pooled for one update of a layer's Gram statistics
POOLED_ROWS = 1024


class Collector:
    """The rows of one layer: hooks append ``inputs``/``outputs`` of a batch, :meth:`flush` stores them.

    ``keep`` (a flat boolean tensor over the batch's token positions, set per
    batch) drops the padded rows of every layer whose rows are those positions.
    """

    def __init__(self, name, module, mode, max_rows, seed):
        self.name, self.module, self.mode = name, module, mode
        self.reservoir = RowReservoir(max_rows, seed) if mode == "rows" else None
        self.stats = GroupedGramStats(n_groups(module)) if mode == "gram" else None
        self.inputs, self.outputs = [], []
        self.rows_seen = 0
        self.keep = None
        self.pooled, self.pooled_rows = [], 0
        self.update_rows = max(POOLED_ROWS, input_features(module) if mode == "gram" else 0)

    def _rows(self, X, Y):
        if X.shape[1] != Y.shape[1]:
            raise ParameterError(f"layer {self.name!r}: input and output rows disagree")
        if self.keep is not None and X.shape[1] == self.keep.numel():
            X, Y = X[:, self.keep], Y[:, self.keep]
        X, Y = _as_numpy(X), _as_numpy(Y)
        for arr, what in ((X, "inputs"), (Y, "outputs")):
            if not np.isfinite(arr).all():
                raise NonFiniteError(f"layer {self.name!r}: its {what} contain NaN or infinite values")
        return X, Y

    def add_input(self, name, module, x) -> None:
        """A call of layer ``name`` on ``x``."""
        self.inputs.append(unfold_input(module, x))

    def add_output(self, name, rows) -> None:
        """The output rows of a call of layer ``name``."""
        self.outputs.append(rows)

    def flush(self):
        if len(self.inputs) != len(self.outputs):
            raise ParameterError(
                f"layer {self.name!r} was called {len(self.inputs)} times in one model and "
                f"{len(self.outputs)} in the other on the same batch"
            )
        for X, Y in zip(self.inputs, self.outputs):
            X, Y = self._rows(X, Y)
            self.rows_seen += X.shape[1]
            if self.reservoir is not None:
                self.reservoir.add(X, Y)
            else:
                self.pooled.append((X, Y))
                self.pooled_rows += X.shape[1]
        self.inputs, self.outputs = [], []
        if self.pooled_rows >= self.update_rows:
            self._update()

    def _update(self) -> None:
        """Add the pooled rows to the statistics in one update."""
        if self.pooled:
            X = np.concatenate([x for x, _ in self.pooled], axis=1)
            Y = np.concatenate([y for _, y in self.pooled], axis=1)
            self.pooled, self.pooled_rows = [], 0
            self.stats.update(X, Y)

    def result(self, relu: bool) -> LayerData:
        if self.reservoir is None:
            self._update()
        groups = self.reservoir.groups() if self.reservoir is not None else self.stats.groups()
        return LayerData(self.name, self.mode, groups, relu, self.rows_seen)

    def results(self, relu_of) -> dict:
        """``{name: LayerData}`` (``relu_of(name)``: whether a ReLU follows the layer)."""
        return {self.name: self.result(relu_of(self.name))}


def capture(
    model: nn.Module,
    data: Iterable,
    *,
    layers=None,
    mode="gram",
    max_rows: int = 20000,
    seed: int = 0,
    targets_from: nn.Module | None = None,
    target_values=(),
    relu=None,
) -> "OrderedDict[str, LayerData]":
    """Run the calibration data through ``model`` and collect each layer's problem.

    Parameters
    ----------
    model : nn.Module
        Inputs ``X`` are the chosen layers' inputs in this model.
    data : iterable
        Batches of inputs, or ``(inputs, targets)`` tuples (a DataLoader works).
    layers : list of str, optional
        Qualified layer names (default: every Linear/Conv1d/Conv2d).
    mode : {"gram", "rows"} or dict name -> mode
        Storage: streamed Gram statistics or a bounded uniform row sample.
    max_rows : int
        Row budget per layer in rows mode.
    seed : int
        Seed of the row sampling.
    targets_from : nn.Module, optional
        Model whose layer outputs are the targets ``Y`` (same architecture and
        layer names); default ``model`` itself.
    target_values : sequence of (tensor, value)
        Tensors of ``model`` that hold other values for the targets: each
        batch runs once with every ``tensor`` holding its ``value`` (targets
        ``Y``) and once with the tensors as they are (inputs ``X``). The
        cascade scheme passes the already solved layers with their dense
        values, so no second model is needed.
    relu : dict name -> bool, optional
        Overrides of the ReLU detection of :func:`relu_layers`.

    Returns
    -------
    OrderedDict name -> LayerData
        In the order given (or registration order).

    Notes
    -----
    Both models run in eval mode under ``torch.no_grad()``; their training
    flags are restored afterwards. The row sample is uniform over every
    (sample, position) row that went through the layer.
    """
    max_rows = check_scalar(max_rows, "max_rows", low=1, integer=True)
    chosen = find_layers(model, layers)
    modes = {n: (mode.get(n, "gram") if isinstance(mode, dict) else mode) for n in chosen}
    for m in modes.values():
        check_choice(m, "mode", MODES)
    if targets_from is not None and target_values:
        raise ParameterError("give targets_from or target_values, not both")
    dense = targets_from if targets_from is not None else model
    detected = relu_layers(dense)
    relu = dict(relu or {})
    collectors = OrderedDict(
        (n, Collector(n, mod, modes[n], max_rows, seed + i)) for i, (n, mod) in enumerate(chosen.items())
    )
    swap = TargetSwap(target_values)
    models = [model] if dense is model else [model, dense]
    flags = [(m, m.training) for mdl in models for m in mdl.modules()]
    handles = []
    try:
        register_hooks(chosen, collectors, dense, model, swap, handles)
        for mdl in models:
            mdl.eval()
        n_batches = 0
        with torch.no_grad(), explicit_attention():
            for batch in model_batches(model, data, module_device(model)):
                n_batches += 1
                for col in collectors.values():
                    col.keep = batch.keep()
                if dense is not model:
                    batch(dense)
                swap.run(model, batch)
                for col in collectors.values():
                    col.flush()
        if n_batches == 0:
            raise EmptyDataError("the calibration data is empty (no batches)")
        out = OrderedDict()
        for n, col in collectors.items():
            if col.rows_seen == 0:
                raise EmptyDataError(f"layer {n!r} was never called during the forward passes")
            out[n] = col.result(relu.get(n, n in detected))
        return out
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
