"""The demo: prune the reference MNIST network with every method and compare.

For each method and target sparsity a copy of the trained 784-300-100-10
network (:mod:`layertrim.bindings.torch.mnist`) is pruned layer by layer on
calibration images, evaluated on the 1,000 held-out images, fine-tuned for
one epoch with its masks held and evaluated again. :func:`run` returns the
numbers, :func:`format_table` prints them, :func:`plot` draws accuracy
against sparsity per method. ``layertrim demo`` and the notebook
``02_prune_mnist`` are thin callers of these functions.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from layertrim.solvers.errors import ConvergenceWarning
from layertrim.solvers.validation import check_choice, check_sparsity

from . import mnist

METHODS = ("magnitude", "iht", "lasso", "group_lasso", "nettrim", "feta")
SPARSITIES = (0.9, 0.95, 0.98)

#: full run: calibration images for the layer problems; quick run: fewer
N_CALIB, N_CALIB_QUICK = 2000, 300
#: quick run: fewer iterations for the iterative nonconvex methods (the quick
#: run shows that everything works end to end, its accuracies are not the point)
QUICK_OPTIONS = {
    "feta": dict(outer_iter=3, search_iter=1, polish_iter=3),
    "iht": dict(max_iter=30),
    "nettrim": dict(tol=1e-3, max_iter=300),
}
#: one epoch of masked fine-tuning over the 4,000 training images
FINE_TUNE_LR, FINE_TUNE_BATCH = 1e-3, 64


@dataclass(frozen=True)
class DemoRow:
    """One pruned network: method, target and achieved overall weight sparsity,
    test accuracy after pruning and after one epoch of masked fine-tuning,
    relative error of the test logits against the dense network, pruning time."""

    method: str
    target: float
    sparsity: float
    acc_pruned: float
    acc_finetuned: float
    logit_error: float
    time: float


@dataclass
class DemoResults:
    """The dense network's test accuracy and one :class:`DemoRow` per (method, sparsity)."""

    dense_accuracy: float
    n_calib: int
    rows: list[DemoRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"dense_accuracy": self.dense_accuracy, "n_calib": self.n_calib,
             "rows": [asdict(r) for r in self.rows]},
            indent=2,
        )


def _logits(model, X) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(X)


def run(*, methods=METHODS, sparsities=SPARSITIES, quick: bool = False, seed: int = 0,
        progress: bool = True) -> DemoResults:
    """Prune the reference network with each method at each sparsity.

    Parameters
    ----------
    methods : sequence of str
        Any of :data:`METHODS`.
    sparsities : sequence of float in [0, 1)
        Target overall weight sparsities.
    quick : bool
        Use :data:`N_CALIB_QUICK` calibration images instead of :data:`N_CALIB`
        and the reduced solver settings :data:`QUICK_OPTIONS`.
    seed : int
        Seed of the data split, the training and the fine-tuning order.
    progress : bool
        Show a progress bar over the runs.
    """
    from tqdm.auto import tqdm

    from . import fine_tune, prune, sparsity

    methods = [check_choice(m, "method", METHODS) for m in methods]
    sparsities = [check_sparsity(s) for s in sparsities]
    X_train, y_train, X_test, y_test = mnist.load_mnist(seed)
    dense = mnist.trained_mlp(seed)
    X_test_t = torch.from_numpy(X_test)
    dense_logits = _logits(dense, X_test_t)
    n_calib = N_CALIB_QUICK if quick else N_CALIB
    calib = list(torch.from_numpy(X_train[:n_calib]).split(500))
    train_set = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
    results = DemoResults(dense_accuracy=mnist.accuracy(dense, X_test, y_test), n_calib=n_calib)

    runs = [(m, s) for m in methods for s in sparsities]
    for method, target in tqdm(runs, desc="demo", disable=not progress, unit="run"):
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        with warnings.catch_warnings():
            if quick:  # iterations are cut on purpose in a quick run
                warnings.simplefilter("ignore", ConvergenceWarning)
            prune(model, calib, method=_settings(model, method, quick), sparsity=target, progress=False)
        elapsed = time.perf_counter() - start
        acc_pruned = mnist.accuracy(model, X_test, y_test)
        logits = _logits(model, X_test_t)
        error = float(torch.linalg.norm(logits - dense_logits) / torch.linalg.norm(dense_logits))
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=FINE_TUNE_BATCH, shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        fine_tune(model, loader, epochs=1, lr=FINE_TUNE_LR)
        results.rows.append(DemoRow(
            method=method, target=target, sparsity=sparsity(model).overall,
            acc_pruned=acc_pruned, acc_finetuned=mnist.accuracy(model, X_test, y_test),
            logit_error=error, time=elapsed,
        ))
    return results


def _settings(model, method: str, quick: bool):
    """``method``, or in a quick run per-layer settings with :data:`QUICK_OPTIONS` on the ReLU layers
    (the layers where the nonconvex methods run; the others are solved as plain regressions)."""
    from . import find_layers, relu_layers

    options = QUICK_OPTIONS.get(method) if quick else None
    if not options:
        return method
    relu = relu_layers(model)
    return {name: {"method": method, **(options if name in relu else {})} for name in find_layers(model)}


def format_table(results: DemoResults) -> str:
    """An aligned text table of the results, one line per (method, sparsity)."""
    head = ("method", "target", "sparsity", "acc pruned", "acc +1 epoch", "logit error", "time (s)")
    lines = [
        (r.method, f"{r.target:.1%}", f"{r.sparsity:.1%}", f"{r.acc_pruned:.1%}",
         f"{r.acc_finetuned:.1%}", f"{r.logit_error:.3f}", f"{r.time:.2f}")
        for r in results.rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]

    def fmt(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    rule = "-" * len(fmt(head))
    title = (f"784-300-100-10 ReLU network, MNIST subset: dense test accuracy {results.dense_accuracy:.1%}, "
             f"{results.n_calib} calibration images")
    return "\n".join([title, rule, fmt(head), rule, *map(fmt, lines), rule])


def plot(results: DemoResults, path) -> Path:
    """Write test accuracy against overall sparsity per method (before and after fine-tuning) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(r.method for r in results.rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, method in enumerate(methods):
        rows = sorted((r for r in results.rows if r.method == method), key=lambda r: r.sparsity)
        x = 100 * np.array([r.sparsity for r in rows])
        color = colors[i % len(colors)]
        ax.plot(x, [100 * r.acc_finetuned for r in rows], "o-", color=color, label=f"{method}, +1 epoch")
        ax.plot(x, [100 * r.acc_pruned for r in rows], "x--", color=color, alpha=0.6, label=f"{method}, pruned")
    ax.axhline(100 * results.dense_accuracy, color="k", lw=0.8, ls=":", label="dense")
    ax.set_xlabel("overall weight sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Pruning the 784-300-100-10 MNIST network")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(*, quick: bool = False, out_dir="layertrim-demo", methods=None, sparsities=None, seed: int = 0):
    """Run the demo, print the table and write ``demo.png`` and ``demo.json`` into ``out_dir``."""
    if sparsities is None:
        sparsities = (0.9,) if quick else SPARSITIES
    results = run(methods=methods or METHODS, sparsities=sparsities, quick=quick, seed=seed)
    print(format_table(results))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(results, out / "demo.png")
    (out / "demo.json").write_text(results.to_json())
    print(f"plot: {png}\nresults: {out / 'demo.json'}")
    return results
