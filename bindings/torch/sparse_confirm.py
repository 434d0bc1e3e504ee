"""Confirm :func:`.sparse_inference.to_sparse`'s choices on the whole model.

A layer's micro-benchmark calls it alone in a tight loop, where its Python
steps and kernels stay warm; inside a model every call costs more, so a small
layer measured slightly faster alone can make the model slower (the MNIST
MLP's 100x300 layer at batch 1). :func:`confirm` times the model itself with
and without each converted layer (backward elimination, weakest layer first)
and keeps a layer only when

``time(model without it) / time(model with it) >= min_speedup``

at every batch size. The two variants of each comparison are timed in turn
within every repeat, so a slow phase of the machine slows both alike. Where
:func:`.sparse_inference.to_sparse` fuses runs for batch 1
(:mod:`.sparse_chain`), each variant is timed fused, as it will run: a layer
that won its own benchmark is kept when it pays inside the fused run, even
if it would not pay there as a module of its own.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .modes import eval_mode
from .sparse_chain import fusable_runs, fused_modules, module_at


def _batch(example: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` copies of the first sample of ``example`` (the timing input for one batch size)."""
    return example[:1].repeat(size, *[1] * (example.dim() - 1))


def install_modules(model: nn.Module, modules: dict) -> None:
    """Set each ``{dotted name: module}`` entry as the submodule of that name."""
    parents = dict(model.named_modules())
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        setattr(parents[parent] if parent else model, child, module)


#: seconds of calls before anything is timed: the first calls in a process (lazy set-up, a sparse
#: module's arrays, caches, the clock speed) run up to twice as slow as the later ones
WARM_SECONDS = 0.02


def calls_per_sample(fn, seconds: float = 1e-3) -> int:
    """Call ``fn`` for :data:`WARM_SECONDS` (at least twice); the number of calls that last about
    ``seconds``, from the last one."""
    start = time.perf_counter()
    for i in range(10**6):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        if i >= 1 and t1 - start >= WARM_SECONDS:
            break
    return max(1, int(seconds / max(t1 - t0, 1e-7)))


def _compare(model, variants, x, repeats) -> list:
    """Median seconds per forward of ``model`` under each variant (``{name: module}``), timed in turn."""
    times = [[] for _ in variants]
    with torch.no_grad():
        calls = 100
        for variant in variants:  # each warmed up; the slowest sets the calls per sample
            install_modules(model, variant)
            calls = min(calls, calls_per_sample(lambda: model(x)))
        for _ in range(repeats):
            for spent, variant in zip(times, variants):
                install_modules(model, variant)
                model(x)  # warm-up after the swap
                t0 = time.perf_counter()
                for _ in range(calls):
                    model(x)
                spent.append((time.perf_counter() - t0) / calls)
    return [statistics.median(t) for t in times]


def confirm(model, swaps, dense, decisions, example, batch_sizes, repeats, min_speedup, fuse=False) -> list:
    """The ``swaps`` (``(name, SparseLinear)``) that pay on the whole model; the others are
    marked ``"dense"`` in ``decisions`` with a note. ``dense`` maps each name to the module
    it replaces. With ``fuse``, each variant is timed as it would run: its runs of layers and
    ReLUs fused (:mod:`.sparse_chain`). The model is left with its original modules and
    train/eval modes whatever happens (the timings run in eval mode)."""
    by_name, sparse = {d.name: d for d in decisions}, dict(swaps)
    order = sorted(sparse, key=lambda n: min(by_name[n].speedup(b) for b in batch_sizes))  # weakest first
    kept = set(sparse)
    originals = _touched(model, sparse, fuse)

    def variant(names):
        modules = {**originals, **{n: sparse[n] if n in names else dense[n] for n in sparse}}
        if fuse:
            install_modules(model, modules)
            modules.update(fused_modules(model, fusable_runs(model)))
        return modules

    with eval_mode(model):
        try:
            for name in order:
                ratios = {}
                for b in batch_sizes:
                    t_with, t_without = _compare(model, [variant(kept), variant(kept - {name})],
                                                 _batch(example, b), repeats)
                    ratios[b] = t_without / t_with
                if min(ratios.values()) < min_speedup:
                    kept.discard(name)
                    d = by_name[name]
                    d.notes.append(f"{name}: {d.decision} dropped: the whole model ran "
                                   + ", ".join(f"x{r:.2f} at batch {b}" for b, r in ratios.items())
                                   + f" with it (< min_speedup {min_speedup:g})")
                    d.decision = "dense"
        finally:
            install_modules(model, {**originals, **dense})
    return [(n, m) for n, m in swaps if n in kept]


def _touched(model, sparse, fuse) -> dict:
    """The modules now in every place a variant may set: the swapped layers, and with ``fuse``
    every module of a run that fusing all of ``sparse`` would form."""
    if not fuse:
        return {}
    now = {n: module_at(model, n) for n in sparse}
    install_modules(model, sparse)
    try:
        names = {n for run in fusable_runs(model) for n in run}
        return {n: now[n] if n in now else module_at(model, n) for n in names}  # the others: not swapped
    finally:
        install_modules(model, now)

