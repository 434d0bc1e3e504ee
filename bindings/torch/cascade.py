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
have had their calls (:class:`~.block_streams.CallCounts`), with the layers
of earlier groups replaying their recorded outputs (:mod:`.replay`); after
the block, ``H_pruned`` advances one block. The whole chain costs ``O(sum of block forwards)``,
i.e. linear in depth, and the network is run once (twice when layers before
the chain were pruned), with the blocks skipped, to record the first block's
input and every block's side inputs (masks, position embeddings), which are
assumed not to depend on the hidden states.

Layers outside the chain (a stem before it, a classifier head after it)
are solved as before: one capture over the whole network per layer, with the
solved layers swapped back to their dense values for the target pass.

Cached memory: ``2 * N * bytes(h)`` for ``N`` calibration batches of hidden
state ``h`` (the larger of two consecutive blocks' inputs, while a block
runs), plus one block's targets (at most :data:`TARGET_BYTES`), plus its replayed
layer outputs (at most :data:`REPLAY_BYTES`), plus one group's statistics
(see :mod:`.capture`); ``PruneReport.engine["cache_bytes"]``,
``["target_bytes"]`` and ``["replay_bytes"]`` report the peaks.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .attention import attention_host, layer_hook
from .batches import model_batches, module_device
from .block_streams import CallCounts, record_inputs
from .blocks import find_chain, trace_calls
from .capture import Collector, capture, relu_layers
from .layer_solve import finish_layer, param_tensor, set_values
from .layers import named_layers, output_rows
from .modes import eval_mode
from .passes import TargetSwap
from .replay import Replay
from .shared_input import SharedCollector, shares_input


#: the most bytes of a block's layer outputs kept as targets for its groups
TARGET_BYTES = 1 << 30
#: the most bytes of a block's solved-layer outputs kept for replay on the pruned stream
REPLAY_BYTES = 1 << 30


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
        self.engine = {"chain_blocks": 0, "network_passes": 0, "cache_bytes": 0, "target_bytes": 0,
                       "replay_bytes": 0}

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
        dense, pruned, keeps = record_inputs(self.model, self.run.data, units, self.modules, self.dense_values)
        replay = Replay(self.modules, REPLAY_BYTES)
        traced = {c.name for c in calls}
        for i, unit in enumerate(units):
            module = self.modules[unit.name]
            names = [n for n in order if _inside(unit.name, n)]
            self.engine["cache_bytes"] = max(self.engine["cache_bytes"], dense.nbytes() + (
                0 if pruned is dense else pruned.nbytes()))
            last = i + 1 == len(units)
            ahead, targets, target_bytes = dense.dense_pass(module, i, names, self.modules, last, TARGET_BYTES)
            self.engine["target_bytes"] = max(self.engine["target_bytes"], target_bytes)
            unit_values = []
            groups = _groups(names, calls)
            # a layer the traced batch never called has no place in the order: it may feed a replayed one
            replayable = all(n in traced or attention_host(self.modules, n) is not None for n in names)
            for g, group in enumerate(groups):
                self.bar.set_postfix_str(",".join(group))
                captured = self._capture_group(module, i, group, dense, pruned, keeps, unit_values, targets, replay)
                pending = {name: self.run.start(name, ld, cascade=True) for name, ld in captured.items()}
                for name in captured:  # the group's layers share their input: solved concurrently
                    before = len(self.dense_values)
                    self._keep(name, pending[name])
                    unit_values += self.dense_values[before:]
                if replayable and g + 1 < len(groups):  # the advance computes the last group once anyway
                    replay.add(captured)
            if not last:
                nxt = units[i + 1].hidden
                tail = None if nxt.shape == unit.output.shape else tuple(nxt.shape[1:])
                shared = pruned is dense and not names
                ahead_pruned = ahead if shared else pruned.advance(module, i, replay)
                dense = dense.moved(ahead, tail)
                pruned = dense if shared else pruned.moved(ahead_pruned, tail)
            replay.clear()
        self.engine["replay_bytes"] = replay.peak

    def _capture_group(self, module, i, group, dense, pruned, keeps, unit_values, targets, replay) -> dict:
        """Targets from block ``i`` at its dense values on ``H_dense`` (``targets``, recorded by
        :meth:`~.block_streams.Stream.dense_pass`, where given), inputs from it as it is on ``H_pruned``
        (the block's solved layers replayed)."""
        run = self.run
        modules, modes = [self.modules[n] for n in group], [run.modes()[n] for n in group]
        if shares_input(modules, modes) and all(attention_host(self.modules, n) is None for n in group):
            shared = SharedCollector(group, modules, modes[0], run.max_rows, run.seed)
            cols = {n: shared for n in group}
        else:
            cols = {n: Collector(n, m, mode, run.max_rows, run.seed) for n, m, mode in zip(group, modules, modes)}
        collectors = list({id(c): c for c in cols.values()}.values())
        phase = {"now": "targets"}
        calls = CallCounts(group)

        def hook(name, m, x, y):
            if phase["now"] != "inputs":
                cols[name].add_output(name, output_rows(m, y))
            if phase["now"] != "targets":
                cols[name].add_input(name, m, x)
            calls.seen(name)

        handles = [layer_hook(self.modules, n, lambda m, x, y, n=n: hook(n, m, x, y)) for n in group]
        swap = TargetSwap(unit_values)
        try:
            for b, keep in enumerate(keeps):
                for col in collectors:
                    col.keep = keep
                if targets is not None:
                    for n in group:
                        for rows in targets[n][b]:
                            cols[n].add_output(n, rows)
                        targets[n][b] = None  # released as soon as it is used
                    phase["now"] = "inputs"
                    calls.run(replay.call, pruned, module, i, b)
                elif pruned is dense and not unit_values:
                    phase["now"] = "both"
                    calls.run(dense.call, module, i, b)
                else:
                    phase["now"] = "targets"
                    with swap.targets():
                        calls.run(dense.call, module, i, b)
                    phase["now"] = "inputs"
                    calls.run(replay.call, pruned, module, i, b)
                for col in collectors:
                    col.flush()
                calls.learn()
        finally:
            for h in handles:
                h.remove()
        return {n: ld for col in collectors for n, ld in col.results(self._relu).items()}


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
