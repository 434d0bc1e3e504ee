"""Hard thresholding on the reference MNIST layer (784 x 300, 4,000 samples, pre-activations).

Compares, per pattern and sparsity: magnitude pruning with the trained bias,
magnitude + least-squares refit, Wanda-style scores |W_ij| ||x_i|| + refit, and
accelerated IHT started from magnitude + refit. Prints the relative
reconstruction error ||X W + b - Y||_F / ||Y||_F, its ratio to magnitude +
refit, and the median time over repeats (one thread for BLAS and torch).

    .venv/bin/python benchmarks/bench_iht.py [--repeats 3] [--max-iter 300]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.mnist import layer_problem
from layertrim.solvers import ConvergenceWarning, iht, magnitude

CASES = [("unstructured", 0.9), ("per_output", 0.9), ("unstructured", 0.5), ("2:4", None), ("4:8", None)]


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=300)
    args = parser.parse_args()

    X, Y, W, b = layer_problem(0)
    norm_y = np.linalg.norm(Y)
    wanda = np.abs(W) * np.linalg.norm(X, axis=0)[:, None]

    def rel_error(res):
        return float(np.linalg.norm(X @ res.W + res.b - Y) / norm_y)

    methods = {
        "magnitude": lambda p, s: magnitude(W, sparsity=s, pattern=p, X=X, Y=Y, b=b),
        "magnitude+refit": lambda p, s: magnitude(W, sparsity=s, pattern=p, X=X, Y=Y, refit=True),
        "wanda+refit": lambda p, s: magnitude(W, sparsity=s, pattern=p, scores=wanda, X=X, Y=Y, refit=True),
        "iht": lambda p, s: iht(X, Y, sparsity=s, pattern=p, W0=W, max_iter=args.max_iter),
    }
    rows, errors = [], {}
    with limit_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for pattern, sparsity in CASES:
            for name, fn in methods.items():
                res, t = timed(lambda: fn(pattern, sparsity), args.repeats)
                err = rel_error(res)
                errors[name, pattern, sparsity] = err
                rows.append((name, pattern, res.sparsity, err, t, res.iterations))
    print(f"MNIST layer 784x300, {X.shape[0]} samples, pre-activations; median of {args.repeats} runs, 1 thread")
    print(f"{'method':<16} {'pattern':<13} {'sparsity':>8} {'rel.err':>9} {'/mag+refit':>10} {'time[s]':>8} {'iters':>6}")
    for (name, pattern, s, err, t, its), (p, s_req) in zip(rows, [c for c in CASES for _ in methods]):
        ratio = err / errors["magnitude+refit", p, s_req]
        print(f"{name:<16} {pattern:<13} {s:>8.3f} {err:>9.4f} {ratio:>10.3f} {t:>8.3f} {its:>6}")
    gain = 1 - errors["iht", "unstructured", 0.9] / errors["magnitude+refit", "unstructured", 0.9]
    nm_ratio = errors["iht", "2:4", None] / errors["iht", "unstructured", 0.5]
    print(f"goal 1: iht at 90% unstructured is {100 * gain:.1f}% below magnitude+refit (goal >= 30%): "
          f"{'met' if gain >= 0.3 else 'NOT met'}")
    print(f"goal 2: iht 2:4 / iht unstructured 50% = {nm_ratio:.3f} (goal <= 1.10): "
          f"{'met' if nm_ratio <= 1.1 else 'NOT met'}; difference "
          f"{100 * (errors['iht', '2:4', None] - errors['iht', 'unstructured', 0.5]):.2f} points of rel. error")
    print("(sparsity counts exact zeros of W: a refit also zeroes weights of the 132 constant pixels)")


if __name__ == "__main__":
    main()
