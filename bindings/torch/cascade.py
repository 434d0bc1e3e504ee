"""The cascade scheme: each layer solved on inputs from the network whose earlier
layers are already pruned, against targets from the dense network.

Layers inside the model's chain of blocks (:mod:`.blocks`: decoder layers,
ResNet blocks, the modules of a ``nn.Sequential``) are solved block by block
from cached block inputs, two streams of them: ``H_dense`` (the dense
network's hidden states, for targets ``Y``) and ``H_pruned`` (the partly
pruned network's, for inputs ``X``). A block's targets do not depend on
what is pruned: one forward of the dense block on ``H_dense`` gives every
layer's targets and ``H_dense`` one block further, and the targets are kept
for the block's groups while they take at most :data:`TARGET_BYTES` (else
each group runs the dense block again, with the block's solved layers at
their dense values). Within a block the layers are taken in execution
order, those reading the same tensor (q/k/v, gate/up, a shortcut and the
first conv) together, and each group costs one block forward on
``H_pruned`` over the calibration set, cut short once the group's layers
have had their calls (:class:`_CallCounts`); after the block, ``H_pruned``
advances one block. The whole chain costs ``O(sum of block forwards)``,
i.e. linear in depth, and the network is run once (twice when layers before
the chain were pruned) to record the first block's input and every block's
side inputs (masks, position embeddings), which are assumed not to depend
on the hidden states.

Layers outside the chain (a stem before it, a classifier head after it)
are solved as before: one capture over the whole network per layer, with the
solved layers swapped back to their dense values for the target pass.

Cached memory: ``2 * N * bytes(h)`` for ``N`` calibration batches of hidden
state ``h`` (the larger of two consecutive blocks' inputs, while a block
runs), plus one block's targets (at most :data:`TARGET_BYTES`), plus one
group's statistics (see :mod:`.capture`); ``PruneReport.engine["cache_bytes"]``
and ``["target_bytes"]`` report the peaks.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .attention import attention_host, layer_hook
from .batches import model_batches, module_device
from .blocks import find_chain, first_tensor, trace_calls
from .capture import Collector, capture, relu_layers
from .layer_solve import finish_layer, param_tensor, set_values
from .layers import named_layers, output_rows, unfold_input
from .modes import eval_mode
from .passes import TargetSwap


#: the most bytes of a block's layer outputs kept as targets for its groups
TARGET_BYTES = 1 << 30


def _inside(unit: str, name: str) -> bool:
    return name == unit or name.startswith(unit + ".")


def _groups(names, calls) -> list:
    """Consecutive layers (in execution order) that read the same input tensor."""
    hidden = {}
    for c in calls:
        hidden.setdefault(c.name, c.hidden)
    groups = []
    for n in names:
        if groups and hidden.get(n) is not None and hidden.get(n) is hidden.get(groups[-1][0]):
            groups[-1].append(n)
        else:
            groups.append([n])
    return groups


class Cascade:
    """One cascade over ``names``: the solved layers and the dense values of their tensors."""

    def __init__(self, model, run, snapshot, bar):
        self.model, self.run, self.snapshot, self.bar = model, run, snapshot, bar
        self.modules = named_layers(model)
        self.solved = OrderedDict()
        self.dense_values = []
        self.detected = relu_layers(model)
        self.engine = {"chain_blocks": 0, "network_passes": 0, "cache_bytes": 0, "target_bytes": 0}

    def _relu(self, name) -> bool:
        return dict(self.run.relu or {}).get(name, name in self.detected)

    def _keep(self, name, pending) -> None:
        """Store the solution of the submitted layer, write it into the model, remember the dense values."""
        module = self.run.found[name]
        self.solved[name] = finish_layer(pending)
        tensors = [param_tensor(module, "weight")] + ([param_tensor(module, "bias")] if module.bias is not None else [])
        self.dense_values += [(t, self.snapshot.recorded(t)) for t in tensors]
        W, b, _ = self.solved[name]
        set_values(module, W, b)
        self.bar.update()

    def network_step(self, name) -> None:
        """One layer from a capture over the whole network."""
        self.bar.set_postfix_str(name)
        run = self.run
        ld = capture(self.model, run.data, layers=[name], mode=run.modes(), max_rows=run.max_rows, seed=run.seed,
                     target_values=self.dense_values, relu=run.relu)[name]
        self.engine["network_passes"] += 1
        self._keep(name, self.run.start(name, ld, cascade=True))

    def chain(self, units, calls, order) -> None:
        """Every layer of ``order`` inside the chain ``units``, block by block."""
        self.engine["chain_blocks"] = len(units)
        dense, pruned, keeps = _record_inputs(self.model, self.run.data, units, self.modules, self.dense_values)
        for i, unit in enumerate(units):
            module = self.modules[unit.name]
            names = [n for n in order if _inside(unit.name, n)]
            self.engine["cache_bytes"] = max(self.engine["cache_bytes"], dense.nbytes() + (
                0 if pruned is dense else pruned.nbytes()))
            last = i + 1 == len(units)
            ahead, targets = self._dense_block(module, i, names, dense, last)
            unit_values = []
            for group in _groups(names, calls):
                self.bar.set_postfix_str(",".join(group))
                captured = self._capture_group(module, i, group, dense, pruned, keeps, unit_values, targets)
                pending = {name: self.run.start(name, ld, cascade=True) for name, ld in captured.items()}
                for name in captured:  # the group's layers share their input: solved concurrently
                    before = len(self.dense_values)
                    self._keep(name, pending[name])
                    unit_values += self.dense_values[before:]
            if not last:
                nxt = units[i + 1].hidden
                tail = None if nxt.shape == unit.output.shape else tuple(nxt.shape[1:])
                shared = pruned is dense and not names
                ahead_pruned = ahead if shared else pruned.advance(module, i)
                dense = dense.moved(ahead, tail)
                pruned = dense if shared else pruned.moved(ahead_pruned, tail)

    def _dense_block(self, module, i, names, dense: "_Stream", last: bool):
        """Block ``i`` (every layer still dense) on ``H_dense``, once per batch: ``(ahead, targets)``.

        ``ahead``: the next block's dense inputs (None after the last block).
        ``targets``: per layer of ``names``, per batch, its outputs (one entry
        per call); None when they would take more than :data:`TARGET_BYTES`.
        """
        targets = {n: [[] for _ in dense.hidden] for n in names}
        state = {"batch": 0, "bytes": 0, "keep": bool(names)}

        def hook(name):
            def record(m, x, y):
                if state["keep"]:
                    rows = output_rows(m, y).cpu()
                    state["bytes"] += rows.numel() * rows.element_size()
                    state["keep"] = state["bytes"] <= TARGET_BYTES
                    targets[name][state["batch"]].append(rows)
            return record

        handles = [layer_hook(self.modules, n, hook(n)) for n in names]
        ahead = []
        try:
            for b in range(len(dense.hidden)):
                if last and not state["keep"]:
                    break
                state["batch"] = b
                out = dense.call(module, i, b)
                if not last:
                    ahead.append(first_tensor(out))
        finally:
            for h in handles:
                h.remove()
        if not state["keep"]:
            return (None if last else ahead), None
        self.engine["target_bytes"] = max(self.engine["target_bytes"], state["bytes"])
        return (None if last else ahead), targets

    def _capture_group(self, module, i, group, dense, pruned, keeps, unit_values, targets) -> dict:
        """Targets from block ``i`` at its dense values on ``H_dense`` (``targets``, recorded by
        :meth:`_dense_block`, where given), inputs from it as it is on ``H_pruned``."""
        run = self.run
        cols = {n: Collector(n, self.modules[n], run.modes()[n], run.max_rows, run.seed) for n in group}
        phase = {"now": "targets"}
        calls = _CallCounts(group)

        def hook(m, x, y, col=None):
            if phase["now"] != "inputs":
                col.outputs.append(output_rows(m, y))
            if phase["now"] != "targets":
                col.inputs.append(unfold_input(m, x))
            calls.seen(col.name)

        handles = [layer_hook(self.modules, n, lambda m, x, y, c=cols[n]: hook(m, x, y, c)) for n in group]
        swap = TargetSwap(unit_values)
        try:
            for b, keep in enumerate(keeps):
                for col in cols.values():
                    col.keep = keep
                if targets is not None:
                    for n in group:
                        cols[n].outputs.extend(targets[n][b])
                        targets[n][b] = None  # released as soon as it is used
                    phase["now"] = "inputs"
                    calls.run(pruned.call, module, i, b)
                elif pruned is dense and not unit_values:
                    phase["now"] = "both"
                    calls.run(dense.call, module, i, b)
                else:
                    phase["now"] = "targets"
                    with swap.targets():
                        calls.run(dense.call, module, i, b)
                    phase["now"] = "inputs"
                    calls.run(pruned.call, module, i, b)
                for col in cols.values():
                    col.flush()
                calls.learn()
        finally:
            for h in handles:
                h.remove()
        return {n: col.result(self._relu(n)) for n, col in cols.items()}


class _GroupCaptured(Exception):
    """Raised from a hook to end a block forward once every layer of the group has been called."""


class _CallCounts:
    """Stops a block forward early, as soon as each layer of a group has had its calls.

    The first batch runs the whole block and counts every layer's calls (a layer
    inside a loop is called more than once); later batches stop at the call
    that completes those counts, skipping the rest of the block (the layers
    after the group: about half a block forward on average). Where a layer
    was never called on the first batch nothing stops early.
    """

    def __init__(self, group):
        self.group, self.fired, self.expected, self.learning = list(group), {}, None, True

    def seen(self, name) -> None:
        self.fired[name] = self.fired.get(name, 0) + 1
        if self.expected is not None and all(self.fired.get(n, 0) >= c for n, c in self.expected.items()):
            raise _GroupCaptured

    def run(self, call, *args) -> None:
        self.fired = {}
        try:
            call(*args)
        except _GroupCaptured:
            pass

    def learn(self) -> None:
        """After the first batch: the counts to stop at (``None``: never stop early)."""
        if self.learning and all(self.fired.get(n, 0) for n in self.group):
            self.expected = dict(self.fired)
        self.learning = False


class _Stream:
    """Cached hidden states over the calibration batches and every block's side inputs per batch."""

    def __init__(self, hidden: list, sides: list):
        self.hidden, self.sides = hidden, sides

    def call(self, module, i, b):
        """Block ``i`` on batch ``b`` (on a copy: a block may change its input in place)."""
        args, kwargs = self.sides[b][i]
        return module(self.hidden[b].clone(), *args, **kwargs)

    def advance(self, module, i) -> list:
        return [first_tensor(self.call(module, i, b)) for b in range(len(self.hidden))]

    def moved(self, hidden, tail) -> "_Stream":
        """The stream one block further: ``hidden`` reshaped to the next block's input (``tail``)."""
        return _Stream([h if tail is None else h.reshape(h.shape[0], *tail) for h in hidden], self.sides)

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def _record_inputs(model, data, units, modules, dense_values):
    """Per batch: the first block's input and every block's side inputs, for both streams.

    Returns ``(H_dense, H_pruned, keeps)`` as :class:`_Stream` s, one object
    when nothing before the chain has been solved (the streams coincide).
    """
    seen = {}

    def grab(i):
        def pre(m, args, kwargs):
            if i not in seen:
                seen[i] = (args[0].clone() if i == 0 else None, (tuple(args[1:]), dict(kwargs)))
        return pre

    handles = [modules[u.name].register_forward_pre_hook(grab(i), with_kwargs=True) for i, u in enumerate(units)]
    swap = TargetSwap(dense_values)
    phases = ("dense", "pruned") if swap.pairs else ("dense",)
    hidden = {p: [] for p in phases}
    sides = {p: [] for p in phases}
    keeps = []
    try:
        for batch in model_batches(model, data, module_device(model)):
            keeps.append(batch.keep())
            for phase in phases:
                seen.clear()
                if phase == "dense" and swap.pairs:
                    with swap.targets():
                        batch(model)
                else:
                    batch(model)
                hidden[phase].append(seen[0][0])
                sides[phase].append([seen[i][1] for i in range(len(units))])
    finally:
        for h in handles:
            h.remove()
    dense = _Stream(hidden["dense"], sides["dense"])
    return dense, (_Stream(hidden["pruned"], sides["pruned"]) if swap.pairs else dense), keeps


def solve_cascade(model, run, names, snapshot, bar, *, blocks=True) -> tuple:
    """Solve ``names`` in the cascade scheme; returns ``(solved, engine facts)``.

    ``blocks=False`` solves every layer from a capture over the whole network.
    """
    first = next(iter(model_batches(model, run.data, module_device(model))))
    calls = trace_calls(model, first)
    position = {}
    for k, c in enumerate(calls):
        position.setdefault(c.name, k)
    modules = dict(model.named_modules())
    for n in names:
        host = attention_host(modules, n)
        if n not in position and host is not None:
            position[n] = position.get(next((h for h, m in modules.items() if m is host), ""), len(calls))
    order = sorted(names, key=lambda n: position.get(n, len(calls)))
    cascade = Cascade(model, run, snapshot, bar)
    units = find_chain(calls, names) if blocks else []
    inside = {n for n in order if any(_inside(u.name, n) for u in units)}
    start = position[units[0].name] if units else len(calls)
    for name in [n for n in order if n not in inside and position.get(n, len(calls)) < start]:
        cascade.network_step(name)
    if inside:
        with eval_mode(model), torch.no_grad():
            cascade.chain(units, calls, [n for n in order if n in inside])
    for name in [n for n in order if n not in inside and position.get(n, len(calls)) >= start]:
        cascade.network_step(name)
    return cascade.solved, cascade.engine
