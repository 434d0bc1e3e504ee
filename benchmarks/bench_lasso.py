"""Lasso on a real layer: layertrim vs scikit-learn, skglm and cvxpy.

Problem: layer 1 of the reference MNIST network (784 inputs -> 300
pre-activations, 4,000 samples), ``lam = 0.05 lam_max``, intercept fitted,
target relative duality gap 1e-6, all 300 outputs. Every process runs with
one thread (BLAS, torch, Numba's kernels are serial).

Each peer's tolerance is calibrated to reach the same relative gap (its own
stopping rule is not a relative gap), and every solver's achieved gap is then
measured by one common function, :func:`common_gap`, from its ``(W, b)``.
The fast solvers run round-robin and report medians; cvxpy (Clarabel) solves
the first ``--cvxpy-outputs`` outputs in one problem and its time is scaled
to 300 outputs (the outputs are independent problems).

Run: ``.venv/bin/python benchmarks/bench_lasso.py [--repeats 5] [--cvxpy-outputs 3]``
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _timing import median_time

TARGET = 1e-6
LAM_FRACTION = 0.05


def common_gap(X, Y, W, b, lam):
    """Relative duality gap of the lasso at ``(W, b)``, the same for every solver.

    Primal: ``(1/2P) ||X W + 1 b^T - Y||^2 + lam ||W||_1`` with the solver's own
    ``b``. Dual point: the centered residual ``Rc`` (so that ``1^T Theta = 0``,
    the intercept's dual constraint), scaled per output by
    ``alpha_m = clip(<Y_m, Rc_m> / ||Rc_m||^2, +-lam P / ||X^T Rc_m||_inf)``;
    ``D = (1/P) sum_m (alpha_m <Y_m, Rc_m> - alpha_m^2 ||Rc_m||^2 / 2)``.
    Returns ``(gap / primal, primal)``.
    """
    P = X.shape[0]
    R = Y - X @ W - b
    primal = float(np.sum(R * R) / (2 * P) + lam * np.abs(W).sum())
    Rc = R - R.mean(axis=0)
    yr = np.sum(Y * Rc, axis=0)
    rr = np.sum(Rc * Rc, axis=0)
    bound = lam * P / np.maximum(np.abs(X.T @ Rc).max(axis=0), 1e-300)
    alpha = np.clip(yr / np.maximum(rr, 1e-300), -bound, bound)
    dual = float(np.sum(alpha * yr - 0.5 * alpha**2 * rr) / P)
    return (primal - dual) / primal, primal


def calibrate(fit, X, Y, lam, tols):
    """First tolerance in ``tols`` (loosest first) whose solution reaches the target gap."""
    for tol in tols:
        W, b = fit(tol)
        if common_gap(X, Y, W, b, lam)[0] <= TARGET:
            return tol
    return tols[-1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cvxpy-outputs", type=int, default=3,
                        help="cvxpy solves this many outputs in one problem; its time is scaled to 300")
    parser.add_argument("--skip-skglm", action="store_true")
    return parser.parse_args()


def fast_rows(X, Y, stats, lam, repeats):
    """The fast solvers, run round-robin so that load changes hit them alike.

    Returns ``(rows, outs)``: rows ``(name, median time, W, b, note)`` and each
    solver's last output.
    """
    from layertrim.solvers import GramStats, lasso
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.linear_model import Lasso

    primal_ref = lasso(stats, lam=lam, tol=TARGET).objective
    yy = stats.quadratic().yy.sum()
    warnings.filterwarnings("ignore", category=SkConvergenceWarning)

    def sk_fit(tol, X=X, Y=Y, **kw):
        model = Lasso(alpha=lam, precompute=kw.pop("gram", True), tol=tol, max_iter=100_000, **kw).fit(X, Y)
        return model.coef_.T, model.intercept_

    # sklearn stops when gap_m <= tol ||y_m - mean||^2 per output (unnormalized);
    # summed over outputs that is a relative gap of tol * sum(yy) / primal
    tol0 = TARGET * primal_ref / yy
    tol_sk = calibrate(sk_fit, X, Y, lam, [tol0 * 10.0**-k for k in range(4)])
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    G = Xc.T @ Xc

    def sk_gram():
        W, _ = sk_fit(tol_sk, X=Xc, Y=Yc, gram=G, fit_intercept=False)
        return W, Y.mean(0) - X.mean(0) @ W

    def ours(data):
        res = lasso(*data, lam=lam, tol=TARGET)
        return res.W, res.b

    fast = {
        "layertrim lasso (cd), incl. Gram": lambda: ours((X, Y)),
        "layertrim lasso (cd), Gram given": lambda: ours((stats,)),
        "layertrim GramStats.from_arrays": lambda: (GramStats.from_arrays(X, Y), None),
        "sklearn Lasso(precompute=True)": lambda: sk_fit(tol_sk),
        "sklearn Lasso, Gram given": sk_gram,
    }
    notes = {
        "layertrim GramStats.from_arrays": "X^T X, X^T Y, ||Y||^2 (centered)",
        "sklearn Lasso(precompute=True)": f"tol={tol_sk:.1e}",
        "sklearn Lasso, Gram given": "centered data, Gram precomputed",
    }
    times = {name: [] for name in fast}
    outs = {}
    for _ in range(repeats):
        for name, fn in fast.items():
            start = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - start)
    rows = []
    for name in fast:
        W, b = outs[name] if name != "layertrim GramStats.from_arrays" else (None, None)
        rows.append((name, float(np.median(times[name])), W, b, notes.get(name, "")))
    return rows, outs


def skglm_row(X, Y, lam):
    """skglm's Lasso in a loop over the outputs, its tolerance calibrated on 10 of them."""
    from skglm import Lasso as SkglmLasso

    N, M = X.shape[1], Y.shape[1]

    def skglm_fit(tol, cols=range(M)):
        W = np.zeros((N, M))
        b = np.zeros(M)
        for m in cols:
            model = SkglmLasso(alpha=lam, tol=tol, fit_intercept=True).fit(X, Y[:, m])
            W[:, m], b[m] = model.coef_, model.intercept_
        return W, b

    # skglm stops on the largest KKT violation: calibrate it on 10 outputs
    sub = list(range(0, M, 30))
    for tol_skglm in lam * 10.0 ** -np.arange(3.0, 9.0):
        W, b = skglm_fit(tol_skglm, sub)
        if common_gap(X, Y[:, sub], W[:, sub], b[sub], lam)[0] <= TARGET:
            break
    t, (W, b) = median_time(lambda: skglm_fit(tol_skglm), 1)
    return ("skglm Lasso, loop over outputs", t, W, b, f"tol={tol_skglm:.1e}")


def cvxpy_reference(X, Y, lam, k, ours):
    """cvxpy + Clarabel on the first ``k`` outputs in one problem: ``(time scaled to all
    outputs, relative gap, objective, objective of ``ours = (W, b)`` on those outputs)``."""
    import cvxpy as cp

    from layertrim.solvers.reference._cvxpy import solve as cvx_solve

    P, N = X.shape
    M = Y.shape[1]
    Wv, bv = cp.Variable((N, k)), cp.Variable(k)
    fit = X @ Wv + np.ones((P, 1)) @ cp.reshape(bv, (1, k), order="C") - Y[:, :k]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(fit) / (2 * P) + lam * cp.sum(cp.abs(Wv))))
    start = time.perf_counter()
    cvx_solve(prob, "clarabel", tol=1e-8)
    t_cvx = (time.perf_counter() - start) * M / k
    gap_k, obj_k = common_gap(X, Y[:, :k], Wv.value, bv.value, lam)
    W_ours, b_ours = ours
    ours_k = common_gap(X, Y[:, :k], W_ours[:, :k], b_ours[:k], lam)[1]
    return t_cvx, gap_k, obj_k, ours_k


def print_report(X, Y, lam, rows, cvx, args):
    (P, N), M, k = X.shape, Y.shape[1], args.cvxpy_outputs
    t_cvx, gap_k, obj_k, ours_k = cvx
    print(f"\nLasso, MNIST layer 1: P={P} samples, N={N} inputs, M={M} outputs, lam={lam:.4g} "
          f"(= {LAM_FRACTION} lam_max), target relative gap {TARGET:g}; 1 thread everywhere")
    print(f"medians over {args.repeats} round-robin repeats (fista, skglm and cvxpy: one run)\n")
    best_peer = min(t for name, t, *_ in rows if name.startswith(("sklearn Lasso(", "skglm")))
    head = f"{'solver':38s} {'time [s]':>9s} {'vs fastest peer':>15s} {'rel. gap':>9s} {'objective':>14s}  note"
    print(head)
    print("-" * len(head))
    for name, t, W, b, note in rows:
        if W is None:
            print(f"{name:38s} {t:9.3f} {'':>15s} {'':>9s} {'':>14s}  {note}")
            continue
        g, obj = common_gap(X, Y, W, b, lam)
        print(f"{name:38s} {t:9.3f} {best_peer / t:14.2f}x {g:9.1e} {obj:14.8f}  {note}")
    print(f"{'cvxpy + Clarabel (' + str(k) + ' of ' + str(M) + ' outputs)':38s} {t_cvx:9.1f} "
          f"{best_peer / t_cvx:14.3f}x {gap_k:9.1e} {obj_k:14.8f}  time x {M}/{k}; layertrim's objective "
          f"on these outputs {ours_k:.8f}")
    t_ours = {name: t for name, t, *_ in rows}
    for name in ("layertrim lasso (cd), incl. Gram", "layertrim lasso (cd), Gram given"):
        print(f"{name}: {best_peer / t_ours[name]:.2f}x faster than the fastest peer, "
              f"{t_cvx / t_ours[name]:.0f}x faster than cvxpy")
    print("'vs fastest peer': time of the fastest of sklearn Lasso(precompute=True) and skglm over "
          "the row's time (> 1: faster).")


def main():
    args = parse_args()
    from layertrim.bindings.torch.examples.mnist import layer_problem
    from layertrim.bindings.torch.threads import limit_threads
    from layertrim.solvers import GramStats, lam_max, lasso, warmup

    with limit_threads(1):
        warmup()
        X, Y, _, _ = layer_problem(0)
        lam = LAM_FRACTION * lam_max(X, Y)
        stats = GramStats.from_arrays(X, Y)
        rows, outs = fast_rows(X, Y, stats, lam, args.repeats)
        t, res_f = median_time(lambda: lasso(stats, lam=lam, tol=TARGET, solver="fista"), 1)
        rows.append(("layertrim lasso (fista), Gram given", t, res_f.W, res_f.b, f"{res_f.iterations} it."))
        if not args.skip_skglm:
            rows.append(skglm_row(X, Y, lam))
        cvx = cvxpy_reference(X, Y, lam, args.cvxpy_outputs, outs["layertrim lasso (cd), Gram given"])
    print_report(X, Y, lam, rows, cvx, args)

if __name__ == "__main__":
    main()
