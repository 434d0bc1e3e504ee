"""The demo: prune the reference MNIST network with every method and compare.

For each method and target sparsity a copy of the trained 784-300-100-10
network (:mod:`layertrim.bindings.torch.examples.mnist`) is pruned layer by layer on
calibration images, evaluated on the 1,000 held-out images, fine-tuned for
one epoch with its masks held and evaluated again. :func:`run` returns the
numbers, :func:`format_table` prints them, :func:`plot` draws accuracy
against sparsity per method. ``layertrim demo`` and the notebook
``02_prune_mnist`` are thin callers of these functions.

The solvers run under a budget (:data:`FULL`, :data:`QUICK`): a demo shows
the methods side by side in minutes, so iterative solvers get capped
iterations and tolerances looser than their defaults. The settings used are
printed under the table.
"""
from __future__ import annotations

import copy
import json
import textwrap
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from layertrim.solvers.base.errors import ConvergenceWarning
from layertrim.solvers.base.validation import check_choice, check_sparsity

from . import mnist
from ...methods import STATUS_ORDER

METHODS = ("magnitude", "iht", "l0", "lasso", "group_lasso", "nettrim", "feta")
SPARSITIES = (0.8, 0.9, 0.95)
#: the quick run (``layertrim demo --quick``): one sparsity, three methods
QUICK_METHODS = ("magnitude", "l0", "nettrim")
QUICK_SPARSITIES = (0.9,)
#: one epoch of masked fine-tuning over the 4,000 training images
FINE_TUNE_LR, FINE_TUNE_BATCH = 1e-3, 64
#: file names written into the output folder
PLOT_NAME, RESULTS_NAME = "accuracy_vs_sparsity.png", "results.json"


@dataclass(frozen=True)
class Budget:
    """How much work the solvers get in one demo mode.

    ``n_calib`` calibration images feed every layer problem; the row-based
    methods (Net-Trim, FeTa) sample at most ``max_rows`` of them per layer.
    ``options`` maps the solver that runs on a layer (``"lasso"`` for FeTa's
    layer without ReLU) to its keyword options.
    """

    name: str
    n_calib: int
    max_rows: int
    options: dict

    def layer_options(self, method: str, relu: bool) -> dict:
        """Options for a layer pruned by ``method`` (``relu``: a ReLU follows it)."""
        solver = "lasso" if method == "feta" and not relu else method
        return dict(self.options.get(solver, {}))

    def describe(self) -> str:
        """A sentence naming every setting, printed under the results table."""
        opts = "; ".join(
            f"{m} " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.items())
            for m, o in self.options.items()
        )
        return (f"{self.name} run: {self.n_calib} calibration images (nettrim/feta: at most "
                f"{self.max_rows} rows per layer); {opts}; other solvers at their defaults")


FULL = Budget("full", n_calib=2000, max_rows=1000, options={
    "iht": dict(max_iter=100),
    "nettrim": dict(tol=2e-2, max_iter=300),
    "feta": dict(support_iter=2, iht_iter=50, polish_iter=5),
})
QUICK = Budget("quick", n_calib=500, max_rows=500, options={
    "iht": dict(max_iter=30),
    "nettrim": dict(tol=3e-2, max_iter=200),
    "feta": dict(support_iter=2, iht_iter=30, polish_iter=5),
})


@dataclass(frozen=True)
class DemoRow:
    """One pruned network: method, target and achieved overall weight sparsity,
    test accuracy after pruning and after one epoch of masked fine-tuning,
    relative error of the test logits against the dense network, pruning
    time and the worst solver status over its layers."""

    method: str
    target: float
    sparsity: float
    acc_pruned: float
    acc_finetuned: float
    logit_error: float
    time: float
    status: str


@dataclass
class DemoResults:
    """The dense network's test accuracy, the budget and one :class:`DemoRow` per (method, sparsity)."""

    dense_accuracy: float
    settings: str
    rows: list[DemoRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"dense_accuracy": self.dense_accuracy, "settings": self.settings,
             "rows": [asdict(r) for r in self.rows]},
            indent=2,
        )


def _logits(model, X) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(X)


def layer_settings(model, method: str, budget: Budget) -> dict:
    """Per-layer settings for :func:`~layertrim.bindings.torch.prune`: ``method`` with the
    budget's options for the solver that runs on each layer."""
    from .. import find_layers
    from .. import relu_layers

    relu = relu_layers(model)
    return {name: {"method": method, **budget.layer_options(method, name in relu)} for name in find_layers(model)}


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
        Use the :data:`QUICK` budget instead of :data:`FULL`.
    seed : int
        Seed of the data split, the training and the fine-tuning order.
    progress : bool
        Show a progress bar over the runs (on stderr).

    Notes
    -----
    Every run prunes in the cascade scheme and reaches at least the target
    sparsity on every layer. Iterations are capped on purpose, so
    :class:`ConvergenceWarning` is silenced; a run whose solver stopped at
    its cap shows status ``max_iter``.
    """
    from tqdm.auto import tqdm

    from .. import fine_tune
    from .. import prune
    from .. import sparsity

    methods = [check_choice(m, "method", METHODS) for m in methods]
    sparsities = [check_sparsity(s) for s in sparsities]
    budget = QUICK if quick else FULL
    X_train, y_train, X_test, y_test = mnist.load_mnist(seed)
    dense = mnist.trained_mlp(seed)
    X_test_t = torch.from_numpy(X_test)
    dense_logits = _logits(dense, X_test_t)
    calib = list(torch.from_numpy(X_train[: budget.n_calib]).split(500))
    train_set = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
    results = DemoResults(dense_accuracy=mnist.accuracy(dense, X_test, y_test), settings=budget.describe())

    runs = [(m, s) for m in methods for s in sparsities]
    bar = tqdm(runs, desc="demo", disable=not progress, unit="run")
    for method, target in bar:
        bar.set_postfix_str(f"{method} {target:.0%}")
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            report = prune(model, calib, method=layer_settings(model, method, budget), sparsity=target,
                           max_rows=budget.max_rows, seed=seed, progress=False)
        elapsed = time.perf_counter() - start
        acc_pruned = mnist.accuracy(model, X_test, y_test)
        logits = _logits(model, X_test_t)
        error = float(torch.linalg.norm(logits - dense_logits) / torch.linalg.norm(dense_logits))
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=FINE_TUNE_BATCH, shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        fine_tune(model, loader, epochs=1, lr=FINE_TUNE_LR)
        status = max((layer.status for layer in report.layers), key=STATUS_ORDER.index)
        results.rows.append(DemoRow(
            method=method, target=target, sparsity=sparsity(model).overall,
            acc_pruned=acc_pruned, acc_finetuned=mnist.accuracy(model, X_test, y_test),
            logit_error=error, time=elapsed, status=status,
        ))
    bar.close()
    return results


def format_table(results: DemoResults) -> str:
    """An aligned text table of the results, one line per (method, sparsity), settings underneath."""
    head = ("method", "target", "sparsity", "acc pruned", "acc +1 epoch", "logit error", "time (s)", "status")
    lines = [
        (r.method, f"{r.target:.1%}", f"{r.sparsity:.1%}", f"{r.acc_pruned:.1%}",
         f"{r.acc_finetuned:.1%}", f"{r.logit_error:.3f}", f"{r.time:.1f}", r.status)
        for r in results.rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]

    def fmt(cells):
        inner = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1])]
        return "  ".join([cells[0].ljust(widths[0]), *inner, cells[-1].ljust(widths[-1])]).rstrip()

    rule = "-" * len(fmt(head))
    title = (f"784-300-100-10 ReLU network, MNIST subset: dense test accuracy {results.dense_accuracy:.1%} "
             "(1,000 test images)")
    notes = [
        "acc pruned / acc +1 epoch: test accuracy after pruning / after one epoch of masked fine-tuning",
        "logit error: ||logits - dense logits||_F / ||dense logits||_F on the test images",
        "time: pruning (capture + solves); status: worst solver status over the layers",
        "(max_iter: a solver stopped at the demo's iteration cap)",
    ]
    return "\n".join([title, rule, fmt(head), rule, *map(fmt, lines), rule, *notes, *textwrap.wrap(results.settings, 100)])


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


def main(*, quick: bool = False, out_dir="demo_out", methods=None, sparsities=None, seed: int = 0,
         progress: bool = True) -> DemoResults:
    """Run the demo, print the table and write :data:`PLOT_NAME` and :data:`RESULTS_NAME` into ``out_dir``."""
    if methods is None:
        methods = QUICK_METHODS if quick else METHODS
    if sparsities is None:
        sparsities = QUICK_SPARSITIES if quick else SPARSITIES
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = run(methods=methods, sparsities=sparsities, quick=quick, seed=seed, progress=progress)
    print(format_table(results))
    png = plot(results, out / PLOT_NAME)
    (out / RESULTS_NAME).write_text(results.to_json())
    print(f"plot: {png}\nresults: {out / RESULTS_NAME}")
    return results

