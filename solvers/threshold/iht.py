"""Accelerated iterative hard thresholding (IHT) for a layer under a sparsity pattern.

:func:`iht` validates, scales and starts the problem, runs the iteration of
:mod:`.iteration`, then refines the support (:mod:`.swaps`) and refits.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ..base.backend import (
    as_quadratic_any, check_start, intercept_for, is_foreign, like, loss, namespace, refuse_foreign,
    to_host, to_host_quadratic, zero_fraction,
)
from ..base.errors import ConvergenceWarning, ParameterError
from ..base.gram import Quadratic
from ..base.interrupt import interruptible
from ..base.patterns import Pattern, parse_pattern
from ..base.result import Result
from ..base.validation import check_bool, check_scalar
from .iteration import iterate, jacobi_scaling, target_energy
from .permutation import inverse_permutation, nm_permutation, permute_inputs
from .projection import support_mask
from .refit import _psd_solve, refit_quadratic
from .swaps import swap_refine


def initial_weights(q: Quadratic, pattern: Pattern, sparsity: float, sqrt_d: np.ndarray, W0: np.ndarray,
                    tol: float) -> np.ndarray:
    """The better of two refits (each the least-squares solution nearest to ``W0``): on the
    projection of ``W0`` by ``sqrt(d_i) |W0_ij|`` (the ``D``-norm projection, Wanda-like
    scores) and by ``|W0|`` (magnitude). The first is kept without trying the second when
    its loss is at most ``tol`` times :func:`.iteration.target_energy` (nothing gains more);
    the first, since its supports spread over the columns by the inputs' scale, is the one
    more often fitting every column exactly when samples are fewer than kept inputs."""
    xp = namespace(W0)
    best, best_loss = None, np.inf
    for scores in (sqrt_d[:, None] * xp.abs(W0), xp.abs(W0)):
        W, _ = refit_quadratic(q, support_mask(scores, pattern, sparsity), anchor=W0)
        f = loss(q, W)
        if f < best_loss:
            best, best_loss = W, f
        if best_loss <= tol * target_energy(q):
            break
    return best

def iht(
    X,
    Y=None,
    *,
    sparsity=None,
    pattern="unstructured",
    intercept: bool = True,
    W0=None,
    max_iter: int = 300,
    tol: float = 1e-6,
    refit: bool = True,
    debias_every: int = 0,
    permute: bool = False,
    swaps: bool = False,
) -> Result:
    """Sparse least squares under a pattern by accelerated iterative hard thresholding.

    Approximately solves the nonconvex problem
    ``min_{W in pattern, b} (1/2P) ||X W + 1 b^T - Y||_F^2``
    (``pattern`` and the counting rule as in :func:`project`).

    Parameters
    ----------
    X : array (n_samples, n_features) or GramStats
        Layer inputs, or accumulated statistics (then ``Y=None``). Arrays of
        any array-API library (e.g. torch tensors on a GPU) are solved on
        their device in their dtype, and ``W``, ``b`` come back as such
        arrays; there ``permute`` is refused and ``swaps`` runs on the host.
    Y : array (n_samples, n_outputs) or None
        Targets, e.g. the dense layer's pre-activations.
    sparsity : float in [0, 1) or None
        Target fraction of zeros (None for ``"n:m"`` patterns).
    pattern : str
        ``"unstructured"``, ``"per_output"``, ``"n:m"``, ``"input_rows"``, ``"output_columns"``.
    intercept : bool
        Fit an unpenalized bias.
    W0 : array (n_features, n_outputs), optional
        Weights to start from, e.g. the trained layer: the start is the better
        of the least-squares refits on the ``D``-norm projection (scores
        ``sqrt(G_ii) |W0_ij|``) and on ``project(W0)`` (magnitude pruning +
        refit).
        Without it, the same from the dense least-squares solution.
    max_iter : int
        Iteration limit.
    tol : float
        Stop when the support is unchanged and the loss decreased by less than
        ``tol`` times its value in one iteration.
    refit : bool
        Finish with least squares on the final support. Every refit (start,
        debias, finish) returns, of the minimizers on its support, the one
        nearest to ``W0``: with fewer samples than kept inputs the loss has
        many, and the others move the weights where the data never looked.
    debias_every : int >= 0
        Every ``debias_every`` iterations (0: never), replace the iterate by
        the least-squares solution on its support and drop the momentum; stop
        as soon as the step from such a point keeps its support (a fixed point
        of the iteration). Much faster to a stop, usually at a somewhat higher
        loss than the default run (see Notes).
    permute : bool
        For N:M patterns only: first reorder the inputs by
        :func:`nm_permutation` with scores ``sqrt(G_ii) |W0_ij|`` (``W0`` as
        above, or the dense least-squares solution), then solve in that order.
        The returned ``W`` is in the original input order, and
        ``info["permutation"]`` is the order ``perm`` in which the pattern
        holds: ``W[perm]`` is N:M in consecutive groups, and
        ``X[:, perm] @ W[perm] == X @ W``. To store the layer as N:M, reorder
        its inputs by ``perm`` (the previous layer's output channels, i.e. its
        weight's output dimension and its bias, or the input features) and
        keep ``W[perm]``.
    swaps : bool
        For entry-wise patterns (``"unstructured"``, ``"per_output"``, N:M):
        after the iteration, improve the support of every output column by
        exact exchanges of one kept and one dropped input of the same
        comparison group (:func:`~layertrim.solvers.threshold.swaps.swap_refine`) while
        an exchange lowers the refitted loss. Slower (seconds on a
        ``784 x 300`` layer), usually a much lower loss: the iteration stops
        at supports that no single step of it improves, but that a single
        exchange still does.

    Returns
    -------
    Result
        ``objective`` is the loss; ``history["objective"]`` the loss after each
        iteration; ``info`` holds ``loss_start``, ``loss_iht`` (before the
        final refit), ``restarts``, ``lipschitz`` (``L``), ``swap_moves``
        (exchanges made; 0 without ``swaps``), ``pattern``, ``sparsity`` and,
        with ``permute``, ``permutation``.

    Notes
    -----
    With ``f(W) = 1/2 tr(W^T G W) - tr(C^T W)`` (Gram form, centered when
    ``intercept``), the Jacobi scaling ``D = diag(G)``, ``L = lambda_max(D^-1/2
    G D^-1/2)`` and ``H_D`` the projection onto the pattern in the norm
    ``||V||_D^2 = sum_ij d_i V_ij^2`` (:func:`support_mask` with scores
    ``sqrt(d_i) |V_ij|``), each iteration is

    ``W_{k+1} = H_D(Z_k - D^-1 grad f(Z_k) / L)``,
    ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``,
    ``Z_{k+1} = W_{k+1} + (t_k - 1) / t_{k+1} (W_{k+1} - W_k)``.

    If the accelerated step raises the loss, the momentum is dropped
    (``t = 1``) and the plain step from ``W_k`` is taken instead. The plain step
    never raises the loss: since ``G <= L D``, ``H_D`` minimizes the upper bound
    ``f(W_k) + <grad, V - W_k> + L/2 ||V - W_k||_D^2`` over the pattern, which
    ``W_k`` belongs to. Hence the loss is monotone from the start, and the
    final refit (the minimum on the final support) can only lower it further.
    The scaling equalizes the step across inputs of very different variance
    (on MNIST, rarely lit border pixels) that a plain ``1/lambda_max(G)``
    step would barely move.
    The bias is ``b = y_mean - x_mean W``.
    With ``swaps``, each column's final support is then improved by exchanges
    that each lower its refitted loss, so the loss stays monotone.

    Stopping: (0) the start's loss is at most ``tol`` times ``f(0) = 1/2
    ||Y_c||_F^2`` (the loss of ``W = 0``): no weights lower it by more, since
    the loss is nonnegative, so the start is returned (and the second start
    candidate is not refitted). This is the rule when every column keeps more
    inputs than the data's rank (fewer samples than kept inputs): the refit
    interpolates the targets. (a) the support did not change in an iteration and the loss fell
    by less than ``tol`` times its value; (b) with ``debias_every = k``, every
    ``k`` iterations ``W`` is replaced by the least-squares solution on its
    support (hard thresholding pursuit; this cannot raise the loss) and
    ``t = 1``; if the next step selects the same support, ``W`` is a fixed
    point of the iteration (the gradient vanishes on the support, and no
    entry off it is large enough to enter) and the solver stops; (c)
    ``max_iter``, with a ConvergenceWarning. On an ill-conditioned layer the
    accelerated iteration keeps trading a few entries per iteration at a slowly
    falling loss, so (a) may take long; (b) stops early at a fixed point of the
    plain step, typically with a higher loss than many accelerated steps reach.
    """
    start = time.perf_counter()
    max_iter = check_scalar(max_iter, "max_iter", low=0, integer=True)
    tol = check_scalar(tol, "tol", low=0.0)
    debias_every = check_scalar(debias_every, "debias_every", low=0, integer=True)
    refit, permute, swaps = (check_bool(v, n) for v, n in ((refit, "refit"), (permute, "permute"), (swaps, "swaps")))
    pat = parse_pattern(pattern)
    s = pat.resolve_sparsity(sparsity)
    q = as_quadratic_any(X, Y, intercept=intercept)
    N, M = q.n_features, q.n_outputs
    _check_pattern(pat, N, M, permute=permute, swaps=swaps)
    refuse_foreign(q.G, "permute", permute)
    W0 = _psd_solve(q.G, q.C)[0] if W0 is None else check_start(W0, N, M, q.G)

    inv_d, sqrt_d, L_D = jacobi_scaling(q)
    q_orig, perm = q, None
    with interruptible():  # the selection, iteration and exchange kernels
        if permute:
            perm = nm_permutation(sqrt_d[:, None] * np.abs(W0), pat)
            q, W0, inv_d, sqrt_d = permute_inputs(q, perm), W0[perm], inv_d[perm], sqrt_d[perm]
        W_start = initial_weights(q, pat, s, sqrt_d, W0, tol)
        W, f, mask, history, status, info = iterate(
            q, W_start, inv_d, sqrt_d, L_D, pat, s, max_iter=max_iter, tol=tol, debias_every=debias_every,
            anchor=W0,
        )
        # the start is already the refit on its support: refit only after a move
        W, f, moves = _refine(q, W, f, mask, pat, swaps=swaps and L_D > 0, refit=refit and W is not W_start,
                              anchor=W0)

    if status == "max_iter":
        warnings.warn(
            f"iht stopped after max_iter={max_iter} iterations before the support settled "
            f"(tol={tol:g}); the result is feasible and no worse than the start",
            ConvergenceWarning,
            stacklevel=2,
        )
    info.update(swap_moves=moves, pattern=str(pat), sparsity=zero_fraction(W))
    if perm is not None:
        W = W[inverse_permutation(perm)]
        info["permutation"] = perm
    b = intercept_for(q_orig, W)
    xp = namespace(W)
    return Result(
        W=xp.astype(W, q.dtype),
        b=None if b is None else xp.astype(b, q.dtype),
        status=status,
        objective=f,
        iterations=len(history),
        time=time.perf_counter() - start,
        history={"objective": np.asarray(history)},
        info=info,
    )


def _check_pattern(pattern: Pattern, n_features: int, n_outputs: int, *, permute: bool, swaps: bool) -> None:
    """The pattern fits the layer and the options that need a kind of pattern have it."""
    pattern.check_shape(n_features, n_outputs)
    if permute and pattern.kind != "n:m":
        raise ParameterError(f"permute=True needs an N:M pattern such as '2:4', got {pattern}")
    if swaps and pattern.kind not in ("unstructured", "per_output", "n:m"):
        raise ParameterError(f"swaps=True needs an entry-wise pattern (unstructured, per_output, N:M), got {pattern}")


def _refine(q: Quadratic, W, f, mask, pattern: Pattern, *, swaps: bool, refit: bool, anchor):
    """Exchange refinement of the support (``swaps``; on the host for foreign arrays), then
    least squares on it (nearest to ``anchor``) if that is no worse; returns
    ``(W, loss, exchanges made)``."""
    moves = 0
    if swaps:
        N = q.n_features
        groups = np.arange(N) // pattern.m if pattern.kind == "n:m" else np.zeros(N, dtype=np.int64)
        refined, moves = swap_refine(to_host_quadratic(q), to_host(mask), groups)
        mask = like(refined, mask) if is_foreign(mask) else refined
    if refit or moves:
        W_ref, _ = refit_quadratic(q, mask, anchor=anchor, start=W)
        f_ref = loss(q, W_ref)
        if f_ref <= f:
            W, f = W_ref, f_ref
    return W, f, moves
