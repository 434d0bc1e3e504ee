"""Held-out choice of each consumer's refit in :func:`.structured.prune_structured`.

The calibration samples are split (seeded) into a fit part and a validation
part. For every consumer, each candidate ridge ``r`` of :data:`RIDGES` gives
the refit of the fit part, ``min_{W,b} (1/2P)||X_S W + 1 b^T - Y_T||^2 +
(delta/2)||W - W0||^2`` with ``delta = r * mean diag(G_S)``; it is scored by
its mean squared error on the validation part, against the kept dense weights
``(W0, b0)`` left as they are. The winner (no refit on ties) is then refit on
all samples: a refit is never written that does worse on held-out samples
than not refitting.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from layertrim.solvers.base.errors import ParameterError

from .capture import capture
from .structured_select import lsq_keep, moments, output_energy

#: candidate ridges, relative to the data scale ``mean diag(G_S)`` (0: plain least squares)
RIDGES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
#: candidate ridges of the lsq channel choice (pulled toward the dense weights)
SELECT_RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1000.0)
#: fraction of the calibration samples held out to choose the ridge
VALIDATION_FRACTION = 0.2


def split_batches(batches, fraction: float, seed: int):
    """Fit and validation batches: a seeded ``fraction`` of the samples (whole images / rows) held out."""
    n = sum(len(b) for b in batches)
    n_val = int(round(fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise ParameterError(f"ridge='auto' holds out {fraction:.0%} of the calibration samples and needs at "
                             f"least one in each part; data has {n} samples (give more, or a float ridge)")
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    fit, val, start = [], [], 0
    for b in batches:
        mask = torch.from_numpy(held[start:start + len(b)])
        start += len(b)
        fit += [b[~mask]] if bool((~mask).any()) else []
        val += [b[mask]] if bool(mask.any()) else []
    return fit, val


def held_out_stats(model, batches, layers, seed: int):
    """``(stats, held)``: Gram statistics of every layer on all samples, and ``held[name] = (fit, val)``."""
    fit_b, val_b = split_batches(batches, VALIDATION_FRACTION, seed)
    fit = {n: d.groups[0] for n, d in capture(model, fit_b, layers=layers, mode="gram", seed=seed).items()}
    val = {n: d.groups[0] for n, d in capture(model, val_b, layers=layers, mode="gram", seed=seed).items()}
    stats = {n: copy.deepcopy(fit[n]).merge(val[n]) for n in fit}
    return stats, {n: (fit[n], val[n]) for n in fit}


def held_out_error(val, cols, outs, W: np.ndarray, b: np.ndarray) -> float:
    """``(1/P_v)||X_S W + 1 b^T - Y_T||_F^2`` on the validation samples, from their centered moments.

    With centered ``G = Sxx/P``, ``C = Sxy/P`` and means ``x, y``: ``tr(W^T G W)
    - 2 tr(W^T C) + sum(syy_T)/P + ||x_S W + b - y_T||^2``.
    """
    G, C = moments(val, cols, outs)
    shift = val.x_mean[cols] @ W + b - val.y_mean[outs]
    return float(np.sum(W * (G @ W)) - 2 * np.sum(W * C) + val.syy[outs].sum() / val.n_samples + shift @ shift)


def candidate_errors(fit, val, cols, outs, W0: np.ndarray, b0: np.ndarray, ridges=RIDGES) -> dict:
    """Held-out error of every candidate: ``{None: kept dense weights, r: refit with ridge r}``.

    One eigendecomposition ``G_S = Q diag(l) Q^T`` of the fit part serves every
    ridge: ``W(delta) = Q diag(1/(l + delta)) Q^T (C + delta W0)`` (``delta = 0``:
    the minimum-norm least-squares solution, eigenvalues below ``1e-12 max(l)``
    dropped), ``b = y_T - x_S W``.
    """
    G, C = moments(fit, cols, outs)
    scale = max(float(np.mean(np.diag(G))), np.finfo(np.float64).tiny)
    lam, Q = np.linalg.eigh(G)
    lam = np.clip(lam, 0.0, None)
    QtC, QtW0 = Q.T @ C, Q.T @ W0
    errors = {None: held_out_error(val, cols, outs, W0, b0)}
    for r in ridges:
        delta = r * scale
        denom = lam + delta
        inv = np.where(denom > 1e-12 * max(float(lam.max()), delta), 1.0 / np.maximum(denom, np.finfo(float).tiny), 0.0)
        W = Q @ (inv[:, None] * (QtC + delta * QtW0))
        b = fit.y_mean[outs] - fit.x_mean[cols] @ W
        errors[r] = held_out_error(val, cols, outs, W, b)
    return errors


def choose_ridge(fit, val, cols, outs, W0: np.ndarray, b0: np.ndarray, ridges=RIDGES):
    """The candidate of least held-out error: a ridge, or None (keep ``W0, b0``; wins ties)."""
    errors = candidate_errors(fit, val, cols, outs, W0, b0, ridges)
    best = None
    for r, err in errors.items():
        if err < errors[best]:
            best = r
    return best


def held_out_keep(problems, n: int, k: int, fixed=None, ridges=SELECT_RIDGES):
    """Root channels of least held-out consumer error among lsq choices and ``fixed`` ones.

    ``problems`` holds per consumer ``(full, fit, val, cols, W0, b0)``. Each
    candidate ridge ``r`` chooses ``k`` channels by
    :func:`.structured_select.lsq_keep` on the fit part (pulled toward the dense
    weights ``W0``); ``fixed`` maps other criteria (e.g. ``"magnitude"``) to
    their sets. A set ``S`` scores ``sum_j min_refit E_val,j(S) / E_j``: every
    consumer's best held-out candidate error (:func:`candidate_errors`) relative
    to its output energy. A winning lsq ridge chooses again on all samples.
    Returns the sorted channels and the winner's name (``"lsq ridge=r"`` or a key of ``fixed``).
    """
    priors = [W0 for *_, W0, _ in problems]
    sets = {f"lsq ridge={r:g}": lsq_keep([(fit, cols) for _, fit, _, cols, _, _ in problems], n, k, r, priors=priors)
            for r in ridges}
    sets.update(fixed or {})
    scores = {name: _held_out_score(problems, kept) for name, kept in sets.items()}
    best = min(scores, key=scores.get)
    if best.startswith("lsq ridge="):
        r = float(best.split("=")[1])
        return lsq_keep([(full, cols) for full, _, _, cols, _, _ in problems], n, k, r, priors=priors), best
    return np.sort(np.asarray(sets[best])), best


def _held_out_score(problems, kept) -> float:
    """``sum_j min_refit E_val,j(S) / E_j`` of the root channels ``kept``."""
    score = 0.0
    for _, fit, val, cols, W0, b0 in problems:
        flat = np.concatenate([np.asarray(cols[c], dtype=np.int64) for c in kept])
        if flat.size:
            errors = candidate_errors(fit, val, flat, np.arange(W0.shape[1]), W0[flat], b0)
            score += min(errors.values()) / output_energy(val)
    return score
