"""Prune a torch model layer by layer with the core solvers.

Each chosen layer ``l`` (with ``g`` groups) is the problem
``min_W  penalty(W)  s.t./+  fit(X_l W + 1 b^T, Y_l)`` of its method (see
:mod:`layertrim.bindings.methods`), where ``Y_l`` is the dense network's output of the layer
and ``X_l`` its input: from the dense network (``scheme="parallel"``) or from
the network whose preceding layers are already pruned (``scheme="cascade"``,
layers taken in execution order, so that later layers compensate the error of
earlier ones).

The solved values are written into the weights, then the support is registered
with ``torch.nn.utils.prune.custom_from_mask``: the module gets
``weight_orig`` and a ``weight_mask`` buffer, and masked entries stay zero
during fine-tuning. :func:`make_permanent` folds them back into plain weights.
The whole call is atomic: on any exception (including KeyboardInterrupt) the
model's parameters, buffers, hooks and structure are restored before the
exception propagates.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune as torch_prune

from layertrim.solvers.base.validation import check_choice, check_scalar

from ..methods import get_method
from .attention import explicit_attention
from .batches import first_samples, first_tokens, reusable
from .capture import capture, find_layers
from .cascade import solve_cascade
from .in_projection import cross_attention_layers
from .layer_solve import PendingLayer, finish_layer, set_values, start_layer
from .layers import refused_layers, weight_site
from .report import PruneReport
from .preflight import check_forward, check_layers, check_model
from .settings import layer_specs, pattern_misfits, per_layer, tied_layers
from .snapshot import ModelSnapshot
from .tasks import TaskPool

SCHEMES = ("cascade", "parallel")


def _write_layer(module, W, b):
    """Solved values first, then the support as a ``torch.nn.utils.prune`` mask.

    A mask from an earlier pruning is folded in first and replaced: the
    solver started from the masked weights, and the new support is the whole
    truth (the model then has exactly the zeros the report counts).
    """
    owner, attr = weight_site(module)  # the attention module's ``in_proj_weight`` for an in-projection
    if hasattr(owner, attr + "_mask"):
        torch_prune.remove(owner, attr)
    set_values(module, W, b)
    torch_prune.custom_from_mask(owner, attr, (W != 0).to(module.weight.device))


def prune(
    model: nn.Module,
    data,
    *,
    method="l0",
    sparsity=None,
    eps=None,
    lam=None,
    pattern="unstructured",
    scheme: str = "cascade",
    layers=None,
    max_rows: int = 20000,
    refit: bool = True,
    damping: float = 0.0,
    progress: bool = True,
    executor=None,
    relu=None,
    gamma: float = 1.1,
    seed: int = 0,
    ignore=None,
    num_samples: int | None = None,
    max_tokens: int | None = None,
    strict: bool = False,
    blocks: bool = True,
    column_blocks: int = 1,
    **solver_options,
) -> PruneReport:
    """Prune ``model``'s Linear/Conv layers in place; return a :class:`PruneReport`.

    Parameters
    ----------
    model : nn.Module
        Pruned in place (weights solved, masks registered).
    data : iterable
        Calibration batches: tensors, ``(inputs, targets)`` tuples (``inputs``
        a tensor, a tuple of positional arguments or a dict), dicts or
        ``BatchEncoding`` s called as ``model(**batch)``; a DataLoader of any
        of these (:mod:`.batches`; an ``attention_mask`` drops padded
        positions). A one-shot iterator is first stored in a list.
    method : str or dict
        A registered method (:func:`~layertrim.bindings.methods.registered_methods`:
        ``"l0"`` (the default: the lowest layer error for a target sparsity),
        ``"magnitude"``, ``"iht"``, ``"lasso"``, ``"group_lasso"``,
        ``"nettrim"``, ``"feta"``, the baselines ``"wanda"`` and
        ``"sparsegpt"``, and any added by
        :func:`~layertrim.bindings.methods.register_method`); or a dict layer name -> method name, or
        layer name -> dict of per-layer settings (``method``, ``sparsity``,
        ``eps``, ``lam``, ``pattern``, ``refit``, solver options).
    sparsity, eps, lam : float or dict layer -> float
        (dict keys may be globs or ``re:`` regexes: ``{"*.mlp.*": 0.6, "*.self_attn.*": 0.4}``)
        Per-layer target (exactly one, as the method accepts): fraction of
        zero weights; Net-Trim's relative error budget ``eps`` (of
        ``||Y||_F``); the lasso/FeTa weight ``lam``.
    pattern : str
        Sparsity pattern of magnitude/iht (``"unstructured"``, ``"per_output"``,
        ``"2:4"``, ``"input_rows"``, ``"output_columns"``).
    scheme : {"cascade", "parallel"}
        Inputs from the already-pruned network, or all from the dense one.
    layers : str or list of str, optional
        Exact names, globs (``"model.layers.*.mlp.*"``) or ``"re:"`` regexes
        (:mod:`.selection`); default every prunable layer but a language
        model's ``lm_head``, or the keys of a ``method`` dict.
    ignore : str or list of str, optional
        Selectors of layers to leave out.
    num_samples : int, optional
        Use only the first ``num_samples`` calibration samples (sequences,
        images); the batch that crosses the bound is cut.
    max_tokens : int, optional
        Then use only the first whole samples holding at most ``max_tokens``
        tokens in all (the ones of the ``attention_mask``, else the length of
        the ``(B, T)`` input).
    max_rows : int
        Row sample per layer for the row-based methods (Net-Trim, FeTa).
    refit : bool
        Least-squares refit of the solved support (squared-loss methods, and
        Net-Trim on layers without ReLU).
    damping : float >= 0
        With ``damping > 0`` the final weights are the refit on the method's
        support with the ridge ``lam = damping * mean(diag(G))`` toward the
        trained weights, ``min (1/2P)||X W + 1 b^T - Y||^2 + lam/2 ||W - W0||^2``
        (``G = X_c^T X_c / P``; SparseGPT's ``percdamp`` plays the same role).
        It bounds how far an ill-conditioned or underdetermined layer (few
        calibration rows, nearly collinear inputs) moves away from what it was
        trained to compute; 0 is the exact least-squares refit. Applies to the
        methods that end with a least-squares refit (magnitude, lasso, iht,
        l0, Net-Trim off ReLU); the baselines and post-ReLU fits are left as
        they are.
    progress : bool
        A tqdm bar over layers.
    executor : concurrent.futures.Executor or dask.distributed.Client, optional
        Where the layer problems are solved (:mod:`.tasks`): every layer at
        once in the parallel scheme, the layers that share an input (and
        their column blocks) at once in the cascade. A Dask client spreads a
        large model over the machines of a cluster; the Gram statistics go
        to each worker once, and a task whose worker dies is resubmitted.
    relu : dict layer -> bool, optional
        Overrides whether a ReLU follows a layer (auto-detected in
        ``nn.Sequential``).
    gamma : float
        Net-Trim cascade slack (see :mod:`layertrim.bindings.methods.nettrim`).
    seed : int
        Seed of the row sampling.
    strict : bool
        A layer that cannot hold the pattern (N:M on an input count that is
        not a multiple of M) is an error; by default it is left dense and
        listed in ``PruneReport.skipped``.
    blocks : bool
        Run the cascade block by block from cached block inputs
        (:mod:`.cascade`); ``False`` captures every layer over the whole
        network (same result, cost quadratic in depth).
    column_blocks : int >= 1
        Split every layer's outputs into this many blocks solved as separate
        tasks (on ``executor``), then stitched. Only for the methods and
        patterns that solve each output column on its own (``Method.separable``:
        magnitude and sparsegpt with per-output and N:M patterns, wanda), so
        the result equals the unsplit solve; others raise ParameterError.
    **solver_options
        Passed to every solver call (``tol``, ``max_iter``, ...).

    Returns
    -------
    PruneReport

    Notes
    -----
    Cascade: for layer ``l`` in execution order, ``X_l`` is captured from
    the model whose layers ``< l`` already hold their solved weights, ``Y_l``
    from the same model with those layers at their dense values (no copy of
    the model). Inside the model's chain of blocks this runs block by block
    from cached block inputs (:mod:`.cascade`: cost linear in depth); other
    layers take one pass over ``data`` each.
    Parallel: one pass captures every layer from the dense model. The masks
    are registered after every layer is solved; on any failure the model is
    restored.
    """
    start = time.perf_counter()
    check_choice(scheme, "scheme", SCHEMES)
    gamma = check_scalar(gamma, "gamma", low=1.0)
    if isinstance(method, dict) and layers is None:
        layers = list(method)
    check_model(model)
    found = find_layers(model, layers, ignore)
    skipped = refused_layers(found)
    check_layers({n: m for n, m in found.items() if n not in skipped})
    skipped.update(tied_layers(model, [n for n in found if n not in skipped]))
    method, sparsity, eps, lam, relu = (per_layer(v, list(found), what) for v, what in (
        (method, "method"), (sparsity, "sparsity"), (eps, "eps"), (lam, "lam"), (relu, "relu")))
    if isinstance(method, str):
        get_method(method)
    specs = layer_specs(
        [n for n in found if n not in skipped], method=method, sparsity=sparsity, eps=eps, lam=lam,
        pattern=pattern, refit=refit, damping=damping, solver_options=solver_options,
    )
    skipped.update(pattern_misfits(found, specs, strict))
    names = [n for n in found if n not in skipped]
    specs = OrderedDict((n, specs[n]) for n in names)
    if num_samples is not None:
        num_samples = check_scalar(num_samples, "num_samples", low=1, integer=True)
    column_blocks = check_scalar(column_blocks, "column_blocks", low=1, integer=True)
    if column_blocks > 1:
        for name, spec in specs.items():
            get_method(spec.method).check_separable(spec.pattern, name)
    pool = TaskPool(executor)
    if max_tokens is not None:
        max_tokens = check_scalar(max_tokens, "max_tokens", low=1, integer=True)
    data = first_tokens(first_samples(reusable(data), num_samples), max_tokens)
    run = _Run(found=found, specs=specs, data=data, max_rows=max_rows, seed=seed, relu=relu, gamma=gamma,
               pool=pool, column_blocks=column_blocks)
    with explicit_attention():
        check_forward(model, run.data)
        skipped.update(cross_attention_layers(model, {n: found[n] for n in names}, run.data))
        names = [n for n in names if n not in skipped]
        solved, engine = _solve_all(model, run, names, scheme=scheme, progress=progress, blocks=blocks)
    return PruneReport(layers=[solved[n][2] for n in names], scheme=scheme, time=time.perf_counter() - start,
                       skipped=skipped, engine=engine)


def _solve_all(model, run, names, *, scheme, progress, blocks) -> tuple:
    """Solve and write every layer; on any exception the model is restored first."""
    snapshot = ModelSnapshot(model)
    try:
        from tqdm.auto import tqdm

        with tqdm(total=len(names), desc="prune", disable=not progress, leave=False) as bar:
            if scheme == "cascade":
                solved, engine = solve_cascade(model, run, names, snapshot, bar, blocks=blocks)
            else:
                solved, engine = _solve_parallel(model, run, names, bar), {"network_passes": 1}
        for name in names:
            W, b, _ = solved[name]
            _write_layer(run.found[name], W, b)
    except BaseException:
        snapshot.restore()
        raise
    return solved, engine


@dataclass(frozen=True)
class _Run:
    """The settings every layer solve of one :func:`prune` call shares."""

    found: dict
    specs: dict
    data: object
    max_rows: int
    seed: int
    relu: object
    gamma: float
    pool: TaskPool
    column_blocks: int

    def modes(self) -> dict:
        return {n: s.mode for n, s in self.specs.items()}

    def start(self, name, data, *, cascade: bool) -> PendingLayer:
        """Submit layer ``name``'s tasks on ``data`` (its captured :class:`LayerData`)."""
        return start_layer(name, self.found[name], self.specs[name], data, cascade=cascade, gamma=self.gamma,
                           pool=self.pool, blocks=self.column_blocks)


def _solve_parallel(model, run: _Run, names, bar) -> OrderedDict:
    """One capture of every layer from the dense model; every layer's tasks submitted at once."""
    captured = capture(model, run.data, layers=names, mode=run.modes(), max_rows=run.max_rows, seed=run.seed,
                       relu=run.relu)
    pending = {n: run.start(n, captured[n], cascade=False) for n in names}
    solved = OrderedDict()
    for name in names:
        bar.set_postfix_str(name)
        solved[name] = finish_layer(pending[name])
        bar.update()
    return solved
