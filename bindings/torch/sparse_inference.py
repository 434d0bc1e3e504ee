"""Sparse inference: multiply with a sparse weight where that is measured faster.

:func:`to_sparse` visits every ``nn.Linear`` and every 1x1 ``nn.Conv2d``
(``groups=1``, ``padding=0``, ``dilation=1``) whose weight holds zeros, times
the dense product against each sparse layout at the layer's own shape,
sparsity and device (a micro-benchmark per layer and batch size, median of
``repeats``), and replaces the layer by a :class:`SparseLinear` only when the
sparse product is faster at every requested batch size (and, given an
``example`` input, when the whole model is faster with it). The decision and the
timings stay on the module (``.decision``, ``.timings``) and in the returned
:class:`SparseInferenceReport`.

Layouts: ``"csr"`` and ``"bsr"`` (``torch.sparse``; BSR with square blocks
that divide the weight's shape) everywhere; ``"2:4"``
(``torch.sparse.to_sparse_semi_structured``) only on CUDA devices of compute
capability 8.0 or higher and half-precision weights that follow the 2:4
pattern; elsewhere the report says why it was skipped.
"""
from __future__ import annotations

import statistics
import time
from functools import partial

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_scalar

from .modes import eval_mode
from .sparse_chain import fusable_runs, fused_modules, warm_up
from .sparse_confirm import calls_per_sample, confirm, install_modules
from .sparse_linear import BLOCKS, SparseLinear
from .sparse_report import LayerDecision, SparseInferenceReport

LAYOUTS = ("csr", "bsr", "2:4")


def _is_1x1(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
            and m.padding in ((0, 0), "valid") and m.dilation == (1, 1) and m.padding_mode == "zeros")


def _effective_weight(m: nn.Module) -> torch.Tensor:
    """The ``(out, in)`` weight the layer multiplies with (a ``torch.nn.utils.prune`` mask applied)."""
    w = m.weight.detach()
    for hook in m._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == "weight":
            w = (getattr(m, "weight_orig") * getattr(m, "weight_mask")).detach()
    return w.reshape(w.shape[0], -1).clone()


def _is_2_4(w: torch.Tensor) -> bool:
    if w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def _semi_structured_reason(w: torch.Tensor) -> str | None:
    """``None`` when 2:4 semi-structured sparsity can run here, else why not."""
    if w.device.type != "cuda":
        return f"2:4 needs a CUDA device of compute capability >= 8.0 (weights are on {w.device.type})"
    if torch.cuda.get_device_capability(w.device) < (8, 0):
        return "2:4 needs compute capability >= 8.0"
    if w.dtype not in (torch.float16, torch.bfloat16):
        return f"2:4 is used for float16/bfloat16 weights here, not {w.dtype}"
    return None


def _median_times(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each ``{name: fn}``, timed in turn within every repeat (a slow
    phase of the machine slows them all alike); each sample times enough calls to last ~1 ms.
    A ``fn`` that raises ``RuntimeError`` / ``NotImplementedError`` in its warm-up gets the
    exception as its entry (an error in the timed calls is raised)."""
    calls, out = {}, {}
    for name, fn in fns.items():
        try:
            calls[name] = min(1000, calls_per_sample(fn))  # after a warm-up (allocations, caches)
        except (RuntimeError, NotImplementedError) as exc:
            out[name] = exc
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, spent in times.items():
            fn, n = fns[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            spent.append((time.perf_counter() - t0) / n)
    return {**out, **{name: statistics.median(t) for name, t in times.items()}}


def _check_args(model, min_speedup, batch_sizes, repeats, layouts, example, fuse):
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(fuse, bool):
        raise ParameterError(f"fuse must be True or False, got {fuse!r:.80}")
    if example is not None and not (isinstance(example, torch.Tensor) and example.dim() >= 1 and len(example)):
        raise ParameterError(f"example must be a tensor holding at least one sample (batch first), got {example!r:.80}")
    min_speedup = check_scalar(min_speedup, "min_speedup", low=0.0)
    if isinstance(batch_sizes, int) or not hasattr(batch_sizes, "__iter__"):
        raise ParameterError(f"batch_sizes must be a sequence of positive integers, got {batch_sizes!r}")
    batch_sizes = tuple(check_scalar(b, "batch_sizes", low=1, integer=True) for b in batch_sizes)
    if not batch_sizes:
        raise ParameterError("batch_sizes must not be empty")
    repeats = check_scalar(repeats, "repeats", low=1, integer=True)
    layouts = (layouts,) if isinstance(layouts, str) else tuple(layouts)
    bad = [l for l in layouts if l not in LAYOUTS]
    if bad or not layouts:
        raise ParameterError(f"layouts must be a non-empty subset of {LAYOUTS}, got {layouts!r}")
    return min_speedup, batch_sizes, repeats, layouts


def _input_for(m: nn.Module, batch: int, shape_hint) -> torch.Tensor:
    """A benchmark input of the layer's shape (1x1 conv: the spatial size seen, default 8x8)."""
    w = m.weight
    gen = torch.Generator(device=w.device).manual_seed(0)
    if isinstance(m, nn.Linear):
        return torch.randn(batch, m.in_features, generator=gen, device=w.device, dtype=w.dtype)
    h, wd = shape_hint or (8, 8)
    return torch.randn(batch, m.in_channels, h, wd, generator=gen, device=w.device, dtype=w.dtype)


def _dense_module(m: nn.Module, w: torch.Tensor, bias) -> nn.Module:
    """A plain module computing the layer's dense product (the mask applied, no hooks).

    Timed through ``module(x)`` like the :class:`SparseLinear` candidates, so
    both sides pay the same module-call overhead.
    """
    kw = dict(bias=bias is not None, device=w.device, dtype=w.dtype)  # skip_init: no draw from the global RNG
    if isinstance(m, nn.Linear):
        dense = torch.nn.utils.skip_init(nn.Linear, m.in_features, m.out_features, **kw)
    else:
        dense = torch.nn.utils.skip_init(nn.Conv2d, m.in_channels, m.out_channels, 1, stride=m.stride, **kw)
    dense.requires_grad_(False)
    dense.weight.copy_(w.reshape(dense.weight.shape))
    if bias is not None:
        dense.bias.copy_(bias)
    return dense


def _decide(name, m, min_speedup, batch_sizes, repeats, layouts, shape_hint):
    """Measure dense and each usable layout; return ``(LayerDecision, SparseLinear | None)``."""
    w = _effective_weight(m)
    bias = None if m.bias is None else m.bias.detach()
    d = LayerDecision(name, tuple(w.shape), float((w == 0).float().mean()), "dense")
    stride = m.stride if isinstance(m, nn.Conv2d) else None
    candidates = {}
    for layout in layouts:
        if layout == "2:4":
            reason = _semi_structured_reason(w) or (None if _is_2_4(w) else "weight is not 2:4 sparse")
            if reason:
                d.notes.append(f"{name}: 2:4 skipped: {reason}")
                continue
        if layout == "bsr" and not any(w.shape[0] % b == 0 and w.shape[1] % b == 0 for b in BLOCKS):
            d.notes.append(f"{name}: bsr skipped: shape {tuple(w.shape)} has no block size in {BLOCKS}")
            continue
        try:
            candidates[layout] = SparseLinear(w, bias, layout, stride)
        except (RuntimeError, NotImplementedError) as exc:
            d.notes.append(f"{name}: {layout} skipped: {str(exc).splitlines()[0]}")
    with torch.no_grad():
        dense = _dense_module(m, w, bias)
        for b in batch_sizes:
            x = _input_for(m, b, shape_hint)
            fns = {"dense": partial(dense, x), **{layout: partial(mod, x) for layout, mod in candidates.items()}}
            d.timings[b] = _median_times(fns, repeats)
            if isinstance(d.timings[b]["dense"], Exception):
                raise d.timings[b]["dense"]
            for layout, t in list(d.timings[b].items()):
                if isinstance(t, Exception):
                    d.notes.append(f"{name}: {layout} skipped: {str(t).splitlines()[0]}")
                    del candidates[layout], d.timings[b][layout]
    ratios = {l: min(d.timings[b]["dense"] / d.timings[b][l] for b in batch_sizes) for l in candidates}
    best = max(ratios, key=ratios.get, default=None)
    if best is None or ratios[best] < min_speedup:
        return d, None
    d.decision = best
    chosen = candidates[best]
    chosen.decision, chosen.timings = best, d.timings
    return d, chosen


def _record_size(sizes: dict, name: str, module, inputs, output) -> None:
    sizes.setdefault(name, tuple(inputs[0].shape[-2:]))


def _spatial_sizes(model: nn.Module, example) -> dict:
    """Input spatial size of each 1x1 conv, from one forward pass of ``example`` (if given)."""
    sizes, hooks = {}, []
    if example is None:
        return sizes
    for n, m in model.named_modules():
        if _is_1x1(m):
            hooks.append(m.register_forward_hook(partial(_record_size, sizes, n)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return sizes


def to_sparse(model: nn.Module, *, min_speedup: float = 1.0, batch_sizes=(1, 64), repeats: int = 15,
              layouts=("csr", "bsr", "2:4"), example=None, fuse: bool = True) -> SparseInferenceReport:
    """Replace, in place, each pruned Linear / 1x1 Conv2d by a :class:`SparseLinear` where faster.

    Parameters
    ----------
    model : nn.Module
        Pruned weights: plain zeros or ``torch.nn.utils.prune`` masks (a
        replaced layer's mask is folded into its sparse weight; the masks of
        layers that stay dense are left as they are — fold them with
        :func:`~layertrim.bindings.torch.make_permanent`).
    min_speedup : float >= 0
        A layer is replaced when ``dense time / sparse time >= min_speedup`` at
        every batch size; ``0`` replaces every eligible layer (for testing).
    batch_sizes : sequence of int
        Batch sizes of the micro-benchmark (rows for Linear, images for conv).
    repeats : int
        Timings per batch size and layout; the median is kept.
    layouts : subset of ``("csr", "bsr", "2:4")``
    example : tensor, optional
        One model input, to benchmark 1x1 convolutions at their real spatial size (else 8x8)
        and to confirm the choices on the whole model: a layer chosen by its own
        benchmark stays dense unless the model with it runs ``min_speedup`` times as
        fast as without it, at every batch size (:mod:`.sparse_confirm`).
    fuse : bool
        When 1 is among ``batch_sizes``: run each run of converted layers and ``nn.ReLU``
        in an ``nn.Sequential`` as one compiled call at batch 1 (:mod:`.sparse_chain`;
        the run's first module becomes a ``SparseChain``, the others ``nn.Identity``).
        The same arithmetic in fewer calls; the whole-model check times the model fused.
        The fused layers' buffers then sit under the chain (``0.steps.2.weight`` for
        ``2.weight``): ``fuse=False`` keeps every state-dict key of the converted model.

    Returns
    -------
    SparseInferenceReport
        Per layer: shape, sparsity, decision, timings; notes on skipped layouts.

    Notes
    -----
    Every layer is measured before anything changes (the whole-model check
    swaps modules and puts the originals back whatever happens), so a failure
    leaves the model as it was. The sparse product sums in another order than the dense
    one: outputs agree to float rounding, not bit for bit.
    """
    min_speedup, batch_sizes, repeats, layouts = _check_args(
        model, min_speedup, batch_sizes, repeats, layouts, example, fuse)
    shapes = _spatial_sizes(model, example)
    if 1 in batch_sizes:
        warm_up()
    decisions, swaps = [], []
    for name, m in model.named_modules():
        if not (isinstance(m, nn.Linear) or _is_1x1(m)) or not name:
            continue
        if not bool((_effective_weight(m) == 0).any()):
            continue
        d, new = _decide(name, m, min_speedup, batch_sizes, repeats, layouts, shapes.get(name))
        decisions.append(d)
        if new is not None:
            swaps.append((name, new.to(m.weight.device).train(m.training)))
    modules, fuse = dict(model.named_modules()), fuse and 1 in batch_sizes
    if example is not None and swaps and min_speedup > 0:
        swaps = confirm(model, swaps, {n: modules[n] for n, _ in swaps}, decisions, example, batch_sizes,
                        repeats, min_speedup, fuse)
    install_modules(model, dict(swaps))  # nothing here can fail: plain attribute assignments
    try:
        runs = fusable_runs(model) if fuse else []
        fused = fused_modules(model, runs)
    except BaseException:
        install_modules(model, {n: modules[n] for n, _ in swaps})
        raise
    install_modules(model, fused)
    notes = [n for d in decisions for n in d.notes]
    notes += [f"fused for batch 1: {', '.join(run)}" for run in runs]
    if not decisions:
        notes.append("no Linear or 1x1 Conv2d layer has zero weights: nothing to convert")
    return SparseInferenceReport(decisions, notes, runs)
