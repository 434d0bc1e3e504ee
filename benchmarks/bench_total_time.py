"""Total pruning time (prune + masked retraining until the accuracy is back) per method.

Two networks on the reference MNIST images: the 784-300-100-10 MLP and a tiny
conv net (conv 16 5x5/2, conv 32 5x5/2, linear 512-10). Every method prunes
every layer to the same sparsity (cascade scheme, the same 4,000 calibration
images), then the network is fine-tuned with the masks held (Adam, lr 1e-3,
batch 64, the same batches in the same order for every method), evaluated on
the 1,000 test images every ``--eval-every`` steps, until it is within
``--tolerance`` (0.5 points) of the dense accuracy or ``--max-epochs`` pass.
Then the depth table: MLPs with 2..8 hidden layers of width 128, pruned
without retraining. Pruning times are medians over ``--repeats`` prunings.

Usage: ``python benchmarks/bench_total_time.py [--quick] [--plot PATH] [--repeats 1]``
"""
from __future__ import annotations

import argparse
import time

import torch

from layertrim.bindings.torch import accuracy, limit_threads
from layertrim.bindings.torch.examples.mnist import load_mnist, trained_mlp
from layertrim.bindings.torch.examples.resnet import mnist_images
from layertrim.bindings.torch.examples.threshold_depth import depth_curve
from layertrim.bindings.torch.examples.total_time import METHODS, total_time, trained_convnet
from layertrim.solvers import LayerTrimError

NETWORKS = ("mlp", "convnet")


def network(name: str):
    """``(model, X_train, y_train, X_test, y_test)`` of a reference network."""
    if name == "mlp":
        X, y, Xt, yt = (torch.as_tensor(a) for a in load_mnist(0))
        return trained_mlp(0), X, y, Xt, yt
    return (trained_convnet(0),) + mnist_images(0)


def run_network(name, args):
    """Every (sparsity, method) row of one network; a failed prune is kept as ``(method, s, reason)``."""
    base, X, y, Xt, yt = network(name)
    calibration = [X[i : i + 500] for i in range(0, len(X), 500)]
    dense = accuracy(base, Xt, yt)
    print(f"{name}: dense test accuracy {100 * dense:.2f}%", flush=True)
    rows, skipped = [], []
    for s in args.sparsities:
        for method in args.methods:
            t0 = time.perf_counter()
            try:
                row = total_time(base, method, s, calibration=calibration, X_train=X, y_train=y,
                                 evaluate=lambda m: accuracy(m, Xt, yt), dense_accuracy=dense,
                                 tolerance=args.tolerance, repeats=args.repeats, network=name,
                                 max_epochs=args.max_epochs, eval_every=args.eval_every)
            except LayerTrimError as exc:
                skipped.append((name, method, s, f"{type(exc).__name__}: {exc}"))
                print(f"  {s:.0%} {method:<10} skipped: {exc}", flush=True)
                continue
            rows.append(row)
            print(f"  {s:.0%} {method:<10} acc {100 * row.pruned_accuracy:6.2f}  prune {row.prune_seconds:6.2f}s  "
                  f"retrain {_seconds(row.retraining.seconds)}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    return rows, skipped


def _seconds(value) -> str:
    return "not within cap" if value is None else f"{value:.2f}"


def print_tables(rows, skipped, args) -> None:
    head = (f"{'network':<8}  {'sparsity':>8}  {'method':<10}  {'achieved':>8}  {'acc pruned':>10}  {'prune s':>7}  "
            f"{'solve s':>7}  {'retrain s':>14}  {'steps':>5}  {'total s':>14}  {'final acc':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        rec = r.retraining.recovered
        print(f"{r.network:<8}  {r.sparsity:>8.0%}  {r.method:<10}  {r.achieved:>8.4f}  {100 * r.pruned_accuracy:>10.2f}  "
              f"{r.prune_seconds:>7.2f}  {r.solve_seconds:>7.2f}  {_seconds(r.retraining.seconds):>14}  "
              f"{'-' if rec is None else rec.step:>5}  {_seconds(r.total_seconds):>14}  {100 * r.final_accuracy:>9.2f}")
    for name, method, s, reason in skipped:
        print(f"{name:<8}  {s:>8.0%}  {method:<10}  skipped: {reason}")
    print(f"\nrecovered = test accuracy >= dense - {100 * args.tolerance:.1f} points, checked every "
          f"{args.eval_every} steps (batch 64), cap {args.max_epochs} epochs; 'final acc' = at recovery or at the cap.")
    groups = dict.fromkeys((r.network, r.sparsity) for r in rows)
    for name, s in groups:
        own = [r for r in rows if (r.network, r.sparsity) == (name, s)]
        done = [r for r in own if r.total_seconds is not None]
        fastest = min(done, key=lambda r: r.total_seconds).method if done else "none within cap"
        best = max(own, key=lambda r: r.pruned_accuracy)
        print(f"{name} {s:.0%}: least total time: {fastest}; best without retraining: {best.method} "
              f"({100 * best.pruned_accuracy:.2f}%)")


def print_depth(rows) -> None:
    head = f"{'hidden':>6}  {'method':<10}  {'sparsity':>8}  {'dense acc':>9}  {'pruned acc':>10}  {'loss pts':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r.depth:>6}  {r.method:<10}  {r.sparsity:>8.0%}  {100 * r.dense_accuracy:>9.2f}  "
              f"{100 * r.pruned_accuracy:>10.2f}  {100 * r.loss:>8.2f}")


def plot(rows, depth_rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layertrim.bindings.torch.examples.threshold_depth import plot_depth
    from layertrim.bindings.torch.examples.total_time import plot_recovery

    groups = list(dict.fromkeys((r.network, r.sparsity) for r in rows))
    cols = min(len(groups) + 1, 4)
    n_rows = -(-(len(groups) + 1) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.5 * cols, 3.8 * n_rows), squeeze=False)
    axes = axes.ravel()
    for ax, key in zip(axes, groups):
        plot_recovery([r for r in rows if (r.network, r.sparsity) == key], ax)
    plot_depth(depth_rows, axes[len(groups)])
    for ax in axes[len(groups) + 1 :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the notebook's setting: MLP only, 90%%, magnitude/l0, cap 3 epochs; depths 2 4 6 "
                             "trained 10 epochs, magnitude/l0")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--eval-every", type=int, default=21, help="optimizer steps between evaluations")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--depth-width", type=int, default=128)
    parser.add_argument("--depth-epochs", type=int, default=20, help="training epochs of the depth networks")
    parser.add_argument("--depth-sparsity", type=float, default=0.9)
    parser.add_argument("--depth-methods", nargs="+", choices=list(METHODS), default=["magnitude", "iht", "l0"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.networks, args.sparsities, args.methods, args.max_epochs = ["mlp"], [0.9], ["magnitude", "l0"], 3
        args.depths, args.depth_epochs, args.depth_methods = [2, 4, 6], 10, ["magnitude", "l0"]
    with limit_threads(args.threads):
        print(f"torch threads: {torch.get_num_threads()}")
        rows, skipped = [], []
        for name in args.networks:
            more, failed = run_network(name, args)
            rows += more
            skipped += failed
        print_tables(rows, skipped, args)
        depth_rows = depth_curve(args.depths, sparsity=args.depth_sparsity, methods=args.depth_methods,
                                 width=args.depth_width, epochs=args.depth_epochs)
        print_depth(depth_rows)
    if args.plot:
        plot(rows, depth_rows, args.plot)


if __name__ == "__main__":
    main()
