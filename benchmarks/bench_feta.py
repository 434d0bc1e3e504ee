"""DC programming (``feta``) vs Net-Trim and magnitude pruning + refit on layer 1
of the reference MNIST network (784 -> 300, post-ReLU targets, 4,000 samples).

For each target sparsity (default 90 % and 95 %) every method prunes the layer
to that sparsity; the table reports the post-ReLU relative reconstruction
error ``||relu(X W + b) - Y||_F / ||Y||_F``, the median wall time over
``--repeats`` runs, and two ratios measured in the same run: the error over the
best baseline's error (``nettrim`` and magnitude + refit) and the time over
``nettrim``'s time. The goal is err ratio <= 1 and time ratio <= 0.1.

Baselines: ``nettrim(X, Y, sparsity=s)`` and ``magnitude(W, sparsity=s,
refit=True)`` with the least-squares refit on the layer's pre-activation
outputs ``X W + b`` (the usual "prune + debias"). ``iht`` on the same
pre-activation targets is shown as a further (not goal) peer. ``feta`` starts
from the trained weights (``W0, b0``) with its default sparsity path, and
once with a longer support search (3 x 300 hard-thresholding steps). All methods run with ``--threads`` BLAS threads.

    python benchmarks/bench_feta.py [--samples 4000] [--sparsity 0.9 0.95] [--repeats 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.examples.mnist import layer_problem
from layertrim.solvers import ConvergenceWarning, feta, iht, magnitude, nettrim, warmup
from _timing import median_time


GOAL_PEERS = ("nettrim", "magnitude+refit")


def post_relu_error(X, Y, W, b):
    return float(np.linalg.norm(np.maximum(X @ W + b, 0.0) - Y) / np.linalg.norm(Y))



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    X, Y, W, b = layer_problem(0, n_samples=args.samples, post_relu=True)
    Ypre = X @ W + b
    warmup()
    methods = {
        "nettrim": lambda s: nettrim(X, Y, sparsity=s),
        "magnitude+refit": lambda s: magnitude(W, sparsity=s, X=X, Y=Ypre, refit=True, b=b),
        "iht (pre-act.)": lambda s: iht(X, Ypre, sparsity=s, W0=W),
        "feta": lambda s: feta(X, Y, sparsity=s, W0=W, b0=b),
        "feta (3x300 iht)": lambda s: feta(X, Y, sparsity=s, W0=W, b0=b, support_iter=3, iht_iter=300),
    }
    rows = []
    with limit_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for s in args.sparsity:
            for name, fn in methods.items():
                t, res = median_time(lambda: fn(s), args.repeats)
                rows.append((name, s, float(np.mean(res.W == 0)), post_relu_error(X, Y, res.W, res.b), t))
                extra = f", {res.info['matmuls']:.0f} products of the size of X W" if "matmuls" in res.info else ""
                print(f"  done {name} at {s:.2f} in {t:.1f}s{extra}", flush=True)

    print(f"\nlayer 1 of the reference MNIST MLP, {X.shape[0]} samples, {args.threads} thread(s), "
          f"median of {args.repeats} run(s)")
    head = f"{'method':<18}{'target':>8}{'achieved':>10}{'rel. error':>12}{'time [s]':>10}{'err ratio':>11}{'time ratio':>12}"
    print(head)
    print("-" * len(head))
    for s in args.sparsity:
        group = [r for r in rows if r[1] == s]
        base_err = min(r[3] for r in group if r[0] in GOAL_PEERS)
        nt_time = next(r[4] for r in group if r[0] == "nettrim")
        for name, _, achieved, err, t in group:
            print(f"{name:<18}{s:>8.2f}{achieved:>10.4f}{err:>12.4f}{t:>10.2f}{err / base_err:>11.3f}{t / nt_time:>12.3f}")
    print("err ratio: error / best goal-peer error (nettrim, magnitude+refit); time ratio: time / nettrim time")
    for s in args.sparsity:
        group = {r[0]: r for r in rows if r[1] == s}
        nt, mr, ft = group["nettrim"], group["magnitude+refit"], group["feta"]
        ok = ft[3] <= nt[3] and ft[3] <= mr[3] and ft[4] <= 0.1 * nt[4]
        print(f"goal at {s:.2f}: feta error {ft[3]:.4f} <= nettrim {nt[3]:.4f} and magnitude+refit {mr[3]:.4f}, "
              f"time {ft[4]:.1f}s <= nettrim/10 = {nt[4] / 10:.1f}s: {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
