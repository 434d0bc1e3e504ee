"""Net-Trim ADMM vs cvxpy on layer 1 of the reference MNIST network.

(a) 2,000 samples, first 100 output neurons, eps = 0.05: cvxpy + SCS (and
    Clarabel with --clarabel) against ``nettrim``: objective, violation, time.
(b) the full layer (4,000 samples, 300 neurons): ``nettrim`` time and peak
    memory, measured in a fresh subprocess.
(c) time per ADMM iteration vs the time of its four unavoidable GEMMs.

Every part runs with one BLAS / torch thread (``limit_threads(1)``;
the subprocess of (b) also sets OMP_NUM_THREADS=1), so peers compare fairly.

    python benchmarks/bench_nettrim.py [--quick] [--clarabel] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.mnist import layer_problem
from layertrim.solvers import nettrim, reference, warmup
from layertrim.solvers import nettrim_kernels as K
from layertrim.solvers.nettrim import _Problem

EPS = 0.05


def violation(X, Y, W, b, eps):
    """Relative ball excess and half-space violation of (W, b) in float64."""
    out = X @ W + b
    mask = Y > 0
    excess = max(np.linalg.norm(np.where(mask, out - Y, 0)) - eps * np.linalg.norm(Y), 0.0)
    half = max(float(np.max(np.where(mask, -np.inf, out))), 0.0)
    return max(excess, half) / np.linalg.norm(Y)


def median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def part_a(args):
    X, Y, _, _ = layer_problem(0, n_samples=2000, post_relu=True)
    Y = np.ascontiguousarray(Y[:, :100])
    rows = []
    t_nt, res = median_time(lambda: nettrim(X, Y, eps=EPS, tol=1e-4), args.repeats)
    nt_row = ("nettrim (float64)", res.objective, res.info["violation"] + res.info["halfspace_violation"], t_nt)
    t32, res32 = median_time(lambda: nettrim(X.astype(np.float32), Y.astype(np.float32), eps=EPS, tol=1e-4),
                             args.repeats)
    nt32_row = ("nettrim (float32)", res32.objective, violation(X, Y, res32.W.astype(float), res32.b.astype(float), EPS), t32)
    refs = []
    if not args.quick:
        t = time.perf_counter()
        W, b, obj = reference.nettrim(X, Y, EPS, solver="scs", tol=1e-6, max_iters=200000)
        refs.append(("cvxpy + SCS", obj, violation(X, Y, W, b, EPS), time.perf_counter() - t))
    if args.clarabel:
        t = time.perf_counter()
        W, b, obj = reference.nettrim(X, Y, EPS, solver="clarabel", tol=1e-8)
        refs.append(("cvxpy + Clarabel", obj, violation(X, Y, W, b, EPS), time.perf_counter() - t))
    rows = refs + [nt_row, nt32_row]
    best = refs[-1][1] if refs else None
    print(f"\n(a) layer 1, P=2000, N=784, M=100, eps={EPS} (iterations: float64 {res.iterations}, "
          f"float32 {res32.iterations}; status {res.status})")
    print(f"{'method':20s} {'||W||_1':>12s} {'rel.obj.gap':>12s} {'violation':>10s} {'time [s]':>9s} {'speed-up':>9s}")
    t_scs = refs[0][3] if refs else None
    for name, obj, viol, t in rows:
        gap = f"{abs(obj - best) / best:12.2e}" if best else f"{'-':>12s}"
        ratio = f"{t_scs / t:8.1f}x" if t_scs else f"{'-':>9s}"
        print(f"{name:20s} {obj:12.6g} {gap} {viol:10.2e} {t:9.3f} {ratio}")


_CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from threadpoolctl import threadpool_limits
from layertrim.solvers import nettrim, warmup
warmup()
data = np.load(sys.argv[1])
X, Y = data["X"].astype(sys.argv[2]), data["Y"].astype(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with threadpool_limits(1):
    tracemalloc.start()
    t = time.perf_counter()
    res = nettrim(X, Y, eps=0.05, tol=1e-4)
    t = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(time=t, peak=peak, rss=rss * 1024, base=base * 1024, it=res.iterations,
                      status=res.status, obj=res.objective, viol=max(res.info["violation"], res.info["halfspace_violation"]),
                      sparsity=res.sparsity)))
"""


def part_b(args):
    X, Y, _, _ = layer_problem(0, n_samples=4000, post_relu=True)
    print("\n(b) full layer 1, P=4000, N=784, M=300, eps=0.05 (fresh subprocess, 1 thread)")
    print(f"{'dtype':8s} {'time [s]':>9s} {'iters':>6s} {'status':>8s} {'||W||_1':>10s} {'violation':>10s} "
          f"{'sparsity':>9s} {'tracemalloc peak':>17s} {'max RSS':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.npz")
        np.savez(path, X=X, Y=Y)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for dtype in ("float64", "float32"):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", _CHILD, path, dtype], env=env,
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = sorted(runs, key=lambda d: d["time"])[len(runs) // 2]
            print(f"{dtype:8s} {r['time']:9.2f} {r['it']:6d} {r['status']:>8s} {r['obj']:10.5g} {r['viol']:10.2e} "
                  f"{r['sparsity']:9.3f} {r['peak'] / 2**20:13.0f} MiB {r['rss'] / 2**20:5.0f} MiB")


def part_c(args):
    X, Y, _, _ = layer_problem(0, n_samples=2000, post_relu=True)
    Y = np.ascontiguousarray(Y[:, :100])
    n_it = 50
    print(f"\n(c) per-iteration cost, P=2000, N=785 (with intercept), M=100, {n_it} iterations, median of {args.repeats}")
    print(f"{'dtype':8s} {'rank r':>7s} {'ADMM iter [ms]':>15s} {'4 GEMMs [ms]':>13s} {'ratio':>6s}")
    for dtype in (np.float64, np.float32):
        prob = _Problem(X.astype(dtype), Y.astype(dtype), relu=True, intercept=True, V=None, eps_mode="layer")
        eps_abs = prob.radii(EPS)
        Na, M, P, r = prob.X.shape[1], prob.M, prob.X.shape[0], prob.S.shape[0]

        def run_admm():
            W = np.zeros((Na, M), dtype)
            Z, U1 = np.zeros((P, M), dtype), np.zeros((P, M), dtype)
            Q, U2 = np.zeros((Na, M), dtype), np.zeros((Na, M), dtype)
            # check_every > n_it: plain iterations only, as in all but one of every ten
            K.admm(prob.Ur, prob.S, prob.Vr, prob.X, prob.Y, prob.V, prob.omega, eps_abs, K.LAYER, prob.N,
                   W, Z, Q, U1, U2, 1.0, prob.default_ratio, 1.6, 1e-12, n_it, n_it + 1, 0, 1e-4)

        A, B = np.ones((P, M), dtype), np.ones((Na, M), dtype)
        c, e, W, XW = np.empty((r, M), dtype), np.empty((r, M), dtype), np.empty((Na, M), dtype), np.empty((P, M), dtype)
        UrT, VrT = prob.Ur.T, prob.Vr.T

        def gemms():
            for _ in range(n_it):
                np.dot(UrT, A, out=c)
                np.dot(VrT, B, out=e)
                np.dot(prob.Vr, c, out=W)
                np.dot(prob.Ur, e, out=XW)

        t_admm, _ = median_time(run_admm, args.repeats)
        t_gemm, _ = median_time(gemms, args.repeats)
        print(f"{np.dtype(dtype).name:8s} {r:7d} {1e3 * t_admm / n_it:15.2f} {1e3 * t_gemm / n_it:13.2f} "
              f"{t_admm / t_gemm:6.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the cvxpy solves")
    parser.add_argument("--clarabel", action="store_true", help="also run cvxpy + Clarabel (about 3 minutes)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warmup()
    with limit_threads(1):
        part_a(args)
        part_b(args)
        part_c(args)


if __name__ == "__main__":
    main()
