"""How the layer solvers scale with the layer size, against a flop-based lower bound.

Layers ``N x M`` (square ``M = N`` and rectangular ``M = N / 4``) with
``P = 2N`` correlated Gaussian calibration rows (AR(1) inputs,
``corr(x_i, x_j) = 0.8^|i - j|``), dense weights ``W0 ~ N(0, 1/N)`` and
targets ``Y = X W0 + noise``. For each method and sparsity (50%, 90%):
median time over repeats (3 when a run takes under 2 s, else 1), the peak
RSS of a fresh process doing it above its RSS after the imports (data
included: ``8 (P N + P M) + 8 N M`` bytes), the log-log fit of time
against ``N`` (the exponent), and the ratio to the lower bound
``(2 P N^2 + N^3 / 3) / rate`` (the Gram matmul plus one factorization at
the machine's measured float64 GEMM rate). Methods far above the bound are
profiled (cProfile) once. A GPU section times ``iht`` on CUDA tensors when
torch with CUDA is importable.

    .venv/bin/python benchmarks/bench_scaling.py [--max-n 4096] [--quick] [--threads 2]
        [--budget 900] [--profile-n 1024]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import math
import multiprocessing as mp
import pstats
import resource
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from layertrim.solvers import ConvergenceWarning, GramStats, iht, l0_admm, lasso, magnitude, sparsegpt
from _timing import median_time

METHODS = {
    "gram": lambda X, Y, W0, s: GramStats.from_arrays(X, Y),
    "iht": lambda X, Y, W0, s: iht(X, Y, sparsity=s, W0=W0),
    "l0": lambda X, Y, W0, s: l0_admm(X, Y, sparsity=s, W0=W0),
    "lasso": lambda X, Y, W0, s: lasso(X, Y, sparsity=s),
    "magnitude+refit": lambda X, Y, W0, s: magnitude(W0, sparsity=s, X=X, Y=Y, refit=True),
    "sparsegpt": lambda X, Y, W0, s: sparsegpt(X, Y, sparsity=s, W0=W0),
}
SPARSITIES = (0.5, 0.9)
#: methods far above the bound (this ratio) are profiled
PROFILE_RATIO = 10.0


def layer(N: int, M: int, seed: int = 0):
    """``(X, Y, W0)``: ``P = 2N`` AR(1) rows (unit variance, lag-one correlation 0.8), ``Y = X W0 + 0.1 noise``."""
    rng = np.random.default_rng(seed)
    P, rho = 2 * N, 0.8
    Z = rng.standard_normal((P, N))
    X = np.empty_like(Z)
    X[:, 0] = Z[:, 0]
    for j in range(1, N):
        X[:, j] = rho * X[:, j - 1] + math.sqrt(1 - rho * rho) * Z[:, j]
    W0 = rng.standard_normal((N, M)) / math.sqrt(N)
    return X, X @ W0 + 0.1 * rng.standard_normal((P, M)), W0


def gemm_rate(threads: int, n: int = 2048) -> float:
    """float64 GEMM flop rate (flop/s) of this machine at ``threads`` threads (best of 3)."""
    A = np.random.default_rng(1).standard_normal((n, n))
    with threadpool_limits(limits=threads):
        A @ A
        best = min(median_time(lambda: A @ A, 1)[0] for _ in range(3))
    return 2.0 * n**3 / best


def bound_seconds(N: int, rate: float) -> float:
    """``(2 P N^2 + N^3 / 3) / rate`` with ``P = 2N``."""
    return (2 * (2 * N) * N**2 + N**3 / 3) / rate


def _measure(args):
    """In a fresh process: ``(median seconds, repeats, peak RSS MiB)`` of one method on one layer;
    the peak is counted above the process's RSS after its imports (data included)."""
    name, N, M, s, threads = args
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    X, Y, W0 = layer(N, M)
    fn = METHODS[name]
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first, _ = median_time(lambda: fn(X, Y, W0, s), 1)
        repeats = 3 if first < 2.0 else 1
        t = first if repeats == 1 else median_time(lambda: fn(X, Y, W0, s), repeats)[0]
    return t, repeats, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024.0


def measure(name, N, M, s, threads):
    """:func:`_measure` in a new process (so that the peak RSS is this run's)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, ((name, N, M, s, threads),))


def fit_exponent(ns, ts):
    """Slope of ``log t`` against ``log N`` (least squares) over runs of at least 0.05 s; NaN if < 2."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts) if t >= 0.05]
    if len(pts) < 2:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def run_table(sizes, methods, shapes, threads, budget, rate):
    """Measure every (shape, method, sparsity, N); skip an N whose predicted time
    (the last one times (N / N_last)^3) exceeds ``budget`` seconds. Returns the rows."""
    rows = []
    for shape in shapes:
        for name in methods:
            for s in SPARSITIES if name != "gram" else (0.0,):
                last = None
                for N in sizes:
                    M = N if shape == "square" else N // 4
                    if last is not None and last[1] * (N / last[0]) ** 3 > budget:
                        print(f"  skip {shape} {name} s={s} N={N}: predicted {last[1] * (N / last[0]) ** 3:.0f} s")
                        continue
                    t, reps, rss = measure(name, N, M, s, threads)
                    last = (N, t)
                    ratio = t / bound_seconds(N, rate)
                    rows.append(dict(shape=shape, method=name, s=s, N=N, M=M, t=t, reps=reps, rss=rss, ratio=ratio))
                    print(f"  {shape:6s} {name:16s} s={s:.1f} N={N:5d} M={M:5d} {t:9.3f} s (x{reps}) "
                          f"{rss:8.0f} MiB  {ratio:7.1f} x bound", flush=True)
    return rows


def print_summary(rows, rate):
    """The table by method, with the fitted exponent and the ratio to the bound at the largest N."""
    print(f"\nGEMM rate {rate / 1e9:.1f} GFLOP/s; bound(N) = (2 P N^2 + N^3/3) / rate, P = 2N")
    keys = sorted({(r["shape"], r["method"], r["s"]) for r in rows}, key=lambda k: (k[0], list(METHODS).index(k[1]), k[2]))
    sizes = sorted({r["N"] for r in rows})
    print("| shape | method | sparsity | " + " | ".join(f"N={n}" for n in sizes) + " | exponent | ratio at max N |")
    print("|---" * (len(sizes) + 5) + "|")
    for key in keys:
        sel = {r["N"]: r for r in rows if (r["shape"], r["method"], r["s"]) == key}
        cells = [f"{sel[n]['t']:.3g} s / {sel[n]['rss']:.0f} MiB" if n in sel else "-" for n in sizes]
        ns = sorted(sel)
        k = fit_exponent(ns, [sel[n]["t"] for n in ns])
        top = sel[ns[-1]]
        print(f"| {key[0]} | {key[1]} | {key[2]:.0%} | " + " | ".join(cells)
              + f" | {k:.2f} | {top['ratio']:.1f} (N={top['N']}) |")


def profile(name, N, s, threads, lines=14):
    """Print where the time of one square run goes (cProfile, by internal time)."""
    X, Y, W0 = layer(N, N)
    prof = cProfile.Profile()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        prof.runcall(METHODS[name], X, Y, W0, s)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
    print(f"\n--- profile: {name} s={s} N=M={N} (by internal time) ---")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


def gpu_section(sizes, threads):
    """iht on CUDA tensors against the numpy run at the same sizes, or a line saying why not."""
    try:
        import torch
    except ImportError:
        print("\nGPU section not run: torch is not importable")
        return
    if not torch.cuda.is_available():
        print("\nGPU section not run: torch.cuda.is_available() is False")
        return
    print(f"\nGPU: iht (50%, square) on {torch.cuda.get_device_name()} vs numpy on {threads} CPU threads")
    for N in sizes:
        X, Y, W0 = layer(N, N)
        with threadpool_limits(limits=threads):
            t_cpu = median_time(lambda: iht(X, Y, sparsity=0.5, W0=W0), 1)[0]
        for dtype in (torch.float64, torch.float32):
            Xg, Yg, Wg = (torch.asarray(a, dtype=dtype, device="cuda") for a in (X, Y, W0))
            iht(Xg, Yg, sparsity=0.5, W0=Wg)  # warm-up (kernels, allocator)
            torch.cuda.synchronize()
            start = time.perf_counter()
            iht(Xg, Yg, sparsity=0.5, W0=Wg)
            torch.cuda.synchronize()
            t_gpu = time.perf_counter() - start
            print(f"  N={N:5d} {str(dtype):14s} cpu {t_cpu:8.2f} s  cuda {t_gpu:8.3f} s  speed-up {t_cpu / t_gpu:6.1f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="N up to 512, square only, no profile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=900.0, help="skip runs predicted longer (s)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--shapes", nargs="+", default=["square", "rect"], choices=["square", "rect"])
    ap.add_argument("--profile-n", type=int, default=1024)
    args = ap.parse_args()
    max_n = min(args.max_n, 512) if args.quick else args.max_n
    sizes = [n for n in (256, 512, 1024, 2048, 4096) if n <= max_n]
    shapes = ["square"] if args.quick else args.shapes
    rate = gemm_rate(args.threads)
    print(f"threads {args.threads}, sizes {sizes}, shapes {shapes}, GEMM {rate / 1e9:.1f} GFLOP/s")
    rows = run_table(sizes, args.methods, shapes, args.threads, args.budget, rate)
    print_summary(rows, rate)
    if not args.quick:
        far = sorted({(r["method"], r["s"]) for r in rows if r["ratio"] > PROFILE_RATIO and r["shape"] == "square"
                      and r["N"] == max(q["N"] for q in rows if q["method"] == r["method"])})
        for name, s in far:
            profile(name, min(args.profile_n, max_n), s, args.threads)
    gpu_section([n for n in sizes if n >= 1024] or sizes[-1:], args.threads)


if __name__ == "__main__":
    main()
