"""The l0 ADMM solver against hard thresholding on the reference MNIST network (784-300-100-10).

(a) Layer 1 (784 -> 300, 4,000 samples, pre-activations), unstructured 90%, 95%
    and 98% sparsity: relative error ||X W + b - Y||_F / ||Y||_F, its ratio to
    magnitude + refit and to the published ALPS errors on this layer, and the
    median time over repeats, for magnitude + refit, iht, iht(swaps=True), l0.
(b) The whole network at uniform 90%, 95% and 98% per-layer sparsity, cascade
    scheme through ``prune(method=...)`` on the 4,000 training images: test
    accuracy without fine-tuning, its loss against the dense network, and the
    total pruning time, for the same methods.

One thread for BLAS and torch.

    .venv/bin/python benchmarks/bench_l0.py [--repeats 3] [--net-repeats 1] [--sparsities 0.9 0.95 0.98]
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch

from layertrim.bindings.torch import limit_threads, prune
from layertrim.bindings.torch.examples.mnist import accuracy, layer_problem, load_mnist, trained_mlp
from layertrim.solvers import ConvergenceWarning, iht, l0_admm, magnitude
from _timing import median_time

#: ALPS (Meng et al., NeurIPS 2024) on this layer: relative error at 90%, 95%, 98%
ALPS = {0.9: 0.090, 0.95: 0.156, 0.98: 0.288}
#: the goals: accuracy loss of the whole network (points), and its pruning time
ACC_LOSS_GOAL = {0.9: 0.5, 0.95: 2.5, 0.98: 12.0}
TIME_GOAL = 30.0

LAYER_METHODS = {
    "magnitude+refit": lambda X, Y, W, s: magnitude(W, sparsity=s, X=X, Y=Y, refit=True),
    "iht": lambda X, Y, W, s: iht(X, Y, sparsity=s, W0=W),
    "iht+swaps": lambda X, Y, W, s: iht(X, Y, sparsity=s, W0=W, swaps=True),
    "l0": lambda X, Y, W, s: l0_admm(X, Y, sparsity=s, W0=W),
}
NET_METHODS = {
    "magnitude+refit": dict(method="magnitude"),
    "iht": dict(method="iht"),
    "iht+swaps": dict(method="iht", swaps=True),
    "l0": dict(method="l0"),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each layer-1 solve (median time)")
    parser.add_argument("--net-repeats", type=int, default=1, help="repeats of each whole-network prune")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    return parser.parse_args()


def layer_table(args):
    X, Y, W, _ = layer_problem(0)
    norm_y = np.linalg.norm(Y)
    print(f"(a) MNIST layer 1: 784 -> 300, {X.shape[0]} samples, pre-activations, unstructured; "
          f"median of {args.repeats} runs, 1 thread")
    print(f"{'method':<16} {'sparsity':>8} {'rel.err':>8} {'/mag+refit':>10} {'/ALPS':>7} {'time[s]':>8} "
          f"{'iters':>6} {'status':>8}")
    errors = {}
    for s in args.sparsities:
        for name, fn in LAYER_METHODS.items():
            t, res = median_time(lambda: fn(X, Y, W, s), args.repeats)
            err = float(np.linalg.norm(X @ res.W + res.b - Y) / norm_y)
            errors[name, s] = err
            alps = f"{err / ALPS[s]:>7.3f}" if s in ALPS else f"{'-':>7}"
            print(f"{name:<16} {res.sparsity:>8.3f} {err:>8.4f} {err / errors['magnitude+refit', s]:>10.3f} "
                  f"{alps} {t:>8.2f} {res.iterations:>6} {res.status:>8}")
    return errors


def network_table(args):
    X_train, _, X_test, y_test = load_mnist(0)
    base = trained_mlp(0)
    calib = [torch.as_tensor(X_train[i : i + 500]) for i in range(0, len(X_train), 500)]
    dense = accuracy(base, X_test, y_test)
    print(f"\n(b) whole network 784-300-100-10, uniform per-layer sparsity, cascade, {len(X_train)} calibration "
          f"images, no fine-tuning; dense test accuracy {100 * dense:.2f}%")
    print(f"{'method':<16} {'sparsity':>8} {'acc[%]':>7} {'loss[pt]':>8} {'time[s]':>8}  layer errors           status")
    rows = {}
    for s in args.sparsities:
        for name, cfg in NET_METHODS.items():
            times = []
            for _ in range(max(args.net_repeats, 1)):
                model = copy.deepcopy(base)
                t0 = time.perf_counter()
                report = prune(model, calib, sparsity=s, scheme="cascade", progress=False, **cfg)
                times.append(time.perf_counter() - t0)
            acc = accuracy(model, X_test, y_test)
            rows[name, s] = (100 * (dense - acc), float(np.median(times)))
            errs = " ".join(f"{r.rel_error:.3f}" for r in report.layers)
            print(f"{name:<16} {s:>8.2f} {100 * acc:>7.2f} {100 * (dense - acc):>8.2f} {np.median(times):>8.2f}  "
                  f"{errs:<22} {'/'.join(r.status[:3] for r in report.layers)}")
    return rows


def print_goals(errors, rows, args):
    print("\ngoals for l0:")
    for s in args.sparsities:
        err, (loss, t) = errors["l0", s], rows["l0", s]
        parts = []
        if s in ALPS:
            parts.append(f"layer-1 error {err:.4f} vs ALPS {ALPS[s]:.3f}: {'met' if err <= ALPS[s] else 'NOT met'}")
        if s in ACC_LOSS_GOAL:
            goal = ACC_LOSS_GOAL[s]
            parts.append(f"accuracy loss {loss:.2f} pt (goal <= {goal:g}): {'met' if loss <= goal else 'NOT met'}")
        parts.append(f"network time {t:.1f} s (goal < {TIME_GOAL:g}): {'met' if t < TIME_GOAL else 'NOT met'}")
        ratio = err / errors["iht+swaps", s]
        print(f"  {s:.0%}: " + "; ".join(parts) + f"; l0 / iht+swaps layer-1 error = {ratio:.3f}")


def main():
    args = parse_args()
    with limit_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        errors = layer_table(args)
        rows = network_table(args)
    print_goals(errors, rows, args)


if __name__ == "__main__":
    main()
