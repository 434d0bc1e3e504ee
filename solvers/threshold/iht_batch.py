""":func:`~.iht.iht` on many small problems at once: the groups of a grouped convolution.

A depthwise convolution with ``C`` channels is ``C`` problems of ``K = kh kw``
inputs and one output. Solved one at a time, each costs a few milliseconds of
fixed Python work for microseconds of arithmetic (MobileNetV2: about 7,000
such problems). :func:`iht_batch` runs the same algorithm on every group
together, with the Gram matrices stacked as ``G (g, K, K)``, ``C (g, K, m)``:

* the start: the refit on the ``D``-norm projection of ``W0``, and where
  that does not reach ``tol * f(0)``, the refit on its magnitude projection,
  the better of the two (:func:`~.iht.initial_weights`);
* the accelerated iteration of :mod:`.iteration`, with each group's own
  momentum ``t``, restart (``t = 1`` and the plain step when the accelerated
  one raises the loss) and stopping rule; a group that stops is frozen;
* the final least-squares refit of the groups whose iterate moved.

Each least-squares fit on a support ``S`` solves ``G_SS u = (C - G A)_S``
(``A`` the anchor ``W0`` on the mask) for every group and column by one
batched Cholesky factorization of ``G`` restricted to ``S`` and padded with
``scale I`` off it (the padding is decoupled, so the factor on ``S`` is that
of ``G_SS``); a system whose factor fails :func:`~.refit._psd_solve`'s pivot
test is handed to that function as it is. So each group's result is
:func:`~.iht.iht`'s on the group alone, to rounding.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ..base.errors import ConvergenceWarning, ParameterError, ShapeError
from ..base.patterns import parse_pattern
from ..base.result import Result
from ..base.validation import check_scalar
from .iteration import jacobi_scaling
from .projection import topk_by_partition
from .refit import RCOND, _psd_solve

#: the pattern kinds :func:`iht_batch` selects in one batched call
PATTERNS = ("unstructured", "per_output")


def iht_batch(quads: list, W0: np.ndarray, *, sparsity: float, pattern="unstructured", max_iter: int = 300,
              tol: float = 1e-6) -> list:
    """:func:`~.iht.iht` (``refit=True``, no swaps, permutations or debiasing) on every problem of ``quads``.

    Parameters
    ----------
    quads : list of :class:`~layertrim.solvers.base.gram.Quadratic`
        ``g`` numpy problems of equal shapes ``(K, m)``, each with at most
        ``n_samples - intercept`` features (no support wider than its rank).
    W0 : array (g, K, m)
        Start weights of each problem (the trained layer).
    sparsity, pattern, max_iter, tol
        As in :func:`~.iht.iht`; ``pattern`` ``"unstructured"`` or
        ``"per_output"``, applied to each problem on its own.

    Returns
    -------
    list of Result
        One per problem, as :func:`~.iht.iht` returns it (``time`` is the
        batch's time divided by ``g``). One ConvergenceWarning counts the
        problems that reached ``max_iter``.
    """
    start = time.perf_counter()
    max_iter = check_scalar(max_iter, "max_iter", low=0, integer=True)
    tol = check_scalar(tol, "tol", low=0.0)
    pat = parse_pattern(pattern)
    if pat.kind not in PATTERNS:
        raise ParameterError(f"iht_batch selects {' or '.join(PATTERNS)} patterns, got {pat}")
    s = pat.resolve_sparsity(sparsity)
    batch = _Batch(quads, W0)
    keep = pat.kept(s, batch.K, batch.m)

    def select(scores):
        g = scores.shape[0]
        if pat.kind == "unstructured":
            return topk_by_partition(scores.reshape(g, -1), keep, 1).reshape(scores.shape)
        return topk_by_partition(scores, keep, 1)

    W, f, mask, status, iters, moved, info = _iterate(batch, select, max_iter, tol)
    idx = np.flatnonzero(moved)  # the start is already the refit on its support: refit only after a move
    W_ref = batch.refit(idx, mask[idx])
    f_ref = batch.loss(W_ref, idx)
    better = f_ref <= f[idx]
    W[idx[better]], f[idx[better]] = W_ref[better], f_ref[better]

    n_max = int(np.sum(status == "max_iter"))
    if n_max:
        warnings.warn(f"iht stopped after max_iter={max_iter} iterations before the support settled (tol={tol:g}) "
                      f"in {n_max} of {batch.g} problems; those results are feasible and no worse than the start",
                      ConvergenceWarning, stacklevel=2)
    share = (time.perf_counter() - start) / batch.g
    results = []
    for j, q in enumerate(quads):
        b = q.intercept_for(W[j])
        results.append(Result(
            W=W[j].astype(q.dtype), b=None if b is None else b.astype(q.dtype), status=str(status[j]),
            objective=float(f[j]), iterations=len(iters[j]), time=share,
            history={"objective": np.asarray(iters[j])},
            info={**{k: v[j] for k, v in info.items()}, "swap_moves": 0, "pattern": str(pat),
                  "sparsity": float(np.mean(W[j] == 0))},
        ))
    return results


class _Batch:
    """Stacked moments and the batched arithmetic of the problems: losses, refits, Jacobi scaling."""

    def __init__(self, quads: list, W0):
        if not quads:
            raise ShapeError("iht_batch needs at least one problem")
        shapes = {(q.n_features, q.n_outputs) for q in quads}
        if len(shapes) != 1:
            raise ShapeError(f"iht_batch needs problems of one shape, got {sorted(shapes)}")
        (self.K, self.m), self.g = shapes.pop(), len(quads)
        if any(self.K > q.n_samples - int(q.intercept) for q in quads):
            raise ShapeError(f"iht_batch needs at least {self.K + 1} samples per problem (more than the features)")
        self.W0 = np.asarray(W0, dtype=np.float64)
        if self.W0.shape != (self.g, self.K, self.m):
            raise ShapeError(f"W0 must have shape {(self.g, self.K, self.m)}, got {self.W0.shape}")
        self.G = np.stack([q.G for q in quads])
        self.C = np.stack([q.C for q in quads])
        self.yy = np.stack([q.yy for q in quads]).sum(axis=1)
        d = np.diagonal(self.G, axis1=1, axis2=2)
        self.alive = d > RCOND * np.maximum(d.max(axis=1), np.finfo(float).tiny)[:, None]
        scalings = [jacobi_scaling(q) for q in quads] if not self.alive.all() else None
        if scalings is None:  # every input alive: one batched eigenproblem
            self.inv_d, self.sqrt_d = 1.0 / d, np.sqrt(d)
            h = np.sqrt(self.inv_d)
            self.L_D = np.linalg.eigvalsh(self.G * h[:, :, None] * h[:, None, :])[:, -1]
        else:
            self.inv_d, self.sqrt_d = (np.stack([sc[i] for sc in scalings]) for i in (0, 1))
            self.L_D = np.array([sc[2] for sc in scalings])

    def loss(self, W, idx):
        """The loss of each problem ``idx[k]`` at ``W[k]``, shape ``(len(idx),)``."""
        return self.loss_gw(W, self.G[idx] @ W, idx)

    def loss_gw(self, W, GW, idx):
        """:meth:`loss` from a precomputed ``G W``."""
        val = 0.5 * np.sum(W * GW, axis=(1, 2)) - np.sum(self.C[idx] * W, axis=(1, 2)) + 0.5 * self.yy[idx]
        return np.maximum(val, 0.0)

    def refit(self, idx, mask):
        """Least squares of problems ``idx`` on ``mask (len(idx), K, m)``, nearest to ``W0`` (the
        batched :func:`~.refit.refit_quadratic`)."""
        G, anchor = self.G[idx], self.W0[idx]
        base = np.where(mask, anchor, 0.0)
        rhs = (self.C[idx] - G @ base).transpose(0, 2, 1)  # (n, m, K)
        live = (mask & self.alive[idx][:, :, None]).transpose(0, 2, 1)  # (n, m, K)
        A = G[:, None, :, :] * (live[..., :, None] & live[..., None, :])
        diag = np.diagonal(A, axis1=2, axis2=3)
        scale = np.maximum(diag.max(axis=2), np.finfo(float).tiny)
        eye = np.eye(self.K, dtype=bool)
        A[..., eye] = np.where(live, diag, scale[..., None])
        rhs = np.where(live, rhs, 0.0)
        sol = np.zeros_like(rhs)
        ok = np.zeros(live.shape[:2], dtype=bool)
        try:
            L = np.linalg.cholesky(A)
            ok = np.min(np.diagonal(L, axis1=2, axis2=3), axis=2) ** 2 > RCOND * scale
            sol[ok] = np.linalg.solve(A[ok], rhs[ok][..., None])[..., 0]
        except np.linalg.LinAlgError:  # some system is not positive definite: each on its own below
            pass
        for n, c in zip(*np.nonzero(~ok)):  # singular supports: the serial three-step solve
            rows = np.flatnonzero(live[n, c])
            if rows.size:
                sol[n, c, rows] = _psd_solve(G[n][np.ix_(rows, rows)], rhs[n, c, rows][:, None])[0][:, 0]
        return base + sol.transpose(0, 2, 1)


def _iterate(batch: _Batch, select, max_iter: int, tol: float):
    """Start and iterate every problem; returns ``(W, f, mask, status, histories, moved, info)``:
    the last iterates, their losses and supports, ``"optimal"`` / ``"max_iter"``, the loss after each
    iteration, whether the iterate left the start, and the per-problem facts of :func:`~.iteration.iterate`."""
    g, every = batch.g, np.arange(batch.g)
    target = 0.5 * batch.yy
    W = batch.refit(every, select(batch.sqrt_d[:, :, None] * np.abs(batch.W0)))
    f = batch.loss(W, every)
    rest = np.flatnonzero(f > tol * target)  # the start does not fit: try the magnitude projection
    if rest.size:
        W2 = batch.refit(rest, select(np.abs(batch.W0[rest])))
        f2 = batch.loss(W2, rest)
        won = f2 < f[rest]
        W[rest[won]], f[rest[won]] = W2[won], f2[won]
    GW = batch.G @ W
    loss_start = f.copy()
    mask = W != 0
    positive = (batch.L_D > 0)[:, None]
    step = np.where(positive, batch.inv_d / np.where(positive, batch.L_D[:, None], 1.0), batch.inv_d)
    Z, GZ, t = W.copy(), GW.copy(), np.ones(g)
    restarts, moved = np.zeros(g, dtype=np.int64), np.zeros(g, dtype=bool)
    status = np.full(g, "max_iter", dtype=object)
    histories = [[] for _ in range(g)]
    done = f <= tol * target
    status[done] = "optimal"
    for _ in range(max_iter):
        flat = ~done & (batch.L_D == 0.0)  # every input constant: W = 0 is optimal
        status[flat], done = "optimal", done | flat
        act = np.flatnonzero(~done)
        if not act.size:
            break
        Wa, GWa, fa, Ca, sa = W[act], GW[act], f[act], batch.C[act], step[act][:, :, None]
        Wn, mn, GWn, fn = _hard_step(batch, act, Z[act] - sa * (GZ[act] - Ca), select)
        up = np.flatnonzero(fn > fa)  # the accelerated step raised the loss: restart from W
        restarts[act[up]] += 1
        t[act[up]] = 1.0
        took = np.ones(act.size, dtype=bool)
        if up.size:
            Wp, mp, GWp, fp = _hard_step(batch, act[up], Wa[up] - sa[up] * (GWa[up] - Ca[up]), select)
            kept = fp > fa[up]  # only rounding can cause this: keep W
            Wp[kept], mp[kept], GWp[kept], fp[kept] = Wa[up][kept], mask[act[up]][kept], GWa[up][kept], fa[up][kept]
            Wn[up], mn[up], GWn[up], fn[up] = Wp, mp, GWp, fp
            took[up[kept]] = False
        moved[act[took]] = True
        for k, j in enumerate(act):
            histories[j].append(float(fn[k]))
        ta = t[act]
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * ta * ta))
        beta = ((ta - 1.0) / t_next)[:, None, None]
        Z[act], GZ[act] = Wn + beta * (Wn - Wa), GWn + beta * (GWn - GWa)
        stop = np.all(mn == mask[act], axis=(1, 2)) & (fa - fn <= tol * np.maximum(fa, np.finfo(float).tiny))
        W[act], GW[act], f[act], mask[act], t[act] = Wn, GWn, fn, mn, t_next
        status[act[stop]] = "optimal"
        done[act[stop]] = True
    info = {"loss_start": loss_start.tolist(), "loss_iht": f.tolist(), "restarts": restarts.tolist(),
            "lipschitz": batch.L_D.tolist()}
    return W, f, mask, status, histories, moved, info


def _hard_step(batch: _Batch, idx, V, select):
    """Project ``V`` of problems ``idx`` in the ``D``-norm; ``(W, mask, G W, loss)``."""
    mask = select(batch.sqrt_d[idx][:, :, None] * np.abs(V))
    W = np.where(mask, V, 0.0)
    GW = batch.G[idx] @ W
    return W, mask, GW, batch.loss_gw(W, GW, idx)
