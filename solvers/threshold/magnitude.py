"""Magnitude pruning of given weights, optionally followed by a least-squares refit."""
from __future__ import annotations

import time

import numpy as np

from ..base.errors import ParameterError, ShapeError
from ..base.gram import as_quadratic
from ..base.patterns import parse_pattern
from .permutation import inverse_permutation, nm_permutation
from .projection import check_scores, support_mask
from .refit import refit_quadratic
from ..base.result import Result
from ..base.validation import check_array, check_bool, check_scalar


def magnitude(
    W,
    *,
    sparsity=None,
    pattern="unstructured",
    scores=None,
    X=None,
    Y=None,
    refit: bool = False,
    b=None,
    intercept: bool = True,
    ridge: float = 0.0,
    permute: bool = False,
) -> Result:
    """Hard thresholding of trained weights: ``W_T = project(W)``, then optionally refit on ``T``.

    Without data the result is the projection and ``objective`` is the squared
    distance ``1/2 ||W - W_T||_F^2``. With data ``(X, Y)`` (or a GramStats as
    ``X``) the objective is the layer loss ``(1/2P) ||X W_T + 1 b^T - Y||_F^2``
    (plus ``ridge/2 ||W_T - project(W)||^2`` after a refit).

    Parameters
    ----------
    W : array (n_features, n_outputs)
        Trained weights.
    sparsity, pattern, scores
        As in :func:`project`.
    X, Y : arrays (n_samples, n_features), (n_samples, n_outputs), or GramStats and None
        Layer data; required when ``refit`` is True.
    refit : bool
        Replace the kept weights by least squares on the support (:func:`refit`);
        of its minimizers (many with fewer samples than kept inputs), the one
        nearest to ``W``.
    b : array (n_outputs,), optional
        The layer's bias, kept as is when not refitting. When None and
        ``intercept`` is True, the bias is set to its optimal value for the
        projected weights (it is never pruned).
    intercept : bool
        Whether the layer has a bias.
    ridge : float >= 0
        Ridge of the refit, toward the kept trained weights.
    permute : bool
        For N:M patterns only: choose the groups after reordering the inputs by
        :func:`nm_permutation` of the scores. ``W`` stays in the original
        input order; ``info["permutation"]`` is the order ``perm`` in which
        the pattern holds (``W[perm]`` is N:M in consecutive groups,
        ``X[:, perm] @ W[perm] == X @ W``). To store the layer as N:M, reorder
        its inputs by ``perm`` (the previous layer's output channels, or the
        input features) and keep ``W[perm]``.

    Returns
    -------
    Result
        ``info`` holds ``mask``, ``pattern``, ``sparsity``, with data ``loss``,
        with ``permute`` ``permutation``.
    """
    start = time.perf_counter()
    W = check_array(W, "W")
    if b is not None:  # checked whether or not it is used (with refit=True it is replaced)
        b = check_array(b, "b", ndim=1)
        if b.shape != (W.shape[1],):
            raise ShapeError(
                f"b must have one entry per output (column of W): shape ({W.shape[1]},), got {b.shape}"
            )
    ridge = check_scalar(ridge, "ridge", low=0.0)
    refit, permute = check_bool(refit, "refit"), check_bool(permute, "permute")
    pat = parse_pattern(pattern)
    s = pat.resolve_sparsity(sparsity)
    S = np.abs(W) if scores is None else check_scores(scores, W.shape, W.dtype)
    info = {"pattern": str(pat)}
    if permute:
        if pat.kind != "n:m":
            raise ParameterError(f"permute=True needs an N:M pattern such as '2:4', got {pat}")
        perm = nm_permutation(S, pat)
        mask = support_mask(S[perm], pat, s)[inverse_permutation(perm)]
        info["permutation"] = perm
    else:
        mask = support_mask(S, pat, s)
    Wp = np.where(mask, W, W.dtype.type(0))
    info.update(mask=mask, sparsity=float(np.mean(~mask)))
    if X is None:
        if refit or Y is not None:
            raise ParameterError("refit and Y need layer data X (samples or GramStats)")
        diff = (W - Wp).astype(np.float64)
        return Result(
            W=Wp, b=None if b is None else b.astype(W.dtype), status="optimal",
            objective=0.5 * float(np.sum(diff * diff)), iterations=1,
            time=time.perf_counter() - start, info=info,
        )
    q = as_quadratic(X, Y, intercept=intercept)
    if (q.n_features, q.n_outputs) != W.shape:
        raise ShapeError(f"W must have shape ({q.n_features}, {q.n_outputs}) to match the data, got {W.shape}")
    if refit:
        W64, extra = refit_quadratic(q, mask, ridge, anchor=W)
        info.update(extra)
        bias = q.intercept_for(W64)
        loss = q.loss(W64)
        objective = loss + 0.5 * ridge * float(np.sum((W64 - Wp) ** 2))
    else:
        W64 = Wp.astype(np.float64)
        loss = q.loss(W64)
        bias = q.intercept_for(W64)
        if b is not None:
            if not intercept:
                raise ParameterError("b was given with intercept=False")
            given = b.astype(np.float64)  # shape checked above; W matches the data
            # centered loss + the cost of a bias offset from the optimal one
            loss += 0.5 * float(np.sum((given - bias) ** 2))
            bias = given
        objective = loss
    info["loss"] = loss
    return Result(
        W=W64.astype(q.dtype),
        b=None if bias is None else bias.astype(q.dtype),
        status="optimal",
        objective=objective,
        iterations=1,
        time=time.perf_counter() - start,
        info=info,
    )
