"""Where is the speedup: dense vs structured-pruned vs unstructured-sparse inference on CPU.

For the reference MNIST MLP, ResNet18 and MobileNetV2 (torchvision's layer
structure, random init with BatchNorm statistics recalibrated, 32x32 inputs)
and a Llama-style MLP block (gate/up/down, 512 -> 1376): latency at batch 1
and 64 (median of repeats, every variant of a model timed in turn within each
repeat, fixed threads), file size (``torch.save`` of the
state dict; ``save_sparse`` for the unstructured model), and quality before
any fine-tuning (test accuracy for the MLP, else relative output error on
held-out inputs, never the calibration ones). Structured rows remove 50% of
the FLOPs with one plan per model; layertrim's lsq choice + consumer refit
(the ridges chosen on held-out calibration samples, and the fixed
``ridge=1e-3`` of earlier versions) and Torch-Pruning's magnitude and Taylor
importance share that plan (same channel counts, same FLOPs) and the same
calibration inputs.
Unstructured rows: 95% magnitude pruning of every Linear / 1x1 conv
(the output layer kept dense), then :func:`to_sparse` for the batch size
served (``@1``: layers converted where faster at batch 1; ``@64``: at batch 64;
``+fused``: runs of converted layers and ReLUs run as one compiled call at batch 1).

Usage: ``python benchmarks/bench_inference.py [--repeats 30] [--threads 2] [--models mlp resnet18 ...]``
"""
from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _vision_models import MobileNetV2, ResNet18  # noqa: E402

from layertrim.bindings.torch import make_permanent, save_sparse  # noqa: E402
from layertrim.bindings.torch.examples.mnist import load_mnist, trained_mlp  # noqa: E402
from layertrim.bindings.torch.sparse_inference import to_sparse  # noqa: E402
from layertrim.bindings.torch.sparse_linear import SparseLinear  # noqa: E402
from layertrim.bindings.torch.structured import prune_structured  # noqa: E402


class LlamaMLP(nn.Module):
    def __init__(self, d=512, h=1376):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


def latencies(models, x, repeats, calls):
    """Median milliseconds per forward of each model, timed round-robin.

    Each repeat times every model once (``calls`` forwards in a row, after a
    warm-up), in turn, so that a slow phase of the machine hits every model
    alike and the ratios stay meaningful where the absolute times drift.
    """
    times = [[] for _ in models]
    with torch.no_grad():
        for m in models:
            for _ in range(3):
                m(x)
        for _ in range(repeats):
            for t, m in zip(times, models):
                t0 = time.perf_counter()
                for _ in range(calls):
                    m(x)
                t.append((time.perf_counter() - t0) / calls)
    return [statistics.median(t) * 1e3 for t in times]


def size_kb(model, sparse=False):
    if any(isinstance(m, SparseLinear) for m in model.modules()):
        return float("nan")  # the same weights as the masked row: see its save_sparse size
    buf = io.BytesIO()
    save_sparse(model, buf) if sparse else torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 1024


def recalibrate_bn(model, x):
    """Random-init BatchNorm statistics from data, so that activations are neither dead nor exploding."""
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        model(x)
    return model.eval()


def unstructured(model, sparsity):
    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)
              or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)]
    for m in layers[:-1] if isinstance(layers[-1], nn.Linear) else layers:
        torch_prune.l1_unstructured(m, "weight", amount=sparsity)
    return make_permanent(model)


MODELS = ("mlp", "resnet18", "mobilenet_v2", "llama_mlp")
CASE_NAMES = ("MLP 784-300-100-10", "ResNet18 32x32", "MobileNetV2 32x32", "Llama MLP 512-1376")


def cases(gen):
    X_train, _, X_test, y_test = load_mnist()
    X_train, X_test = torch.from_numpy(X_train), torch.from_numpy(X_test)
    yield ("MLP 784-300-100-10", trained_mlp(0).eval(), X_train[:2000], X_test, torch.from_numpy(y_test),
           "neurons", X_test[:1], X_test[:64])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = [("ResNet18 32x32", ResNet18()), ("MobileNetV2 32x32", MobileNetV2()), ("Llama MLP 512-1376", LlamaMLP())]
    for name, net in nets:
        shape = (512,) if "Llama" in name else (3, 32, 32)
        calib, held = torch.randn(1024, *shape, generator=gen), torch.randn(256, *shape, generator=gen)
        if "Llama" not in name:
            recalibrate_bn(net, calib)
        yield name, net.eval(), calib, held, None, ("neurons" if "Llama" in name else "channels"), held[:1], held[:64]


def quality(model, dense, x, y):
    with torch.no_grad():
        out = model(x)
        if y is not None:
            return f"acc {float((out.argmax(1) == y).float().mean()):.4f}"
        ref = dense(x)
        return f"err {float((out - ref).norm() / ref.norm()):.4f}"


def _tally(names):
    counts = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(f"{n} x{c}" for n, c in sorted(counts.items())) or "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flops", type=float, default=0.5)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    head = f"{'model':<20}{'variant':<28}{'FLOPs -%':>9}{'quality':>13}{'b=1 ms':>9}{'b=64 ms':>9}{'x b=1':>7}{'x b=64':>7}{'file KB':>9}"
    print(f"CPU, {args.threads} threads, median of {args.repeats}; quality before fine-tuning "
          f"(acc: MNIST test accuracy; err: relative output error on held-out inputs)")
    print(head + "\n" + "-" * len(head))
    for name, dense, calib, held, labels, unit, x1, x64 in cases(gen):
        if MODELS[CASE_NAMES.index(name)] not in args.models:
            continue
        rows = [("dense", dense, 0.0, False)]
        t0 = time.perf_counter()
        ours = prune_structured(dense, calib, target=args.flops, unit=unit, method="lsq", ridge="auto")
        spent = time.perf_counter() - t0
        plan = {g.root: 1 - g.keep / g.n for g in ours.groups if g.keep < g.n}
        rows.append((f"structured lsq+refit ({spent:.0f}s)", ours.model, ours.flops_removed, False))
        fixed = prune_structured(dense, calib, target=plan, unit=unit, method="lsq", ridge=1e-3)
        rows.append(("structured lsq ridge=1e-3", fixed.model, fixed.flops_removed, False))
        for method in ("magnitude", "taylor"):
            base = prune_structured(dense, calib, target=plan, unit=unit, method=method)
            rows.append((f"structured TP {method}", base.model, base.flops_removed, False))
        masked = unstructured(dense, 0.95)
        rows.append(("unstructured 95% dense", masked, 0.0, True))
        for b, x in ((1, x1), (64, x64)):  # converted for the batch size it will serve
            sparse = copy.deepcopy(masked)
            report = to_sparse(sparse, repeats=15, batch_sizes=(b,), example=x1)
            chosen = sum(d.decision != "dense" for d in report.layers)
            fused = "+fused" if report.fused else ""
            rows.append((f"unstr. 95% to_sparse@{b} {chosen}/{len(report.layers)}{fused}", sparse, 0.0, True))
        models = [r[1] for r in rows]
        t1 = latencies(models, x1, args.repeats, calls=20)
        t64 = latencies(models, x64, args.repeats, calls=2)
        for (variant, model, removed, sparse_file), a, c in zip(rows, t1, t64):
            q = quality(model, dense, held, labels)
            print(f"{name:<20}{variant:<28}{removed:>9.1%}{q:>13}{a:>9.3f}{c:>9.3f}{t1[0] / a:>7.2f}{t64[0] / c:>7.2f}"
                  f"{size_kb(model, sparse_file):>9.0f}", flush=True)
        print(f"{name:<20}{'':<28}lsq choices: {_tally(g.choice for g in ours.groups if g.choice)}; "
              f"refit ridges: {_tally('none' if r is None else f'{r:g}' for r in ours.refit.values())}")
    print("x b=1, x b=64: dense latency / row latency (> 1: faster). FLOPs -%: multiply-accumulates "
          "of Conv2d/Linear removed (torch-pruning's counter). Unstructured file: save_sparse; others torch.save.")


if __name__ == "__main__":
    main()
