"""Net-Trim's sample complexity: the phase transition of exact recovery on planted layers.

Claim (Aghasi, Abdi, Romberg, "Fast convex pruning of deep neural networks"):
if weights with at most s nonzeros per neuron reproduce a layer's outputs,
Net-Trim recovers them from P = O(s log(N/s)) samples of N Gaussian inputs.

Setting (default): N = 200 inputs, one neuron per trial, s = 5, 10, ..., 40
nonzeros (values +-U[1, 2] on a random support), P = 5, 10, ..., 200
samples (cells with P >= s), 10 seeded trials per s on nested samples (the
first P rows of one Gaussian X), Y = relu(X w) for the ReLU program and
Y = X w for the linear one (same X and w), solved by ``nettrim`` with
eps = 1e-6, tol = 1e-5, at most 3000 ADMM iterations, warm-started along P.
Success: relative error < 1e-3 and the planted support found, judged against
the planted weights (never from the solver's status).

Prints per program: the number of recovered trials on the (s, P) grid, the
rates binned by P / (s log(N/s)), the threshold P*(s) (rate 1/2, linearly
interpolated) per s, the constant C of P* = C s log(N/s) fitted with every
s weighted alike (minimizing the relative misfit) against a fit P* = C s
(no log(N/s) factor; at fixed N, s log N is proportional to s), the envelope
constant (every cell with P > C s log(N/s) has rate >= 1/2), the run time,
and a cross-check of cells near the transition against cvxpy + Clarabel
(does the ADMM's verdict match the exact convex program's?). The exact
reference for the linear program is the statistical dimension delta(s, N) of
the l1 descent cone (Amelunxen, Lotz, McCoy, Tropp 2014): l1 minimization
from P Gaussian equations succeeds for P > delta and fails below; the ReLU
program has only about P/2 equations (the active samples), so 2 delta is its
reference if the half-spaces off Omega added nothing.

    .venv/bin/python benchmarks/bench_sample_complexity.py [--quick] [--plot PATH] [--trials 10]
        [--seed 0] [--intercept] [--cross-check 40]
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from layertrim.bindings.torch.examples import sample_complexity as sc
from layertrim.solvers import warmup

BINS = np.arange(0.5, 6.01, 0.5)


def print_grid(pt):
    """Recovered (trial, neuron) pairs per cell; '.' where P < s (not run)."""
    total = pt.success.shape[1] * pt.success.shape[3]
    print(f"\n{pt.name} program: recovered of {total} per cell (rows s, columns P)")
    print("  s  " + "".join(f"{P:>4d}" for P in pt.sizes))
    counts = pt.success.sum(axis=(1, 3))
    for s, row, ran in zip(pt.sparsities, counts, pt.ran):
        print(f"{s:>3d}  " + "".join(f"{c:>4d}" if r else "   ." for c, r in zip(row, ran)))


def print_binned(pt):
    """Mean rate of the cells whose P / (s log(N/s)) falls in each bin; '-' where no cell falls."""
    ratios, rates = pt.ratios(), pt.rates
    print(f"\n{pt.name}: recovery rate vs P / (s log(N/s)), bins [a, a + 0.5)")
    print("  s  " + "".join(f"{a:>5.1f}" for a in BINS[:-1]))
    for s, q, r in zip(pt.sparsities, ratios, rates):
        cells = []
        for a, b in zip(BINS[:-1], BINS[1:]):
            inside = (q >= a) & (q < b) & ~np.isnan(r)
            cells.append(f"{np.mean(r[inside]):>5.2f}" if inside.any() else "    -")
        print(f"{s:>3d}  " + "".join(cells))


def print_fit(pt):
    """Thresholds per s and the fitted constants."""
    fits = {m: sc.fit_constant(pt, m) for m in sc.MODELS}
    p_star = sc.thresholds(pt)
    L = sc.log_scale(pt.sparsities, pt.n_inputs)
    delta = np.array([sc.l1_statistical_dimension(s, pt.n_inputs) for s in pt.sparsities])
    print(f"\n{pt.name}: threshold P*(s) (rate 1/2); delta = statistical dimension of the l1 descent cone")
    print(f"{'s':>4s} {'s log(N/s)':>11s} {'P*':>7s} {'P*/(s log(N/s))':>16s} {'P*/s':>6s} {'delta':>7s} {'P*/delta':>9s}")
    for s, l, p, d in zip(pt.sparsities, L, p_star, delta):
        cell = (f"{p:7.1f} {p / l:16.2f} {p / s:6.2f}" if not np.isnan(p) else f"{'> N':>7s} {'-':>16s} {'-':>6s}")
        ratio = f"{p / d:9.2f}" if not np.isnan(p) else f"{'-':>9s}"
        print(f"{s:>4d} {l:11.1f} {cell} {d:7.1f} {ratio}")
    for m, f in fits.items():
        print(f"fit P* = C {m}: C = {f['C']:.2f}, relative RMS misfit {f['spread']:.1%}")
    f = fits["s log(N/s)"]
    censored = f" (transition beyond P = N for s = {f['censored']}: a lower bound)" if f["censored"] else ""
    print(f"envelope: rate >= 1/2 in every cell with P > {f['envelope']:.2f} s log(N/s){censored}")
    print(f"{pt.solves} solves in {pt.seconds:.1f} s ({1e3 * pt.seconds / pt.solves:.1f} ms each), "
          f"{pt.max_iter_share:.0%} stopped at max_iter, {pt.non_monotone} non-monotone trials")
    return f


def cross_check(pt, n_cells, rng):
    """Compare the sweep's verdict with cvxpy's on cells of the transition band (0 < rate < 1)."""
    band = [(i, t, j) for i, j in zip(*np.nonzero((pt.rates > 0) & (pt.rates < 1))) for t in range(pt.success.shape[1])]
    if not band or n_cells <= 0:
        return
    pick = [band[k] for k in rng.choice(len(band), size=min(n_cells, len(band)), replace=False)]
    t0 = time.perf_counter()
    pairs = sc.cross_check(pt, pick)
    agree = sum(a == b for a, b in pairs)
    admm_only = sum(a and not b for a, b in pairs)
    ref_only = sum(b and not a for a, b in pairs)
    print(f"cross-check on {len(pairs)} (trial, cell) pairs of the transition band: verdict agrees with cvxpy + "
          f"Clarabel in {agree}; recovered only by the sweep {admm_only}, only by cvxpy {ref_only} "
          f"({time.perf_counter() - t0:.0f} s)")


def plot(results, path):
    """Heat maps of the recovery rate on (s, P) with the fitted P = C s log(N/s) and the l1 reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (pt, fit) in zip(axes[0], results):
        s, P = np.asarray(pt.sparsities), np.asarray(pt.sizes)
        im = ax.pcolormesh(s, P, pt.rates.T, vmin=0, vmax=1, cmap="viridis", shading="nearest")
        grid = np.linspace(s[0], s[-1], 100)
        ax.plot(grid, fit["C"] * sc.log_scale(grid, pt.n_inputs), "m--", lw=2, label=f"P = {fit['C']:.2f} s log(N/s)")
        k = 2 if pt.relu else 1  # the l1 reference: delta equations, about P/2 of them for the ReLU program
        ax.plot(grid, [k * sc.l1_statistical_dimension(g, pt.n_inputs) for g in grid], "r:", lw=2,
                label=f"P = {k} x delta(s, N)")
        ax.set(xlabel="nonzeros per neuron s", ylabel="samples P", ylim=(P[0], P[-1]),
               title=f"{pt.name} program, N = {pt.n_inputs}")
        ax.legend(loc="upper left")
    fig.colorbar(im, ax=axes[0].tolist(), label="recovery rate")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"\nheat map saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 100, a coarse grid (seconds)")
    parser.add_argument("--plot", metavar="PATH", help="save the heat maps as a PNG")
    parser.add_argument("--trials", type=int, help="trials per s (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intercept", action="store_true", help="plant a bias and fit it as an unpenalized intercept")
    parser.add_argument("--cross-check", type=int, default=None, metavar="K",
                        help="cells of the transition band re-solved by cvxpy per program (default 40, quick 0)")
    args = parser.parse_args()
    setting = dict(sc.QUICK if args.quick else sc.FULL)
    if args.trials is not None:
        setting["trials"] = args.trials
    n_check = args.cross_check if args.cross_check is not None else (0 if args.quick else 40)
    print(f"N = {setting['n_inputs']}, s = {list(setting['sparsities'])}, P = {setting['sizes'][0]}.."
          f"{setting['sizes'][-1]} step {setting['sizes'][1] - setting['sizes'][0]}, {setting['trials']} trials, "
          f"seed {args.seed}, intercept {args.intercept}; eps = {sc.EPS:g}, tol = {sc.TOL:g}, "
          f"max_iter = {sc.MAX_ITER}, 1 thread")
    warmup()
    results, t0 = [], time.perf_counter()
    with threadpool_limits(1):
        for relu in (True, False):
            pt = sc.phase_transition(relu=relu, seed=args.seed, intercept=args.intercept, **setting)
            print_grid(pt)
            print_binned(pt)
            fit = print_fit(pt)
            cross_check(pt, n_check, np.random.default_rng(args.seed))
            results.append((pt, fit))
    print(f"\nsummary: C (P* = C s log(N/s)) = {results[0][1]['C']:.2f} for the ReLU program, "
          f"{results[1][1]['C']:.2f} for the linear program; total {time.perf_counter() - t0:.0f} s")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
