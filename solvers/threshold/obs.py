"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning by a blocked optimal-brain-surgeon sweep.

The layer problem is ``min_{W in pattern} ||X (W - W0)||_F^2``: reconstruct the
dense layer's outputs on the calibration inputs. Its Hessian is ``H = X^T X``
(uncentered; the paper writes ``2 X X^T`` with features as rows, the factor does
not change the result). The inputs (rows of ``W``) are visited in order; each
one is either kept or pruned, and its pruning error is spread onto the inputs
not yet visited by the OBS update, computed for all outputs at once from one
Cholesky factor.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from ..base.errors import ParameterError, ShapeError
from ..base.gram import GramStats
from ..base.patterns import Pattern, n_zeros, parse_pattern
from ..base.result import Result
from ..base.validation import check_array, check_finite_moments, check_scalar, check_xy
from .projection import topk_in_groups
from .refit import check_mask

#: pattern kinds SparseGPT selects masks for (entry-wise ones)
PATTERNS = ("unstructured", "per_output", "n:m")


def second_moment(X, Y=None):
    """``(H, P, dtype)``: uncentered ``X^T X`` in float64, the sample count and the data's dtype.

    ``X`` is a :class:`GramStats` (then ``Y=None``) or an array ``(P, N)``; ``Y``,
    when given with an array, is only validated against it.
    """
    if isinstance(X, GramStats):
        if Y is not None:
            raise ShapeError("pass either GramStats alone or arrays (X, Y), not both")
        H = X.xtx()  # EmptyDataError when nothing was accumulated
        check_finite_moments("GramStats", xtx=H)
        return H, X.n_samples, X.dtype
    Xc = check_xy(X, Y)[0] if Y is not None else check_array(X, "X")
    Xd = Xc.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        H = Xd.T @ Xd
    check_finite_moments("X", xtx=H)
    return H, Xc.shape[0], Xc.dtype


def inverse_hessian_factor(H: np.ndarray, percdamp: float):
    """``(U, dead, lam)``: the upper Cholesky factor ``U`` of ``(H + lam I)^-1`` (``U^T U``
    equals it), the inputs with ``H_ii = 0`` and ``lam = percdamp * mean(diag H)``.

    A dead input (never non-zero in the data) is decoupled from the others; its
    diagonal entry is set to 1 so that the matrix stays positive definite.
    """
    H = np.array(H, dtype=np.float64)
    K = H.shape[0]
    diag = np.diag(H)
    dead = diag == 0
    lam = percdamp * float(np.mean(diag))
    idx = np.flatnonzero(dead)
    H[idx, idx] = 1.0
    H[np.diag_indices(K)] += lam
    try:
        Hinv = cho_solve(cho_factor(H, lower=True, check_finite=False), np.eye(K), check_finite=False)
        U = np.linalg.cholesky(0.5 * (Hinv + Hinv.T)).T
    except (LinAlgError, np.linalg.LinAlgError):
        raise ParameterError(
            f"X^T X + lam I (lam = percdamp * mean(diag) = {lam:.3g}) is not positive definite in float64: "
            "the inputs are (numerically) collinear; raise percdamp (default 0.01)"
        ) from None
    return U, dead, lam


def _block_keep(scores: np.ndarray, pattern: Pattern, sparsity: float, i1: int, i2: int) -> np.ndarray:
    """Kept entries of the block of inputs ``[i1, i2)`` (scores ``(i2-i1, M)``): the largest
    scores, with as many zeros as ``ceil(s * (entries up to i2)) - ceil(s * (entries up to i1))``,
    over the whole block (``"unstructured"``) or per output (``"per_output"``)."""
    B, M = scores.shape
    if pattern.kind == "unstructured":
        z = n_zeros(sparsity, i2 * M) - n_zeros(sparsity, i1 * M)
        return topk_in_groups(scores.reshape(1, -1), B * M, B * M - z).reshape(B, M)
    z = n_zeros(sparsity, i2) - n_zeros(sparsity, i1)
    return np.ascontiguousarray(topk_in_groups(np.ascontiguousarray(scores.T), B, B - z).T)


def obs_sweep(W, U, pattern: Pattern, sparsity: float, blocksize: int, fixed=None):
    """The SparseGPT sweep, in place on ``W (K, M)`` (float64); returns ``(keep, sum of OBS errors)``.

    ``fixed`` (a kept-mask) replaces the mask selection. See :func:`sparsegpt`, Notes.
    """
    K, M = W.shape
    keep = np.zeros((K, M), dtype=bool) if fixed is None else fixed
    total = 0.0
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1, U1 = W[i1:i2].copy(), U[i1:i2, i1:i2]
        d = np.diag(U1).copy()
        if fixed is None and pattern.kind != "n:m":
            keep[i1:i2] = _block_keep((W1 / d[:, None]) ** 2, pattern, sparsity, i1, i2)
        E1 = np.zeros_like(W1)
        for r in range(i2 - i1):
            if fixed is None and pattern.kind == "n:m" and r % pattern.m == 0:
                g = slice(r, r + pattern.m)  # the group's weights are up to date: it lies in the block
                S = np.ascontiguousarray(((W1[g] / d[g, None]) ** 2).T)
                keep[i1 + r : i1 + r + pattern.m] = topk_in_groups(S, pattern.m, pattern.n).T
            w = W1[r]
            q = np.where(keep[i1 + r], w, 0.0)
            err = (w - q) / d[r]
            W1[r + 1 :] -= np.outer(U1[r, r + 1 :], err)
            W1[r] = q
            E1[r] = err
        W[i1:i2] = W1
        W[i2:] -= U[i1:i2, i2:].T @ E1  # the lazy update of the inputs after the block
        total += float(np.sum(E1 * E1))
    return keep, total


def _check_options(pattern, sparsity, mask, K, M, blocksize, percdamp):
    """Validated ``(pattern, sparsity, fixed mask or None, effective block size, percdamp)``."""
    blocksize = check_scalar(blocksize, "blocksize", low=1, integer=True)
    percdamp = check_scalar(percdamp, "percdamp", low=0.0)
    pat = parse_pattern(pattern)
    if mask is not None:
        if sparsity is not None:
            raise ParameterError("give either mask= (a fixed support) or sparsity=, not both")
        return pat, None, check_mask(mask, K, M), blocksize, percdamp
    if pat.kind not in PATTERNS:
        raise ParameterError(f"sparsegpt selects entry-wise patterns {PATTERNS}, got {pat}")
    s = pat.resolve_sparsity(sparsity)
    pat.check_shape(K, M)
    if pat.kind == "n:m":  # every group of m inputs inside one block
        blocksize = -(-blocksize // pat.m) * pat.m
    return pat, s, None, blocksize, percdamp


def sparsegpt(
    X,
    Y=None,
    *,
    sparsity=None,
    pattern="unstructured",
    W0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    mask=None,
) -> Result:
    """SparseGPT: prune ``W0`` under a pattern, updating the kept weights to reconstruct ``X W0``.

    Approximately solves ``min_{W in pattern} (1/2P) ||X (W - W0)||_F^2`` in one
    pass (no refit, no iterations). The bias is not touched: ``Result.b`` is
    None and the layer keeps its own (SparseGPT leaves it as it is).

    Parameters
    ----------
    X : array (n_samples, n_features) or GramStats
        Calibration inputs of the layer, or their statistics (only the
        uncentered ``X^T X`` is used).
    Y : array (n_samples, n_outputs) or None
        Not used by the method (the target is ``X W0``); validated when given.
    sparsity : float in [0, 1) or None
        Target fraction of zeros (None for N:M).
    pattern : {"unstructured", "per_output", "n:m" such as "2:4"}
        The pattern; for ``"unstructured"`` the mask is chosen per block of
        inputs (the paper's adaptive mask selection), for ``"per_output"`` per
        block and output, for N:M per group of ``m`` inputs and output.
    W0 : array (n_features, n_outputs)
        The dense weights.
    blocksize : int >= 1
        Inputs per lazy-update block (the paper's ``B = B_s = 128``). For N:M it
        is rounded up to a multiple of ``m``.
    percdamp : float >= 0
        Dampening: ``H + lam I`` with ``lam = percdamp * mean(diag(H))``.
    mask : bool array (n_features, n_outputs), optional
        A fixed support (True = kept) instead of the mask selection: only the
        OBS updates run (e.g. a Wanda mask with SparseGPT's weight update).
        Then ``sparsity`` must be None and ``pattern`` is not used.

    Returns
    -------
    Result
        ``W`` in the data's dtype; ``objective`` and ``info["loss"]`` are
        ``(1/2P) ||X (W - W0)||_F^2``; ``info`` also holds ``obs_loss`` (the sum
        of the OBS errors over ``2P``: that loss with ``H + lam I``), ``mask``,
        ``pattern``, ``sparsity``, ``damping`` (``lam``), ``blocksize``.

    Notes
    -----
    With ``U`` upper triangular and ``U^T U = (H + lam I)^-1``, the inverse
    Hessian of the inputs ``F = {i, ..., K-1}`` not yet visited has first
    column ``U_ii U[i, F]^T`` and corner ``U_ii^2``. Visiting input ``i``,
    every output's weight ``w = W[i, m]`` becomes ``q = w`` (kept) or ``0``
    (pruned), and the OBS update ``W[F, m] -= (w - q) / U_ii * U[i, F]``
    minimizes the error over the weights still free; its cost is
    ``((w - q) / U_ii)^2``. Masks are chosen by that cost, the weights with
    the smallest ``w^2 / U_ii^2`` being pruned, with the weights as updated
    when their block (N:M: their group) is reached. Within a block of ``B``
    inputs the updates are applied at once; the rest of ``W`` receives the
    block's errors ``E`` as ``W[i2:] -= U[i1:i2, i2:]^T E`` after the block, which
    is the same arithmetic reordered. Exact counts: block ``[i1, i2)`` zeroes
    ``ceil(s * i2 M) - ceil(s * i1 M)`` entries (per output:
    ``ceil(s i2) - ceil(s i1)``), so the whole layer has ``ceil(s K M)``
    (``ceil(s K)`` per output), the counting rule of every pattern.
    Weights of dead inputs (``H_ii = 0``) are set to zero first.
    """
    start = time.perf_counter()
    H, P, dtype = second_moment(X, Y)
    K = H.shape[0]
    W0 = check_array(W0, "W0", dtype=np.float64)
    if W0.shape[0] != K:
        raise ShapeError(f"W0 must have one row per input: {K} rows to match the data, got shape {W0.shape}")
    M = W0.shape[1]
    pat, s, fixed, B, percdamp = _check_options(pattern, sparsity, mask, K, M, blocksize, percdamp)
    U, dead, lam = inverse_hessian_factor(H, percdamp)
    W = W0.copy()
    W[dead] = 0.0
    keep, total = obs_sweep(W, U, pat, s, B, fixed)
    D = W - W0
    loss = 0.5 * float(np.sum(D * (H @ D))) / P
    info = {
        "mask": keep, "pattern": "fixed" if fixed is not None else str(pat),
        "sparsity": float(np.mean(~keep)), "loss": loss, "obs_loss": 0.5 * total / P,
        "damping": lam, "blocksize": B,
    }
    return Result(
        W=W.astype(dtype), b=None, status="optimal", objective=loss, iterations=-(-K // B),
        time=time.perf_counter() - start, info=info,
    )
