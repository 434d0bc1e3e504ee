"""Net-Trim ADMM vs cvxpy on layer 1 of the reference MNIST network.

(a) 2,000 samples, first 100 output neurons, eps = 0.05: cvxpy + SCS (and
    Clarabel with --clarabel) against ``nettrim``: objective, violation, time.
    Goal: objective within 1e-3 of the cvxpy optimum, feasible to 1e-3,
    at least 30x faster than SCS. One thread for every solver.
(b) the full layer (4,000 samples, 300 neurons): ``nettrim`` time and peak
    memory in a fresh subprocess, with two BLAS threads (both cores of the
    reference machine). Goal: under 10 s and under 2 GiB.
(c) time per plain ADMM iteration vs the time of its two unavoidable
    products ``X @ W`` and ``X^T @ Z`` (one thread). Goal: ratio <= 1.5.

``nettrim`` runs at ``tol=1e-3``: relative primal and dual residuals and the
relative constraint violation of the returned sparse W all below 1e-3, which
is the accuracy the goal asks for (the objective lands far closer; see the
gap column).

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
from layertrim.bindings.torch.examples.mnist import layer_problem
from layertrim.solvers import nettrim, reference, warmup
from layertrim.solvers.nettrim import kernels as K
from layertrim.solvers.nettrim.solver import _Problem
from _timing import median_time

EPS = 0.05
TOL = 1e-3
FULL_THREADS = 2


def violation(X, Y, W, b, eps):
    """Relative ball excess and half-space violation of (W, b) in float64."""
    out = X @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
    mask = Y > 0
    excess = max(np.linalg.norm(np.where(mask, out - Y, 0)) - eps * np.linalg.norm(Y), 0.0)
    half = max(float(np.max(np.where(mask, -np.inf, out))), 0.0)
    return max(excess, half) / np.linalg.norm(Y)



def part_a(args):
    X, Y, _, _ = layer_problem(0, n_samples=2000, post_relu=True)
    Y = np.ascontiguousarray(Y[:, :100])
    refs = []
    if not args.quick:
        t = time.perf_counter()
        W, b, obj = reference.nettrim(X, Y, EPS, solver="scs", tol=1e-6, max_iters=200000)
        refs.append(("cvxpy + SCS", obj, violation(X, Y, W, b, EPS), time.perf_counter() - t, "-"))
    if args.clarabel:
        t = time.perf_counter()
        W, b, obj = reference.nettrim(X, Y, EPS, solver="clarabel", tol=1e-8)
        refs.append(("cvxpy + Clarabel", obj, violation(X, Y, W, b, EPS), time.perf_counter() - t, "-"))
    ours = []
    for dtype in (np.float64, np.float32):
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        t, res = median_time(lambda: nettrim(Xd, Yd, eps=EPS, tol=TOL), args.repeats)
        ours.append((f"nettrim ({np.dtype(dtype).name})", res.objective, violation(X, Y, res.W, res.b, EPS), t,
                     f"{res.iterations} {res.status}"))
    best = refs[-1][1] if refs else None
    print(f"\n(a) layer 1, P=2000, N=784, M=100, eps={EPS}, nettrim tol={TOL:g}, 1 thread, median of "
          f"{args.repeats} (cvxpy once)")
    print(f"{'method':20s} {'||W||_1':>12s} {'rel.obj.gap':>12s} {'violation':>10s} {'time [s]':>9s} "
          f"{'vs SCS':>8s}  iterations")
    t_scs = refs[0][3] if refs else None
    for name, obj, viol, t, its in refs + ours:
        gap = f"{abs(obj - best) / best:12.2e}" if best else f"{'-':>12s}"
        ratio = f"{t_scs / t:7.1f}x" if t_scs else f"{'-':>8s}"
        print(f"{name:20s} {obj:12.6g} {gap} {viol:10.2e} {t:9.3f} {ratio}  {its}")
    if refs:
        for name, obj, viol, t, _ in ours:
            ok = t_scs / t >= 30 and abs(obj - best) / best <= 1e-3 and viol <= 1e-3
            print(f"goal (a) {name}: >= 30x SCS, gap <= 1e-3, violation <= 1e-3: {'met' if ok else 'NOT met'} "
                  f"({t_scs / t:.1f}x, {abs(obj - best) / best:.1e}, {viol:.1e}; gap against {refs[-1][0]})")


_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
from threadpoolctl import threadpool_limits
from layertrim.solvers import nettrim, warmup
warmup()
data = np.load(sys.argv[1])
X, Y = data["X"].astype(sys.argv[2]), data["Y"].astype(sys.argv[2])
threads, tol = int(sys.argv[3]), float(sys.argv[4])
with threadpool_limits(threads):
    tracemalloc.start()
    t = time.perf_counter()
    res = nettrim(X, Y, eps=0.05, tol=tol)
    t = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's size at fork)
rss = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps(dict(time=t, peak=peak, rss=rss, it=res.iterations, status=res.status, obj=res.objective,
                      viol=max(res.info["violation"], res.info["halfspace_violation"]), sparsity=res.sparsity)))
"""


def part_b(args):
    X, Y, _, _ = layer_problem(0, n_samples=4000, post_relu=True)
    print(f"\n(b) full layer 1, P=4000, N=784, M=300, eps={EPS}, tol={TOL:g} "
          f"(fresh subprocess, {FULL_THREADS} BLAS threads, median of {args.repeats})")
    print(f"{'dtype':8s} {'time [s]':>9s} {'iters':>6s} {'status':>8s} {'||W||_1':>10s} {'violation':>10s} "
          f"{'sparsity':>9s} {'tracemalloc peak':>17s} {'peak RSS':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.npz")
        np.savez(path, X=X, Y=Y)
        n = str(FULL_THREADS)
        env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n, NUMBA_NUM_THREADS=n)
        for dtype in ("float64", "float32"):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", _CHILD, path, dtype, n, str(TOL)], env=env,
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = sorted(runs, key=lambda d: d["time"])[len(runs) // 2]
            print(f"{dtype:8s} {r['time']:9.2f} {r['it']:6d} {r['status']:>8s} {r['obj']:10.5g} {r['viol']:10.2e} "
                  f"{r['sparsity']:9.3f} {r['peak'] / 2**20:13.0f} MiB {r['rss'] / 2**20:5.0f} MiB")
            ok = r["time"] < 10 and r["rss"] < 2 * 2**30 and r["status"] == "optimal"
            print(f"goal (b) {dtype}: optimal in < 10 s with < 2 GiB peak (peak RSS of the whole process): "
                  f"{'met' if ok else 'NOT met'}")


def part_c(args):
    X, Y, _, _ = layer_problem(0, n_samples=2000, post_relu=True)
    Y = np.ascontiguousarray(Y[:, :100])
    n_it = 50
    prob64 = _Problem(X, Y, relu=True, intercept=True, V=None, eps_mode="layer")
    print(f"\n(c) per-iteration cost, P=2000, M=100, N={prob64.X.shape[1]} (the {prob64.n} inputs that are not "
          f"zero on every sample, plus the intercept), {n_it} plain iterations (no convergence check), "
          f"1 thread, median of {args.repeats}")
    print(f"{'dtype':8s} {'ADMM iter [ms]':>15s} {'X@W + X^T@Z [ms]':>17s} {'ratio':>6s} "
          f"{'+ inverse product [ms]':>23s} {'ratio':>6s}")
    for dtype in (np.float64, np.float32):
        prob = _Problem(X.astype(dtype), Y.astype(dtype), relu=True, intercept=True, V=None, eps_mode="layer")
        eps_abs = prob.radii(EPS)
        s = prob.default_ratio
        F = prob.inverse(s)
        Na, M, P = prob.X.shape[1], prob.M, prob.X.shape[0]
        W0, Z0, Q0, U10, U20, rho = prob.initial_state(None, eps_abs, F, s)

        def run_admm():
            W, Z, Q, U1, U2 = (a.copy() for a in (W0, Z0, Q0, U10, U20))
            K.admm(prob.X, F, prob.wide, prob.Y, prob.V, prob.omega, eps_abs, K.LAYER, prob.N,
                   W, Z, Q, U1, U2, rho, s, 1.8, 1e-12, 1e-12, n_it, n_it + 1, 0, 1e-4)

        rng = np.random.default_rng(0)
        Zr, Wr = rng.standard_normal((P, M)).astype(dtype), rng.standard_normal((Na, M)).astype(dtype)
        T, XW = np.empty((Na, M), dtype), np.empty((P, M), dtype)

        def products():
            for _ in range(n_it):
                np.dot(prob.X.T, Zr, out=T)
                np.dot(prob.X, Wr, out=XW)

        def inverse_product():
            for _ in range(n_it):
                np.dot(F, Wr, out=T)

        run_admm()  # the first call also allocates the kernel's buffers' pages
        t_admm, _ = median_time(run_admm, args.repeats)
        t_prod, _ = median_time(products, args.repeats)
        t_inv, _ = median_time(inverse_product, args.repeats)
        print(f"{np.dtype(dtype).name:8s} {1e3 * t_admm / n_it:15.2f} {1e3 * t_prod / n_it:17.2f} "
              f"{t_admm / t_prod:6.2f} {1e3 * (t_prod + t_inv) / n_it:23.2f} {t_admm / (t_prod + t_inv):6.2f}")
        print(f"goal (c) {np.dtype(dtype).name}: iteration <= 1.5 x (X@W + X^T@Z): "
              f"{'met' if t_admm <= 1.5 * t_prod else 'NOT met'}")


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
    with limit_threads(1):
        part_c(args)


if __name__ == "__main__":
    main()
