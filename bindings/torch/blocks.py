"""Find the chain of blocks a model runs its hidden state through, by tracing one batch.

A *chain* is a sequence of sibling modules ``u_1, ..., u_n`` (children of one
module, called once each, in this order) where the first positional argument
of ``u_{i+1}`` is the output of ``u_i`` (its first element when the output is
a tuple or a model-output mapping; a reshaped view such as ``flatten`` also
links). Everything else a unit receives (attention masks, position
embeddings, flags) is a *side input*: recorded per batch and passed as it was.
Such a chain can be run unit by unit from cached inputs, which is what makes
the cascade cost O(L) unit forwards instead of O(L) network forwards per layer.

:func:`find_chain` returns the chain holding the most of the chosen layers,
expanding every unit whose own children form a complete chain (a
``nn.Sequential``, a ResNet stage) into those children; decoder stacks
(``model.layers``, ``transformer.h``, ``encoder.layer``) are found as the
chain inside their parent. Layers outside the chain are left to the
network-level cascade.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


def first_tensor(value):
    """The hidden state in a module's output: the value itself, or its first element."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if isinstance(value, Mapping) and value:
        first = next(iter(value.values()))
        return first if isinstance(first, torch.Tensor) else None
    return None


@dataclass
class Call:
    """One traced module call: its first argument and (first) output, plus the tensors it received;
    ``plain``: it returned that tensor alone."""

    name: str
    hidden: object
    output: object
    inputs: list = field(default_factory=list)
    plain: bool = False


def _tensors(args, kwargs) -> list:
    flat = list(args) + list(kwargs.values())
    out = []
    for v in flat:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out.extend(t for t in v if isinstance(t, torch.Tensor))
    return out


def trace_calls(model: nn.Module, batch) -> list:
    """Every module call of ``batch(model)`` in the order the calls finish their start."""
    calls, handles, open_calls = [], [], {}

    def before(module, args, kwargs, name=None):
        call = Call(name, args[0] if args else None, None, _tensors(args, kwargs))
        open_calls.setdefault(name, []).append(call)
        calls.append(call)

    def after(module, args, kwargs, output, name=None):
        call = open_calls[name].pop()
        call.output, call.plain = first_tensor(output), isinstance(output, torch.Tensor)

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(
                lambda m, a, k, n=name: before(m, a, k, n), with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda m, a, k, o, n=name: after(m, a, k, o, n), with_kwargs=True))
    try:
        with torch.no_grad():
            batch(model)
    finally:
        for h in handles:
            h.remove()
    return calls


def _links(prev: Call, nxt: Call) -> bool:
    """``nxt`` takes ``prev``'s output (or a reshaped view of it) as its hidden state."""
    a, b = prev.output, nxt.hidden
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if a is b:
        return True
    return (a.data_ptr() == b.data_ptr() and a.numel() == b.numel() and a.dim() >= 1 and b.dim() >= 1
            and a.shape[0] == b.shape[0])


def _children_calls(calls, parent: str):
    depth = parent.count(".") + 1 if parent else 0
    prefix = parent + "." if parent else ""
    return [c for c in calls if c.name.startswith(prefix) and c.name.count(".") == depth]


def _chains(children: list) -> list:
    """Maximal runs of linked calls among one module's children (each called once)."""
    counts = {}
    for c in children:
        counts[c.name] = counts.get(c.name, 0) + 1
    chains, current = [], []
    for c in children:
        produced = {id(p.output) for p in current[:-1]}
        ok = (counts[c.name] == 1 and current and _links(current[-1], c)
              and not any(id(t) in produced for t in c.inputs if t is not c.hidden))
        if ok:
            current.append(c)
        else:
            if current:
                chains.append(current)
            current = [c] if counts[c.name] == 1 and isinstance(c.hidden, torch.Tensor) else []
    if current:
        chains.append(current)
    return chains


def _complete(calls, call: Call) -> list | None:
    """The children of ``call``'s module when they form one chain from its input to its output."""
    kids = _children_calls(calls, call.name)
    chains = _chains(kids)
    if len(chains) != 1 or len(chains[0]) != len(kids):
        return None
    chain = chains[0]
    if chain[0].hidden is not call.hidden or not _links(chain[-1], Call("", call.output, None)):
        return None
    return chain


def _expand(calls, chain, chosen) -> list:
    out = []
    for c in chain:
        inner = _complete(calls, c) if _inside(c.name, chosen) > 1 else None
        out.extend(_expand(calls, inner, chosen) if inner else [c])
    return out


def _inside(unit: str, chosen) -> int:
    return sum(1 for n in chosen if n == unit or n.startswith(unit + "."))


def find_chain(calls: list, chosen) -> list:
    """The expanded chain covering the most ``chosen`` layers (ties: the most units); [] if none."""
    parents = {c.name.rsplit(".", 1)[0] if "." in c.name else "" for c in calls}
    best, best_key = [], (0, 0)
    for parent in parents:
        for chain in _chains(_children_calls(calls, parent)):
            units = _expand(calls, chain, chosen)
            key = (sum(_inside(u.name, chosen) for u in units), len(units))
            if key > best_key and key[1] > 1:
                best, best_key = units, key
    return best
