"""Prune the reference 784-300-100-10 MNIST network with every method.

Prints test accuracy at 90%, 95% and 98% overall weight sparsity, without
fine-tuning and after one epoch of masked fine-tuning, plus the pruning time
of the whole network (median over repeats), for

- magnitude (no refit) and magnitude + least-squares refit,
- iht, lasso (l1 + refit), nettrim (ReLU-aware, cascade), feta (DC, cascade),

all in the cascade scheme (the row-based nettrim and feta on a uniform sample of
2,000 of the 4,000 calibration images' rows) with the overall sparsity spread over the layers by
the Erdős–Rényi-kernel rule (small layers denser; the split is printed), and
magnitude with uniform per-layer sparsity for comparison with the published
uniform-sparsity references.

Usage: ``python benchmarks/bench_prune_mlp.py [--repeats 1] [--sparsities 0.9 0.95 0.98] [--methods ...]``
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
    "magnitude (uniform)": dict(method="magnitude", refit=False, uniform=True),
    "magnitude": dict(method="magnitude", refit=False),
    "magnitude+refit": dict(method="magnitude"),
    "iht": dict(method="iht"),
    "lasso": dict(method="lasso"),
    "nettrim": dict(method="nettrim", max_rows=2000, tol=1e-3),
    "feta": dict(method="feta", max_rows=2000),
}
#: published uniform-sparsity references on a network of this shape (93.4% dense), no fine-tuning
REFERENCES = {"SparseGPT": (86.6, 37.8), "magnitude": (50.7, 22.4), "magnitude+LS refit": (70.8, 33.3),
              "Wanda": (45.1, 29.7)}


def run(args):
    X_train, y_train, X_test, y_test = load_mnist(0)
    base = trained_mlp(0)
    calib = [torch.as_tensor(X_train[i : i + 500]) for i in range(0, len(X_train), 500)]
    Xt, yt = torch.as_tensor(X_train), torch.as_tensor(y_train)
    train_loader = [(Xt[i : i + 64], yt[i : i + 64]) for i in range(0, len(yt), 64)]
    dense_acc = accuracy(base, X_test, y_test)
    print(f"dense test accuracy: {100 * dense_acc:.2f}%   (torch threads: {torch.get_num_threads()})")
    rows = []
    for s in args.sparsities:
        split = erk_sparsity(base, s)
        print(f"ERK split at {s:.0%}: " + ", ".join(f"layer {n}: {v:.3f}" for n, v in split.items()))
        for label, cfg in METHODS.items():
            if args.methods and label not in args.methods:
                continue
            cfg = dict(cfg)
            per_layer = s if cfg.pop("uniform", False) else split
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
            rows.append((s, label, sparsity(model).overall, acc0, acc1, statistics.median(times),
                         "/".join(r.status[:3] for r in report.layers)))
            print(f"  {label:<20} overall {rows[-1][2]:.4f}  acc {100 * acc0:6.2f}%  "
                  f"ft {100 * acc1:6.2f}%  time {rows[-1][5]:6.2f}s", flush=True)
    print()
    head = f"{'sparsity':>8}  {'method':<20}  {'achieved':>8}  {'acc':>7}  {'Δ dense':>7}  {'acc ft1':>7}  {'time[s]':>7}  status"
    print(head)
    print("-" * len(head))
    for s, label, achieved, acc0, acc1, t, st in rows:
        print(f"{s:>8.0%}  {label:<20}  {achieved:>8.4f}  {100 * acc0:>7.2f}  {100 * (acc0 - dense_acc):>+7.2f}  "
              f"{100 * acc1:>7.2f}  {t:>7.2f}  {st}")
    print(f"\ndense: {100 * dense_acc:.2f}%. 'acc' = no fine-tuning, 'acc ft1' = after one epoch of masked "
          "fine-tuning (Adam, lr 1e-3). All methods but 'magnitude (uniform)' spread the overall "
          "sparsity unevenly over layers (ERK rule).")
    print("references (uniform per-layer sparsity, no fine-tuning, 93.4% dense) at 90% / 95%: "
          + "; ".join(f"{k} {a}% / {b}%" for k, a, b in ((k, *v) for k, v in REFERENCES.items())))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="subset of methods (default: all)")
    args = parser.parse_args()
    with limit_threads(args.threads):
        run(args)


if __name__ == "__main__":
    main()
