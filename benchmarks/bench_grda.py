"""gRDA against SGD on the reference MNIST network (784-300-100-10, 4,000
training images), the experiment of notebooks/03 run longer.

Both optimizers start from one initialization, see the same batches, and use
the same learning rate without momentum or weight decay. Prints, per epoch,
the test accuracy of each and gRDA's sparsity (all parameters, biases
included; and Linear weights only), then the training time of each and their
ratio. Single-threaded torch: on few cores a BLAS pool per library contends.

    .venv/bin/python benchmarks/bench_grda.py [--epochs 100] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import statistics

from layertrim.bindings.torch import limit_threads
from layertrim.bindings.torch.examples.grda_experiment import compare_sgd_grda, interpolation_losses
from layertrim.bindings.torch.examples.mnist import load_mnist


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--c", type=float, default=0.006)
    ap.add_argument("--mu", type=float, default=0.55)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--every", type=int, default=10, help="print every this many epochs")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
