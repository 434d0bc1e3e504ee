"""The cached block inputs of the block engine (:mod:`.cascade`) and how blocks are run on them.

:class:`Stream`: per calibration batch, the hidden state entering a block and
every block's side inputs; :func:`record_inputs` records them for the first
block, :meth:`Stream.dense_pass` runs a block once over all batches (the next
block's inputs, and its layers' outputs as targets). :class:`CallCounts` cuts
a block forward short once a group's layers have had their calls.
"""
from __future__ import annotations

from functools import partial

from .attention import layer_hook
from .batches import model_batches, module_device
from .blocks import first_tensor
from .layers import output_rows
from .modes import forwards_replaced
from .passes import TargetSwap


class _GroupCaptured(Exception):
    """Raised from a hook to end a block forward once every layer of the group has been called."""


class CallCounts:
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


class Stream:
    """Cached hidden states over the calibration batches and every block's side inputs per batch."""

    def __init__(self, hidden: list, sides: list):
        self.hidden, self.sides = hidden, sides

    def call(self, module, i, b):
        """Block ``i`` on batch ``b`` (on a copy: a block may change its input in place)."""
        args, kwargs = self.sides[b][i]
        return module(self.hidden[b].clone(), *args, **kwargs)

    def advance(self, module, i, replay=None) -> list:
        """Block ``i``'s outputs over every batch (its solved layers replayed by ``replay`` where given)."""
        return [first_tensor(self.call(module, i, b) if replay is None else replay.call(self, module, i, b))
                for b in range(len(self.hidden))]

    def moved(self, hidden, tail) -> "Stream":
        """The stream one block further: ``hidden`` reshaped to the next block's input (``tail``)."""
        return Stream([h if tail is None else h.reshape(h.shape[0], *tail) for h in hidden], self.sides)

    def dense_pass(self, module, i, names, modules, last: bool, max_bytes: int):
        """Block ``i`` (every layer still dense) on this stream, once per batch: ``(ahead, targets, bytes)``.

        ``ahead``: the next block's inputs (None after the last block).
        ``targets``: per layer of ``names``, per batch, its outputs (one entry
        per call), taking ``bytes``; ``(None, 0)`` for them when they would
        take more than ``max_bytes``.
        """
        targets = {n: [[] for _ in self.hidden] for n in names}
        state = {"batch": 0, "bytes": 0, "keep": bool(names)}

        def hook(name):
            def record(m, x, y):
                if state["keep"]:
                    rows = output_rows(m, y).cpu()
                    state["bytes"] += rows.numel() * rows.element_size()
                    state["keep"] = state["bytes"] <= max_bytes
                    targets[name][state["batch"]].append(rows)
            return record

        handles = [layer_hook(modules, n, hook(n)) for n in names]
        ahead = []
        try:
            for b in range(len(self.hidden)):
                if last and not state["keep"]:
                    break
                state["batch"] = b
                out = self.call(module, i, b)
                if not last:
                    ahead.append(first_tensor(out))
        finally:
            for h in handles:
                h.remove()
        if not state["keep"]:
            return (None if last else ahead), None, 0
        return (None if last else ahead), targets, state["bytes"]

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def record_inputs(model, data, units, modules, dense_values):
    """Per batch: the first block's input and every block's side inputs, for both streams.

    Returns ``(H_dense, H_pruned, keeps)`` as :class:`Stream` s, one object
    when nothing before the chain has been solved (the streams coincide).
    The blocks are skipped meanwhile (:func:`_units_skipped`), so a pass costs
    the modules before and after the chain, not a network forward; a batch the
    skipped blocks' outputs do not fit (code after the chain that needs its
    own shapes) is recorded by a whole pass.
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

    def run(batch):
        seen.clear()
        try:
            with _units_skipped(units, modules):
                batch(model)
            whole = len(seen) < len(units)  # code that stopped early on the skipped blocks' outputs
        except Exception:  # noqa: BLE001 - code after the chain that needs this batch's own shapes
            whole = True
        if whole:
            seen.clear()
            batch(model)

    try:
        for batch in model_batches(model, data, module_device(model)):
            keeps.append(batch.keep())
            for phase in phases:
                if phase == "dense" and swap.pairs:
                    with swap.targets():
                        run(batch)
                else:
                    run(batch)
                hidden[phase].append(seen[0][0])
                sides[phase].append([seen[i][1] for i in range(len(units))])
    finally:
        for h in handles:
            h.remove()
    dense = Stream(hidden["dense"], sides["dense"])
    return dense, (Stream(hidden["pruned"], sides["pruned"]) if swap.pairs else dense), keeps


def _units_skipped(units, modules):
    """Each unit that returned a tensor alone on the traced batch returns a copy of it instead of
    computing: its pre-hook still sees its arguments. Side inputs are taken not to depend on the
    hidden state, here for both streams: one computed from a block's output would be the traced
    batch's (units returning more than a tensor run as usual)."""
    return forwards_replaced({modules[u.name]: partial(_traced_output, u) for u in units if u.plain})


def _traced_output(unit, *args, **kwargs):
    return unit.output.clone()
