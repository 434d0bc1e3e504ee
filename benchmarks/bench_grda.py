"""gRDA against SGD on the reference MNIST network (784-300-100-10, 4,000
training images), the experiment of notebooks/03 run longer.

Both optimizers start from one initialization, see the same batches, and use
the same learning rate without momentum or weight decay. Prints, per epoch,
the test accuracy of each and gRDA's sparsity (all parameters, biases
included; and Linear weights only), then the training time of each and their
ratio. Single-threaded torch: on few cores a BLAS pool per library contends.

    .venv/bin/python benchmarks/bench_grda.py [--epochs 100] [--seeds 0 1]

``--cnn``: the CNN experiment (:mod:`layertrim.bindings.torch.examples.grda_cnn`),
a VGG-like network (3x3 convs with 16-32-64 channels, max pooling, one linear
layer; 29k parameters) on the 28 x 28 images, trained three ways for the same
epochs: SGD with momentum, gRDA, and the SGD run pruned at two thirds of the
epochs to gRDA's final per-tensor sparsity by magnitude, then retrained with
masks. ``--cnn --grid`` first picks gRDA's (lr, c, mu) and SGD's lr on a
validation split (the last 500 of the 4,000 training images held out).
``--schedule step|cosine`` decays gRDA's learning rate over the last third of
the epochs (to 0.1 of it; SGD keeps its constant rate); ``--decay-grid`` picks
the schedule for c = 0.006, mu = 0.7 on the same split by the same rule:

    .venv/bin/python benchmarks/bench_grda.py --cnn [--grid | --decay-grid] [--schedule step]
        [--epochs 100] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.examples.grda_experiment import compare_sgd_grda, interpolation_losses
from layertrim.bindings.torch.examples.mnist import load_mnist
from layertrim.bindings.torch.examples.grda_cnn import SCHEDULES, compare_cnn, validation_grid
from layertrim.bindings.torch.examples.resnet import mnist_images

MLP_DEFAULTS = {"epochs": 100, "lr": 0.2, "c": 0.006, "mu": 0.55}
CNN_DEFAULTS = {"epochs": 100, "lr": 0.2, "c": 0.003, "mu": 0.7, "sgd_lr": 0.01}
GRID_GRDA = [(0.2, 0.003, 0.7), (0.2, 0.006, 0.55), (0.2, 0.006, 0.7)]
GRID_DECAY = [(0.2, 0.006, 0.7, "step"), (0.2, 0.006, 0.7, "cosine")]
GRID_SGD = (0.01, 0.02)
N_VAL = 500


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnn", action="store_true", help="the CNN experiment (SGD+momentum, gRDA, prune+retrain)")
    ap.add_argument("--grid", action="store_true", help="with --cnn: tune on a validation split first")
    ap.add_argument("--decay-grid", action="store_true", help="with --cnn: pick gRDA's lr schedule on it first")
    ap.add_argument("--schedule", choices=SCHEDULES, default="constant", help="CNN: gRDA's learning-rate schedule")
    ap.add_argument("--epochs", type=int, default=None, help="default 100")
    ap.add_argument("--lr", type=float, default=None, help="gRDA (and MLP SGD) learning rate")
    ap.add_argument("--c", type=float, default=None)
    ap.add_argument("--mu", type=float, default=None)
    ap.add_argument("--sgd-lr", type=float, default=None, help="CNN: SGD+momentum learning rate")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--every", type=int, default=10, help="print every this many epochs")
    args = ap.parse_args(argv)
    for key, value in (CNN_DEFAULTS if args.cnn else MLP_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cnn:
        return main_cnn(args)
    runs = []
    with limit_threads(1):
        for seed in args.seeds:
            data = load_mnist(seed)
            run = compare_sgd_grda(
                epochs=args.epochs, lr=args.lr, c=args.c, mu=args.mu, batch_size=args.batch_size, seed=seed, data=data
            )
            line = interpolation_losses(run.sgd, run.grda, data[0], data[1], [i / 10 for i in range(11)])
            runs.append((run, line))
    print(
        f"gRDA (c={args.c}, mu={args.mu}) vs SGD, lr={args.lr}, batch {args.batch_size}, "
        f"seeds {args.seeds} (medians over seeds)"
    )
    print(f"{'epoch':>5} {'SGD acc':>8} {'gRDA acc':>9} {'gRDA sparsity':>14} {'weights only':>13}")
    E = args.epochs
    for i in sorted(set(range(args.every - 1, E, args.every)) | {0, E - 1}):
        med = {k: statistics.median(r.history[k][i] for r, _ in runs)
               for k in ("sgd_acc", "grda_acc", "grda_sparsity", "grda_weight_sparsity")}
        print(
            f"{i + 1:>5} {med['sgd_acc']:>8.3f} {med['grda_acc']:>9.3f} "
            f"{med['grda_sparsity']:>14.3f} {med['grda_weight_sparsity']:>13.3f}"
        )
    t_sgd = statistics.median(r.seconds["sgd"] for r, _ in runs)
    t_grda = statistics.median(r.seconds["grda"] for r, _ in runs)
    print(f"training time per run: SGD {t_sgd:.1f} s, gRDA {t_grda:.1f} s, ratio gRDA/SGD {t_grda / t_sgd:.2f}")
    ends = statistics.median(max(line[0], line[-1]) for _, line in runs)
    peak = statistics.median(max(line) for _, line in runs)
    print(f"training loss on the SGD-gRDA line: larger end {ends:.4f}, maximum {peak:.4f}")



def tune_cnn(args, grid):
    """Grid on a validation split of seed 0; sets args.lr, args.c, args.mu, args.schedule, args.sgd_lr."""
    X, y, _, _ = mnist_images(0)
    train_data, val_data = (X[:-N_VAL], y[:-N_VAL]), (X[-N_VAL:], y[-N_VAL:])
    t0 = time.perf_counter()
    rows = validation_grid(train_data, val_data, grda_grid=grid, sgd_lrs=GRID_SGD, epochs=args.epochs,
                           batch_size=args.batch_size)
    print(f"validation grid ({len(y) - N_VAL} train / {N_VAL} validation images, {args.epochs} epochs, seed 0, "
          f"{time.perf_counter() - t0:.0f} s)")
    print(f"{'optimizer':>9} {'lr':>5} {'c':>6} {'mu':>5} {'schedule':>9} {'val acc':>8} {'sparsity':>9}")
    for r in rows:
        print(f"{r['optimizer']:>9} {r['lr']:5.2f} {r['c']:6.3f} {r['mu']:5.2f} {r['schedule']:>9} "
              f"{r['val_acc']:8.3f} {r['sparsity']:9.3f}")
    sgd = max((r for r in rows if r["optimizer"] == "sgd"), key=lambda r: r["val_acc"])
    # gRDA's target: the sparsest setting within one point of the best SGD on validation, else the most accurate
    grda = [r for r in rows if r["optimizer"] == "grda"]
    close = [r for r in grda if r["val_acc"] >= sgd["val_acc"] - 0.01]
    best = max(close, key=lambda r: r["sparsity"]) if close else max(grda, key=lambda r: r["val_acc"])
    args.sgd_lr, args.lr, args.c, args.mu = sgd["lr"], best["lr"], best["c"], best["mu"]
    args.schedule = best["schedule"]
    print(f"chosen: SGD lr {args.sgd_lr:g}; gRDA lr {args.lr:g}, c {args.c:g}, mu {args.mu:g}, "
          f"schedule {args.schedule}\n")


def main_cnn(args):
    """Print the CNN table: per epoch, accuracy of the three runs and their sparsity (medians over seeds)."""
    t0 = time.perf_counter()
    with limit_threads(1):
        if args.grid or args.decay_grid:
            tune_cnn(args, GRID_DECAY if args.decay_grid else GRID_GRDA)
        runs = [compare_cnn(epochs=args.epochs, lr=args.lr, c=args.c, mu=args.mu, sgd_lr=args.sgd_lr,
                            batch_size=args.batch_size, seed=seed, data=mnist_images(seed), schedule=args.schedule)
                for seed in args.seeds]
    st = runs[0].settings
    print(f"CNN 16-32-64 on 4,000 / 1,000 MNIST images, {args.epochs} epochs, batch {args.batch_size}: "
          f"SGD momentum {st['momentum']} lr {args.sgd_lr:g}; gRDA lr {args.lr:g} c {args.c:g} mu {args.mu:g} "
          f"schedule {args.schedule}; "
          f"magnitude: SGD to epoch {st['prune_epoch']}, per-tensor pruning to gRDA's final sparsity, masked "
          f"retraining; seeds {args.seeds} (medians)")
    print(f"{'epoch':>5} {'SGD acc':>8} {'gRDA acc':>9} {'gRDA sp':>8} {'weights':>8} {'prune+rt acc':>13} {'its sp':>7}")
    E = args.epochs
    keys = ("sgd_acc", "grda_acc", "grda_sparsity", "grda_weight_sparsity", "magnitude_acc", "magnitude_sparsity")
    for i in sorted(set(range(args.every - 1, E, args.every)) | {0, st["prune_epoch"] - 1, st["prune_epoch"], E - 1}):
        m = {k: statistics.median(r.history[k][i] for r in runs) for k in keys}
        print(f"{i + 1:>5} {m['sgd_acc']:>8.3f} {m['grda_acc']:>9.3f} {m['grda_sparsity']:>8.3f} "
              f"{m['grda_weight_sparsity']:>8.3f} {m['magnitude_acc']:>13.3f} {m['magnitude_sparsity']:>7.3f}")
    final = {k: [r.history[k][-1] for r in runs] for k in keys}
    gap = [s - g for s, g in zip(final["sgd_acc"], final["grda_acc"])]
    print("per seed final (SGD, gRDA, prune+retrain acc; gRDA sparsity): " + "; ".join(
        f"seed {s}: {a:.3f} {b:.3f} {c:.3f} {d:.3f}" for s, a, b, c, d in
        zip(args.seeds, final["sgd_acc"], final["grda_acc"], final["magnitude_acc"], final["grda_sparsity"])))
    sp, g = statistics.median(final["grda_sparsity"]), statistics.median(gap)
    met = sp >= 0.9 and g <= 0.01
    print(f"goal (gRDA >= 90% sparsity within 1 point of SGD): {'met' if met else 'not met'} "
          f"(median sparsity {sp:.3f}, SGD minus gRDA {g * 100:+.1f} points)")
    secs = {k: statistics.median(r.seconds[k] for r in runs) for k in ("sgd", "grda", "magnitude")}
    print(f"training time per run: SGD {secs['sgd']:.1f} s, gRDA {secs['grda']:.1f} s, retraining "
          f"{secs['magnitude']:.1f} s; total {time.perf_counter() - t0:.0f} s (1 thread)")


if __name__ == "__main__":
    main()
