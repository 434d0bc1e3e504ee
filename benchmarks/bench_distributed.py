"""Layer problems on a two-worker Dask LocalCluster against the serial single-threaded run.

1. The parallel scheme on the MNIST reference network (784-300-100-10,
   2,000 calibration images, ``method`` at 90%): serial in this process with
   one BLAS thread vs ``executor=client`` (every layer one task); the weights
   must be identical.
2. One square layer ``N x N`` (default 2048; ``P = 2N`` Gaussian calibration
   rows with correlated features), split into ``column_blocks`` = 1 (serial),
   2 and 4 blocks on the cluster: per-output magnitude pruning + least-squares
   refit at 50% (``N`` solves of size ``N/2``: ``N^4/24`` flops) and
   SparseGPT's per-output sweep. Wall time of ``prune`` (the capture is the
   same serial pass in every row), speedup over serial, largest weight
   difference to the serial result.

Each worker runs one thread (Dask sets its BLAS pools to 1), so the cluster
has as many cores as this machine's two. Medians of ``--repeats``.

Usage: ``python benchmarks/bench_distributed.py [--n 2048] [--repeats 3] [--quick]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from layertrim.bindings.torch import prune
from layertrim.bindings.torch.examples.mnist import load_mnist, trained_mlp


def _timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _max_diff(a, b):
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))


def mnist_rows(client, method, repeats):
    X_train = torch.from_numpy(load_mnist(0)[0][:2000])
    data = [X_train[i:i + 250] for i in range(0, 2000, 250)]

    def run(executor):
        model = trained_mlp(0)
        prune(model, data, method=method, sparsity=0.9, scheme="parallel", progress=False, executor=executor)
        return _weights(model)

    serial_t, serial = _timed(lambda: run(None), repeats)
    dask_t, spread = _timed(lambda: run(client), repeats)
    same = all(torch.equal(x, y) for x, y in zip(serial, spread))
    print(f"\nMNIST network, parallel scheme, {method} 90%: serial {serial_t:.2f} s, 2-worker cluster "
          f"{dask_t:.2f} s ({serial_t / dask_t:.2f}x); weights identical: {same}")


def layer_rows(client, n, repeats, blocks=(2, 4)):
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5
    X = (torch.randn(2 * n, n, generator=gen, dtype=torch.float64) @ (torch.eye(n, dtype=torch.float64) + mix))
    data = [X[i:i + 512].float() for i in range(0, 2 * n, 512)]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        layer = nn.Linear(n, n)
    print(f"\nOne {n} x {n} layer, P = {2 * n}, per-output 50%: prune() wall time (median of {repeats})")
    print(f"{'method':<22}{'blocks':>7}{'where':>10}{'seconds':>10}{'speedup':>9}{'max |dW|':>11}")
    for method in ("magnitude", "sparsegpt"):
        def run(executor, k):
            model = nn.Sequential(nn.Linear(n, n))
            model.load_state_dict({"0." + key: v for key, v in layer.state_dict().items()})
            prune(model, data, method=method, sparsity=0.5, pattern="per_output", progress=False,
                  executor=executor, column_blocks=k)
            return _weights(model)

        base_t, base = _timed(lambda: run(None, 1), repeats)
        print(f"{method + ' (+refit)' * (method == 'magnitude'):<22}{1:>7}{'serial':>10}{base_t:>10.2f}"
              f"{1.0:>9.2f}{0.0:>11.1e}")
        for k in blocks:
            t, W = _timed(lambda: run(client, k), repeats)
            print(f"{'':<22}{k:>7}{'cluster':>10}{t:>10.2f}{base_t / t:>9.2f}{_max_diff(base, W):>11.1e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="iht")
    parser.add_argument("--quick", action="store_true", help="n = 512, one repeat")
    args = parser.parse_args(argv)
    n, repeats = (512, 1) if args.quick else (args.n, args.repeats)
    import distributed

    torch.set_num_threads(1)
    with threadpool_limits(1), distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                         dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        print(f"cluster: {len(client.scheduler_info()['workers'])} workers x 1 thread; this process 1 thread")
        mnist_rows(client, args.method, repeats)
        layer_rows(client, n, repeats)


if __name__ == "__main__":
    main()
