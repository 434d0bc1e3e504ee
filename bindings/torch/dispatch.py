"""One layer (one conv group) solved by the chosen core solver.

The binding never solves anything itself: each method maps onto core calls.

=============  ============  ==========================================================
method         data          core calls
=============  ============  ==========================================================
magnitude      Gram          ``project`` of the dense weights, then ``refit``
iht            Gram          ``iht`` (started at the dense weights, refit included)
lasso          Gram          ``lasso(penalty="l1")``, then ``refit``
group_lasso    Gram          ``lasso(penalty="group")`` (whole input rows), then ``refit``
nettrim        rows          ``nettrim`` (ReLU-aware when a ReLU follows); ``refit``
                             only for layers without ReLU
feta           rows          ``feta`` on post-ReLU targets; a layer without ReLU gets
                             ``lasso`` + ``refit`` (reported as ``lasso``)
=============  ============  ==========================================================

Squared-loss methods match the dense pre-activation ``Y``; ``refit`` is the
least-squares fit on the solver's support, which can only lower that loss. A
layer with target sparsity 0 keeps every weight: no solver runs, only the
refit (so in the cascade scheme a dense layer still adapts to pruned inputs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from layertrim.solvers.errors import ParameterError
from layertrim.solvers.feta import feta
from layertrim.solvers.gram import GramStats
from layertrim.solvers.iht import iht
from layertrim.solvers.lasso import lasso
from layertrim.solvers.nettrim import nettrim
from layertrim.solvers.projection import project
from layertrim.solvers.refit import refit as refit_support

METHODS = ("magnitude", "iht", "lasso", "group_lasso", "nettrim", "feta")
#: methods that need per-sample rows (the others use Gram statistics)
ROW_METHODS = ("nettrim", "feta")
STATUS_ORDER = ("optimal", "max_iter", "infeasible", "numerical_error")


@dataclass
class LayerSpec:
    """What to do with one layer: method, its target and options."""

    method: str
    sparsity: float | None = None
    eps: float | None = None
    lam: float | None = None
    pattern: str = "unstructured"
    refit: bool = True
    options: dict = field(default_factory=dict)

    def check(self, name: str) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"layer {name!r}: method must be one of {METHODS}, got {self.method!r}")
        given = [k for k in ("sparsity", "eps", "lam") if getattr(self, k) is not None]
        allowed = {
            "magnitude": ("sparsity",), "iht": ("sparsity",), "lasso": ("sparsity", "lam"),
            "group_lasso": ("sparsity", "lam"), "nettrim": ("sparsity", "eps"), "feta": ("sparsity", "lam"),
        }[self.method]
        usable = [k for k in given if k in allowed]
        if len(usable) != 1 or len(given) != 1:
            raise ParameterError(
                f"layer {name!r}: method {self.method!r} needs exactly one of "
                f"{' / '.join(k + '=' for k in allowed)}; got {given or 'none'}"
            )

    @property
    def mode(self) -> str:
        return "rows" if self.method in ROW_METHODS else "gram"


@dataclass
class GroupSolution:
    """Solved weights of one group and what it cost."""

    W: np.ndarray
    b: np.ndarray | None
    method: str
    status: str
    iterations: int
    time: float
    err2: float
    norm2: float
    info: dict


def squared_error(data, W, b):
    """``(||X W + 1 b^T - Y||_F^2, ||Y||_F^2)`` from Gram statistics or ``(X, Y)``."""
    if isinstance(data, GramStats):
        W = np.asarray(W, dtype=np.float64)
        P = data.n_samples
        yy = float(data.yty_diag().sum())
        err = float(np.sum(W * (data.xtx() @ W)) - 2.0 * np.sum(W * data.xty()) + yy)
        if b is not None:
            b = np.asarray(b, dtype=np.float64)
            err += 2.0 * P * float(b @ (data.x_mean @ W)) - 2.0 * P * float(b @ data.y_mean) + P * float(b @ b)
        return max(err, 0.0), yy
    X, Y = data
    pred = X.astype(np.float64) @ W + (0.0 if b is None else b)
    return float(np.sum((pred - Y) ** 2)), float(np.sum(Y.astype(np.float64) ** 2))


def _relu(a):
    return np.maximum(a, 0)


def _refit(data, W, intercept):
    mask = W != 0
    if isinstance(data, GramStats):
        return refit_support(data, None, mask, intercept=intercept)
    return refit_support(data[0], data[1], mask, intercept=intercept)


def _linear_target_args(data):
    return (data, None) if isinstance(data, GramStats) else data


def _lasso(spec, data, intercept, penalty):
    X, Y = _linear_target_args(data)
    return lasso(X, Y, lam=spec.lam, sparsity=spec.sparsity, penalty=penalty, intercept=intercept, **spec.options)


def solve_group(spec: LayerSpec, data, W0, b0, *, relu: bool, cascade: bool, gamma: float) -> GroupSolution:
    """Solve one group's problem with the layer's method.

    Parameters
    ----------
    spec : LayerSpec
    data : GramStats or (X, Y)
        The group's captured problem (``Y`` pre-activation).
    W0, b0 : ndarray
        The dense weights ``(K, M_g)`` and bias ``(M_g,)`` (or None).
    relu : bool
        A ReLU follows the layer.
    cascade : bool
        Inputs come from the pruned network: Net-Trim then bounds the inactive
        set by ``V = X W0 + b0`` and, in eps mode, uses
        ``eps' = max(eps, gamma * ||relu(X W0 + b0) - relu(Y)||_F / ||relu(Y)||_F)``
        so that the dense weights stay feasible.
    gamma : float
        Slack of that rule (>= 1).
    """
    start = time.perf_counter()
    intercept = b0 is not None
    method = spec.method
    refit = spec.refit
    extra = {}
    if spec.sparsity == 0.0:  # keep every weight; only the refit below may change values
        res = None
        W, b = W0, b0
        if method == "feta" and not relu:
            method = "lasso"
        refit = refit and not (relu and method in ROW_METHODS)
    elif method == "magnitude":
        Wp, _mask = project(W0, sparsity=spec.sparsity, pattern=spec.pattern, **spec.options)
        res = None
        W, b = Wp, b0
    elif method == "iht":
        X, Y = _linear_target_args(data)
        res = iht(
            X, Y, sparsity=spec.sparsity, pattern=spec.pattern, intercept=intercept, W0=W0, refit=refit, **spec.options
        )
        refit = False  # iht refits its final support itself
    elif method in ("lasso", "group_lasso"):
        res = _lasso(spec, data, intercept, "l1" if method == "lasso" else "group")
    elif method == "nettrim":
        X, Y = data
        pred0 = X @ W0 + (0 if b0 is None else b0)
        target = _relu(Y) if relu else Y
        eps = spec.eps
        V = None
        if cascade:
            if relu:
                V = pred0.astype(X.dtype)
            if eps is not None:
                dense = _relu(pred0) if relu else pred0
                base = float(np.linalg.norm(dense - target) / max(np.linalg.norm(target), 1e-300))
                extra["eps_requested"] = eps
                eps = max(eps, gamma * base)
        res = nettrim(
            X, target.astype(X.dtype), eps=eps, sparsity=spec.sparsity, relu=relu, intercept=intercept, V=V,
            **spec.options,
        )
        refit = refit and not relu
    elif method == "feta":
        if relu:
            X, Y = data
            res = feta(
                X, _relu(Y), lam=spec.lam, sparsity=spec.sparsity, intercept=intercept, W0=W0, b0=b0,
                **spec.options,
            )
            refit = False
        else:
            method = "lasso"
            res = _lasso(spec, data, intercept, "l1")
    else:  # pragma: no cover - LayerSpec.check rejects it
        raise ParameterError(f"unknown method {method!r}")
    if res is not None:
        W, b = res.W, res.b
        status, iterations = res.status, res.iterations
        extra.update(res.info)
    else:
        status, iterations = "optimal", 0
    if refit and np.any(W != 0):
        r2 = _refit(data, W, intercept)
        W, b = r2.W, r2.b
        extra["refit"] = True
    elapsed = time.perf_counter() - start
    if isinstance(data, tuple) and relu:
        X, Y = data
        pred = X.astype(np.float64) @ W + (0.0 if b is None else b)
        err2 = float(np.sum((_relu(pred) - _relu(Y)) ** 2))
        norm2 = float(np.sum(_relu(Y.astype(np.float64)) ** 2))
    else:
        err2, norm2 = squared_error(data, W, b)
    return GroupSolution(
        W=np.asarray(W), b=None if b is None else np.asarray(b), method=method, status=status,
        iterations=int(iterations), time=float(elapsed), err2=err2, norm2=norm2, info=extra,
    )
