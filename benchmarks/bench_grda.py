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
layer; 29k parameters) on the 28 x 28 images of seed 0's split (4,000 train /
1,000 test for every seed: a seed sets the initialization and the batch order,
the same for its three runs), trained three ways for the same epochs: SGD with
momentum, gRDA, and the SGD run pruned at two thirds of the epochs to gRDA's
final per-tensor sparsity by magnitude, then retrained with masks on the rest
of SGD's schedule. ``--schedule`` / ``--sgd-schedule`` (constant, step, cosine)
set the learning-rate schedules of gRDA / SGD (a decay over the last third of
the epochs to 0.1 of the rate). ``--grid`` first picks both on a validation
split (1,000 of the training images, stratified by class; the runs take as many
optimizer steps as the final ones) by ``RULE`` below, then runs the chosen
settings on the test set for each seed and states the verdict by ``GOAL``:

    .venv/bin/python benchmarks/bench_grda.py --cnn [--grid] [--seeds 0 1 2]
        [--schedule step] [--sgd-schedule step] [--epochs 100]
"""
from __future__ import annotations

import argparse
import statistics
import time

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.examples.grda_experiment import compare_sgd_grda, interpolation_losses
from layertrim.bindings.torch.examples.mnist import load_mnist
from layertrim.bindings.torch.examples.grda_cnn import (
    SCHEDULES, compare_cnn, matching_epochs, select_settings, stratified_split, validation_grid
)
from layertrim.bindings.torch.examples.resnet import mnist_images

MLP_DEFAULTS = {"epochs": 100, "lr": 0.2, "c": 0.006, "mu": 0.55}
#: the settings the validation grid (``--grid``) picked; ``--cnn`` alone reruns them
CNN_DEFAULTS = {"epochs": 100, "lr": 0.2, "c": 0.006, "mu": 0.7, "schedule": "step", "sgd_lr": 0.02,
                "sgd_schedule": "step"}
GRID_GRDA = [(0.2, 0.005, 0.7, "step"), (0.2, 0.006, 0.7, "step"), (0.2, 0.006, 0.7, "cosine")]
GRID_SGD = [(0.01, "constant"), (0.01, "step"), (0.02, "step")]
N_VAL = 1000  # stratified by class, out of the 4,000 training images
MIN_SPARSITY, MAX_GAP = 0.9, 0.01
RULE = ("SGD: the most accurate setting on validation; gRDA: among the settings ending with at least 90% zeros "
        "on validation the most accurate there (the sparsest if none reaches 90%); ties to the first in grid order")
GOAL = ("met: every seed ends with >= 90% zeros within 1 point of SGD's test accuracy; partly: some seeds do, "
        "or the medians do; not met: neither")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnn", action="store_true", help="the CNN experiment (SGD+momentum, gRDA, prune+retrain)")
    ap.add_argument("--grid", action="store_true", help="with --cnn: pick the settings on a validation split first")
    ap.add_argument("--schedule", choices=SCHEDULES, default=None, help="CNN: gRDA's learning-rate schedule")
    ap.add_argument("--sgd-schedule", choices=SCHEDULES, default=None, help="CNN: SGD's (and the retraining's)")
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



def tune_cnn(args, X, y):
    """Validation grid (seed 0's initialization and batches) and the selection rule; sets the chosen
    gRDA and SGD settings on ``args`` and returns their validation rows."""
    train_idx, val_idx = stratified_split(y, N_VAL, seed=0)
    epochs = matching_epochs(args.epochs, len(y), len(train_idx), args.batch_size)
    t0 = time.perf_counter()
    rows = validation_grid((X[train_idx], y[train_idx]), (X[val_idx], y[val_idx]), grda_grid=GRID_GRDA,
                           sgd_grid=GRID_SGD, epochs=epochs, batch_size=args.batch_size, seed=0)
    print(f"validation grid: {len(train_idx)} train / {len(val_idx)} validation images (stratified by class), "
          f"{epochs} epochs = the optimizer steps of {args.epochs} epochs on {len(y)}, seed 0, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'optimizer':>9} {'lr':>5} {'c':>6} {'mu':>5} {'schedule':>9} {'val acc':>8} {'sparsity':>9}")
    for r in rows:
        print(f"{r['optimizer']:>9} {r['lr']:5.2f} {r['c']:6.3f} {r['mu']:5.2f} {r['schedule']:>9} "
              f"{r['val_acc']:8.3f} {r['sparsity']:9.3f}")
    sgd, grda = select_settings(rows, MIN_SPARSITY)
    args.sgd_lr, args.sgd_schedule = sgd["lr"], sgd["schedule"]
    args.lr, args.c, args.mu, args.schedule = grda["lr"], grda["c"], grda["mu"], grda["schedule"]
    print(f"rule: {RULE}\nchosen: SGD lr {args.sgd_lr:g} {args.sgd_schedule} (val {sgd['val_acc']:.3f}); gRDA lr "
          f"{args.lr:g} c {args.c:g} mu {args.mu:g} {args.schedule} (val {grda['val_acc']:.3f}, "
          f"{grda['sparsity']:.3f} zeros)\n")
    return sgd, grda


def verdict(finals) -> str:
    """The goal's verdict from per-seed ``(sgd_acc, grda_acc, grda_sparsity)``, by the rule of ``GOAL``."""
    hits = [sp >= MIN_SPARSITY and s - g <= MAX_GAP for s, g, sp in finals]
    med_sp = statistics.median(sp for *_, sp in finals)
    med_gap = statistics.median(s - g for s, g, _ in finals)
    if all(hits):
        return "met"
    return "partly met" if any(hits) or (med_sp >= MIN_SPARSITY and med_gap <= MAX_GAP) else "not met"


def main_cnn(args):
    """The CNN runs on one split (the test set never seen before), one line per seed, and the verdict."""
    t0 = time.perf_counter()
    X, y, Xt, yt = mnist_images(0)  # one split for every seed: a seed sets the initialization and batches
    with limit_threads(1):
        if args.grid:
            tune_cnn(args, X, y)
        runs = [compare_cnn(epochs=args.epochs, lr=args.lr, c=args.c, mu=args.mu, sgd_lr=args.sgd_lr,
                            batch_size=args.batch_size, seed=seed, data=(X, y, Xt, yt), schedule=args.schedule,
                            sgd_schedule=args.sgd_schedule) for seed in args.seeds]
    st = runs[0].settings
    print(f"CNN 16-32-64 on {len(y):,} / {len(yt):,} MNIST images, {args.epochs} epochs, batch {args.batch_size}: "
          f"SGD momentum {st['momentum']} lr {args.sgd_lr:g} {args.sgd_schedule}; gRDA lr {args.lr:g} c {args.c:g} "
          f"mu {args.mu:g} {args.schedule}; prune+retrain: SGD to epoch {st['prune_epoch']}, per-tensor magnitude "
          f"pruning to gRDA's final sparsity, masked retraining on SGD's schedule; seeds {args.seeds} (medians)")
    print(f"{'epoch':>5} {'SGD acc':>8} {'gRDA acc':>9} {'gRDA sp':>8} {'weights':>8} {'prune+rt acc':>13} {'its sp':>7}")
    E = args.epochs
    keys = ("sgd_acc", "grda_acc", "grda_sparsity", "grda_weight_sparsity", "magnitude_acc", "magnitude_sparsity")
    for i in sorted(set(range(args.every - 1, E, args.every)) | {0, st["prune_epoch"] - 1, st["prune_epoch"], E - 1}):
        m = {k: statistics.median(r.history[k][i] for r in runs) for k in keys}
        print(f"{i + 1:>5} {m['sgd_acc']:>8.3f} {m['grda_acc']:>9.3f} {m['grda_sparsity']:>8.3f} "
              f"{m['grda_weight_sparsity']:>8.3f} {m['magnitude_acc']:>13.3f} {m['magnitude_sparsity']:>7.3f}")
    cols = ("sgd_acc", "grda_acc", "grda_sparsity", "magnitude_acc")
    final = {k: [r.history[k][-1] for r in runs] for k in cols}
    final["gap"] = [s - g for s, g in zip(final["sgd_acc"], final["grda_acc"])]
    print(f"\nfinal test results (test set: {len(yt)} images, binomial standard error of one accuracy near 0.97: "
          f"{100 * (0.97 * 0.03 / len(yt)) ** 0.5:.1f} points)")
    print(f"{'seed':>6} {'SGD acc':>8} {'gRDA acc':>9} {'SGD-gRDA':>9} {'gRDA zeros':>11} {'prune+rt acc':>13}")
    for j, seed in enumerate(args.seeds):
        print(f"{seed:>6} {final['sgd_acc'][j]:8.3f} {final['grda_acc'][j]:9.3f} {100 * final['gap'][j]:+8.1f}p "
              f"{final['grda_sparsity'][j]:11.3f} {final['magnitude_acc'][j]:13.3f}")
    med = {k: statistics.median(v) for k, v in final.items()}
    print(f"{'median':>6} {med['sgd_acc']:8.3f} {med['grda_acc']:9.3f} {100 * med['gap']:+8.1f}p "
          f"{med['grda_sparsity']:11.3f} {med['magnitude_acc']:13.3f}")
    finals = list(zip(final["sgd_acc"], final["grda_acc"], final["grda_sparsity"]))
    print(f"verdict: goal {verdict(finals)} ({GOAL}); seeds meeting it: "
          f"{sum(sp >= MIN_SPARSITY and s - g <= MAX_GAP for s, g, sp in finals)}/{len(finals)}")
    secs = {k: statistics.median(r.seconds[k] for r in runs) for k in ("sgd", "grda", "magnitude")}
    print(f"training time per run: SGD {secs['sgd']:.1f} s, gRDA {secs['grda']:.1f} s, retraining "
          f"{secs['magnitude']:.1f} s; total {time.perf_counter() - t0:.0f} s (1 thread)")


if __name__ == "__main__":
    main()
