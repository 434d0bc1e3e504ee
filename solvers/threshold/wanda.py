"""Wanda (Sun et al., 2023): prune by weight magnitude times input norm, per output, no update."""
from __future__ import annotations

import time

import numpy as np

from ..base.errors import ParameterError, ShapeError
from ..base.gram import GramStats
from ..base.patterns import Pattern, parse_pattern
from ..base.result import Result
from ..base.validation import check_array, check_finite_moments
from .projection import support_mask

#: pattern kinds Wanda honours; "unstructured" is compared per output, as in the paper
PATTERNS = ("unstructured", "per_output", "n:m")


def _norms_and_loss(X, n_features: int):
    """``(||x_i||^2 for every input, loss function of D = W - W0, dtype)`` from GramStats or rows."""
    if isinstance(X, GramStats):
        H = X.xtx()  # EmptyDataError when nothing was accumulated
        check_finite_moments("GramStats", xtx=H)
        sq, P, dtype = np.diag(H).copy(), X.n_samples, X.dtype

        def loss(D):
            return 0.5 * float(np.sum(D * (H @ D))) / P
    else:
        Xc = check_array(X, "X")
        Xd, P, dtype = Xc.astype(np.float64, copy=False), Xc.shape[0], Xc.dtype
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            sq = np.einsum("ij,ij->j", Xd, Xd)
        check_finite_moments("X", squared_norms=sq)

        def loss(D):
            R = Xd @ D
            return 0.5 * float(np.sum(R * R)) / P
    if sq.shape[0] != n_features:
        raise ShapeError(f"W0 has {n_features} rows (inputs) but the data has {sq.shape[0]} features")
    return sq, loss, dtype


def wanda(W0, X, *, sparsity=None, pattern="unstructured") -> Result:
    """Wanda: keep, for every output, the inputs with the largest ``|W0_ij| * ||x_i||_2``.

    ``W`` is ``W0`` with the other weights set to zero (no weight update, no
    refit); ``||x_i||_2`` is the norm of input ``i`` over the calibration
    samples (uncentered: ``sqrt((X^T X)_ii)``). The bias is not touched
    (``Result.b`` is None).

    Parameters
    ----------
    W0 : array (n_features, n_outputs)
        The dense weights.
    X : array (n_samples, n_features) or GramStats
        Calibration inputs, or their statistics (the diagonal of ``X^T X``).
    sparsity : float in [0, 1) or None
        Target fraction of zeros (None for N:M).
    pattern : {"unstructured", "per_output", "n:m" such as "2:4"}
        ``"unstructured"`` and ``"per_output"`` both compare the inputs of each
        output separately (the paper's comparison group): ``ceil(s n_features)``
        zeros per output. N:M: ``n`` kept in each group of ``m`` consecutive
        inputs of every output.

    Returns
    -------
    Result
        ``W`` in the data's dtype; ``objective`` and ``info["loss"]`` are
        ``(1/2P) ||X (W - W0)||_F^2``; ``info`` also holds ``mask``,
        ``pattern`` and ``sparsity``.

    Notes
    -----
    Score ``S_ij = |W0_ij| sqrt(G_ii)`` with ``G = X^T X``; per output ``j`` the
    largest ``S_ij`` are kept (ties: the lower input index). Keeping the largest
    ``S_ij`` is the same as keeping the largest ``S_ij^2 = G_ii W0_ij^2``, the
    increase of ``||X (W - W0)||^2`` from removing ``W0_ij`` alone when the
    inputs are uncorrelated: the weights are compared by their diagonal OBS
    cost without any update.
    """
    start = time.perf_counter()
    W0 = check_array(W0, "W0", dtype=np.float64)
    sq, loss_of, dtype = _norms_and_loss(X, W0.shape[0])
    pat = parse_pattern(pattern)
    if pat.kind not in PATTERNS:
        raise ParameterError(f"wanda compares the inputs of each output: patterns {PATTERNS}, got {pat}")
    s = pat.resolve_sparsity(sparsity)
    group = Pattern("per_output") if pat.kind == "unstructured" else pat
    mask = support_mask(np.abs(W0) * np.sqrt(sq)[:, None], group, s)
    W = np.where(mask, W0, 0.0)
    loss = loss_of(W - W0)
    info = {"mask": mask, "pattern": str(pat), "sparsity": float(np.mean(~mask)), "loss": loss}
    return Result(
        W=W.astype(dtype), b=None, status="optimal", objective=loss, iterations=1,
        time=time.perf_counter() - start, info=info,
    )
