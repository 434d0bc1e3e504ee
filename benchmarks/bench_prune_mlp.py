"""Prune the reference 784-300-100-10 MNIST network with every method.

Prints test accuracy at 90%, 95% and 98% weight sparsity, without
fine-tuning and after one epoch of masked fine-tuning, plus the pruning time
of the whole network (median over repeats), for magnitude (no refit),
magnitude + least-squares refit, the baselines wanda and sparsegpt, iht, l0,
lasso, feta (and nettrim on request), all in the cascade scheme on the same
4,000 calibration images (feta and nettrim on a uniform sample of 2,000
images' rows), under two allocations: uniform (every layer at the target)
and ERK (the overall sparsity spread by the Erdős–Rényi-kernel rule; the
split is printed). Rows of one allocation are comparable with each other.

Usage: ``python benchmarks/bench_prune_mlp.py [--repeats 1] [--sparsities 0.9 0.95 0.98] [--methods ...] [--allocations uniform erk]``
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from layertrim.bindings.torch import fine_tune, limit_threads, prune, sparsity
from layertrim.bindings.torch.allocation import erk_sparsity
from layertrim.bindings.torch.examples.mnist import accuracy, load_mnist, trained_mlp
from layertrim.solvers import LayerTrimError

METHODS = {
    "magnitude": dict(method="magnitude", refit=False),
    "magnitude+refit": dict(method="magnitude"),
    "wanda": dict(method="wanda"),
    "sparsegpt": dict(method="sparsegpt"),
    "iht": dict(method="iht"),
    "l0": dict(method="l0"),
    "lasso": dict(method="lasso"),
    "feta": dict(method="feta", max_rows=2000),
    "nettrim": dict(method="nettrim", max_rows=2000, tol=1e-3),
}
#: the default set: nettrim's sparsity mode takes minutes per run (``--methods nettrim`` adds it)
DEFAULT = [m for m in METHODS if m != "nettrim"]


def run(args):
    X_train, y_train, X_test, y_test = load_mnist(0)
    base = trained_mlp(0)
    calib = [torch.as_tensor(X_train[i : i + 500]) for i in range(0, len(X_train), 500)]
    Xt, yt = torch.as_tensor(X_train), torch.as_tensor(y_train)
    train_loader = [(Xt[i : i + 64], yt[i : i + 64]) for i in range(0, len(yt), 64)]
    dense_acc = accuracy(base, X_test, y_test)
    print(f"dense test accuracy: {100 * dense_acc:.2f}%   (torch threads: {torch.get_num_threads()})")
    rows = []
    for alloc, s in [(a, s) for a in args.allocations for s in args.sparsities]:
        split = erk_sparsity(base, s) if alloc == "erk" else s
        if alloc == "erk":
            print(f"ERK split at {s:.0%}: " + ", ".join(f"layer {n}: {v:.3f}" for n, v in split.items()))
        for label in args.methods:
            cfg, per_layer = dict(METHODS[label]), split
            times, model, report = [], None, None
            try:
                for _ in range(args.repeats):
                    model = copy.deepcopy(base)
                    t0 = time.perf_counter()
                    report = prune(model, calib, sparsity=per_layer, scheme="cascade", progress=False, **cfg)
                    times.append(time.perf_counter() - t0)
            except LayerTrimError as exc:
                print(f"  {label:<20} failed: {exc}", flush=True)
                continue
            acc0 = accuracy(model, X_test, y_test)
            torch.manual_seed(0)
            fine_tune(model, train_loader, epochs=1, lr=1e-3)
            acc1 = accuracy(model, X_test, y_test)
            rows.append((alloc, s, label, sparsity(model).overall, acc0, acc1, statistics.median(times),
                         "/".join(r.status[:3] for r in report.layers)))
            print(f"  {alloc:<7} {label:<16} overall {rows[-1][3]:.4f}  acc {100 * acc0:6.2f}%  "
                  f"ft {100 * acc1:6.2f}%  time {rows[-1][6]:6.2f}s", flush=True)
    print()
    head = f"{'alloc':<7}  {'sparsity':>8}  {'method':<16}  {'achieved':>8}  {'acc':>7}  {'Δ dense':>7}  {'acc ft1':>7}  {'time[s]':>7}  status"
    print(head)
    print("-" * len(head))
    for alloc, s, label, achieved, acc0, acc1, t, st in rows:
        print(f"{alloc:<7}  {s:>8.0%}  {label:<16}  {achieved:>8.4f}  {100 * acc0:>7.2f}  {100 * (acc0 - dense_acc):>+7.2f}  "
              f"{100 * acc1:>7.2f}  {t:>7.2f}  {st}")
    print(f"\ndense: {100 * dense_acc:.2f}%. 'acc' = no fine-tuning, 'acc ft1' = after one epoch of masked "
          "fine-tuning (Adam, lr 1e-3). 'uniform': every layer at the target sparsity; 'erk': the overall "
          "sparsity spread by the Erdos-Renyi-kernel rule. Every row: same network, same calibration images.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT,
                        help="methods (default: all but nettrim)")
    parser.add_argument("--allocations", nargs="+", choices=("uniform", "erk"), default=["uniform", "erk"])
    args = parser.parse_args()
    with limit_threads(args.threads):
        run(args)


if __name__ == "__main__":
    main()
