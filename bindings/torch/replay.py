"""Solved layers replayed on the pruned stream of the block engine (:mod:`.cascade`).

Each group of a block is captured by running the block on ``H_pruned``
again, and the block is run once more to advance the stream. A layer solved
in an earlier group computes the same output on every one of these runs:
its weights are final once solved, and so is its input at its first call in
a block forward, since every layer called before it is in its group or an
earlier one (groups follow the execution order; a group's layers read the
same tensor, not each other's outputs) or is not pruned. :class:`Replay`
records that output on the first run after the layer is solved, per batch,
and returns it on later runs instead of computing the layer, as long as its
version counter shows no in-place change (a block that adds to a layer's
output in place gets the layer computed again). A
block of ``k`` groups then computes each layer about once on ``H_pruned``
instead of up to ``k`` times (a transformer block's q/k/v: 4 times, 1).

Only a layer's first call of a block forward is replayed (a later call may
read a layer solved after it); the other calls, the layers the projections
of ``nn.MultiheadAttention`` compute functionally, and every output once the
recorded ones take :attr:`Replay.max_bytes`, are computed as usual. The
cascade replays nothing in a block holding a layer the traced batch did not
call (it has no place in the execution order). In-place changes are seen
through the version counter: a kernel writing through ``.data`` or a raw
pointer is not, and would change what is replayed.
"""
from __future__ import annotations

import torch

from .attention import attention_host
from .modes import forwards_replaced


class Replay:
    """Per solved layer and calibration batch, its output at its first call of a block forward."""

    def __init__(self, modules: dict, max_bytes: int):
        self.modules, self.max_bytes = modules, max_bytes
        self.outputs: dict = {}
        self.bytes = self.peak = 0
        self._batch, self._called = None, set()

    def add(self, names) -> None:
        """Replay these (solved) layers from now on, where they are module calls."""
        for name in names:
            if attention_host(self.modules, name) is None:
                self.outputs.setdefault(name, {})

    def clear(self) -> None:
        """Forget every layer and output (the next block)."""
        self.outputs, self.bytes = {}, 0

    def call(self, stream, module, i, b):
        """``stream.call(module, i, b)`` with the solved layers replayed on batch ``b``."""
        if not self.outputs:
            return stream.call(module, i, b)
        self._batch, self._called = b, set()
        with forwards_replaced({self.modules[n]: self._forward(n, self.modules[n].forward) for n in self.outputs}):
            return stream.call(module, i, b)

    def _forward(self, name, compute):
        def forward(*args, **kwargs):
            if name in self._called:
                return compute(*args, **kwargs)
            self._called.add(name)
            recorded = self.outputs[name].get(self._batch)
            if recorded is not None and tensor_version(recorded[0]) == recorded[1]:
                return recorded[0]
            if recorded is not None:  # changed in place after it was recorded
                del self.outputs[name][self._batch]
                self.bytes -= _nbytes(recorded[0])
            y = compute(*args, **kwargs)
            version = tensor_version(y)
            if version is not None and self.bytes + _nbytes(y) <= self.max_bytes:
                self.outputs[name][self._batch] = (y, version)
                self.bytes += _nbytes(y)
                self.peak = max(self.peak, self.bytes)
            return y
        return forward


def _nbytes(y: torch.Tensor) -> int:
    return y.numel() * y.element_size()


def tensor_version(y):
    """The version counter of tensor ``y`` (bumped by every in-place change), None where it has none."""
    if not isinstance(y, torch.Tensor) or y.is_inference():
        return None
    return y._version
