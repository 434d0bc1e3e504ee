"""Prune two MNIST MLPs with every method: the reference 784-300-100-10 network
and a wider 784-500-200-10 one trained from another seed (same data split).

Prints test accuracy at 90%, 95% and 98% weight sparsity, without
fine-tuning and after one epoch of masked fine-tuning, plus the pruning time
of the whole network (median over repeats), for magnitude (no refit),
magnitude + least-squares refit, the baselines wanda and sparsegpt, iht, l0,
lasso, feta, l0_relu (and nettrim, nettrim_rw on request), all in the
cascade scheme on the same 4,000 calibration images (feta, l0_relu,
nettrim and nettrim_rw on a uniform sample of 2,000 images' rows), under
two allocations: uniform (every layer at the target) and ERK (the overall
sparsity spread by the Erdős–Rényi-kernel rule; the split is printed). Rows
of one network and allocation are comparable with each other.

Usage: ``python benchmarks/bench_prune_mlp.py [--repeats 1] [--sparsities 0.9 0.95 0.98] [--methods ...]
[--allocations uniform erk] [--networks reference wide] [--no-fine-tune]``
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from layertrim.bindings.torch import fine_tune, limit_threads, prune, sparsity
from layertrim.bindings.torch.allocation import erk_sparsity
from layertrim.bindings.torch.examples.mnist import accuracy, cache_dir, load_mnist, mlp, trained_mlp
from layertrim.bindings.torch.training import train
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
    "l0_relu": dict(method="l0_relu", max_rows=2000),
    "nettrim": dict(method="nettrim", max_rows=2000, tol=1e-3),
    "nettrim_rw": dict(method="nettrim_rw", max_rows=2000, rounds=1, nettrim_options=dict(tol=1e-3)),
}
#: the default set: nettrim's sparsity mode takes minutes per run (``--methods nettrim nettrim_rw`` adds them)
DEFAULT = [m for m in METHODS if not m.startswith("nettrim")]
#: the second network: wider, initialized and shuffled with another seed, trained on the same 4,000 images
WIDE_SIZES, WIDE_SEED = (784, 500, 200, 10), 1


def wide_mlp(X_train, y_train, epochs: int = 20):
    """The 784-500-200-10 network (seed ``WIDE_SEED``), trained once and cached."""
    path = cache_dir() / f"mlp_{'-'.join(map(str, WIDE_SIZES))}_seed{WIDE_SEED}_ep{epochs}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(WIDE_SEED)
        model = mlp(WIDE_SIZES)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        train(model, X_train, y_train, epochs=epochs, seed=WIDE_SEED)
        torch.save(model.state_dict(), path)
    return model.eval()


def run(args):
    X_train, y_train, X_test, y_test = load_mnist(0)
    calib = [torch.as_tensor(X_train[i : i + 500]) for i in range(0, len(X_train), 500)]
    Xt, yt = torch.as_tensor(X_train), torch.as_tensor(y_train)
    train_loader = [(Xt[i : i + 64], yt[i : i + 64]) for i in range(0, len(yt), 64)]
    rows, dense = [], {}
    for net in args.networks:
        base = trained_mlp(0) if net == "reference" else wide_mlp(X_train, y_train)
        dense[net] = accuracy(base, X_test, y_test)
        print(f"{net}: dense test accuracy {100 * dense[net]:.2f}%   (torch threads: {torch.get_num_threads()})")
        for alloc, s in [(a, s) for a in args.allocations for s in args.sparsities]:
            rows += _prune_rows(args, net, base, alloc, s, calib, train_loader, X_test, y_test)
    print()
    head = (f"{'network':<9}  {'alloc':<7}  {'sparsity':>8}  {'method':<16}  {'achieved':>8}  {'acc':>7}  "
            f"{'Δ dense':>7}  {'acc ft1':>7}  {'time[s]':>7}  status")
    print(head)
    print("-" * len(head))
    for net, alloc, s, label, achieved, acc0, acc1, t, st in rows:
        ft = "      -" if acc1 is None else f"{100 * acc1:>7.2f}"
        print(f"{net:<9}  {alloc:<7}  {s:>8.0%}  {label:<16}  {achieved:>8.4f}  {100 * acc0:>7.2f}  "
              f"{100 * (acc0 - dense[net]):>+7.2f}  {ft}  {t:>7.2f}  {st}")
    print("\ndense: " + ", ".join(f"{n} {100 * a:.2f}%" for n, a in dense.items()) + ". 'acc' = no fine-tuning, "
          "'acc ft1' = after one epoch of masked fine-tuning (Adam, lr 1e-3). 'uniform': every layer at the target sparsity; 'erk': the overall "
          "sparsity spread by the Erdos-Renyi-kernel rule. Rows of one network: same calibration images.")


def _prune_rows(args, net, base, alloc, s, calib, train_loader, X_test, y_test):
    """Prune ``base`` with every method at one allocation and sparsity; one table row each."""
    split = erk_sparsity(base, s) if alloc == "erk" else s
    if alloc == "erk":
        print(f"ERK split at {s:.0%}: " + ", ".join(f"layer {n}: {v:.3f}" for n, v in split.items()))
    rows = []
    for label in args.methods:
        times, model, report = [], None, None
        try:
            for _ in range(args.repeats):
                model = copy.deepcopy(base)
                t0 = time.perf_counter()
                report = prune(model, calib, sparsity=split, scheme="cascade", progress=False, **METHODS[label])
                times.append(time.perf_counter() - t0)
        except LayerTrimError as exc:
            print(f"  {label:<20} failed: {exc}", flush=True)
            continue
        acc0, acc1 = accuracy(model, X_test, y_test), None
        if args.fine_tune:
            torch.manual_seed(0)
            fine_tune(model, train_loader, epochs=1, lr=1e-3)
            acc1 = accuracy(model, X_test, y_test)
        rows.append((net, alloc, s, label, sparsity(model).overall, acc0, acc1, statistics.median(times),
                     "/".join(r.status[:3] for r in report.layers)))
        ft = "" if acc1 is None else f"  ft {100 * acc1:6.2f}%"
        print(f"  {net:<9} {alloc:<7} {s:.0%} {label:<16} overall {rows[-1][4]:.4f}  acc {100 * acc0:6.2f}%{ft}  "
              f"time {rows[-1][7]:6.2f}s", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT,
                        help="methods (default: all but nettrim and nettrim_rw)")
    parser.add_argument("--allocations", nargs="+", choices=("uniform", "erk"), default=["uniform", "erk"])
    parser.add_argument("--networks", nargs="+", choices=("reference", "wide"), default=["reference", "wide"])
    parser.add_argument("--no-fine-tune", dest="fine_tune", action="store_false",
                        help="skip the one epoch of masked fine-tuning")
    args = parser.parse_args()
    with limit_threads(args.threads):
        run(args)


if __name__ == "__main__":
    main()
