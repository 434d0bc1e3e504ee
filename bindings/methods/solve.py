"""One layer group solved by its registered method, then refit and measured.

Squared-loss methods match the dense pre-activation ``Y``; the refit is the
least-squares fit on the method's support, which can only lower that loss.
A layer with target sparsity 0 keeps every weight: no method runs, only the
refit (so in the cascade scheme a dense layer still adapts to pruned inputs);
row-based methods of ReLU layers keep the dense weights as they are.
With ``damping > 0`` the refit carries the ridge ``damping * mean(diag(G))``
toward the trained weights and replaces the own final refit of iht and l0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from layertrim.solvers.base.backend import as_quadratic_any, to_host
from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.gram import GramStats
from layertrim.solvers.base.patterns import parse_pattern
from layertrim.solvers.threshold.refit import refit as refit_support

from .registry import LayerProblem, Solution, get_method

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
    damping: float = 0.0
    options: dict = field(default_factory=dict)

    def check(self, name: str) -> None:
        """Method known, exactly one target it accepts, a pattern it honours, options it has."""
        method = get_method(self.method)
        given = [k for k in ("sparsity", "eps", "lam") if getattr(self, k) is not None]
        if not given and "sparsity" in method.targets and parse_pattern(self.pattern).fixed_sparsity is not None:
            given = ["sparsity"]  # N:M fixes the sparsity
        if len(given) != 1 or given[0] not in method.targets:
            raise ParameterError(
                f"layer {name!r}: method {self.method!r} needs exactly one of "
                f"{' / '.join(k + '=' for k in method.targets)}; got {given or 'none'}"
            )
        method.check_pattern(self.pattern, name)
        method.check_options(self.options, name)

    @property
    def mode(self) -> str:
        return get_method(self.method).data


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


def _errors(problem: LayerProblem, W, b):
    """Squared error and squared target norm: post-ReLU on rows of ReLU layers, else linear."""
    if isinstance(problem.data, tuple) and problem.relu:
        X, Y = problem.data
        pred = X.astype(np.float64) @ W + (0.0 if b is None else b)
        err2 = float(np.sum((np.maximum(pred, 0) - np.maximum(Y, 0)) ** 2))
        return err2, float(np.sum(np.maximum(Y.astype(np.float64), 0) ** 2))
    return squared_error(problem.data, W, b)


def _refit(problem: LayerProblem, W, damping: float):
    """Least squares on ``W``'s support nearest to ``W0``, with the ridge ``damping * mean(diag(G))``
    toward ``W0`` (``G`` the centred input Gram over ``P``)."""
    X, Y = problem.linear_args()
    ridge = 0.0
    if damping:
        ridge = damping * float(np.mean(np.diag(to_host(as_quadratic_any(X, Y, intercept=problem.intercept).G))))
    return refit_support(X, Y, W != 0, intercept=problem.intercept, ridge=ridge, anchor=problem.W0)


def solve_group(spec: LayerSpec, data, W0, b0, *, relu: bool, cascade: bool, gamma: float,
                methods: dict | None = None) -> GroupSolution:
    """Solve one group's problem (``data``: GramStats or ``(X, Y)``) with the layer's method.

    ``methods`` (name -> :class:`Method`) replaces the registry lookup, so that
    a worker process solves with the methods of the process that sent the task.
    """
    start = time.perf_counter()
    problem = LayerProblem(data=data, W0=W0, b0=b0, relu=relu, cascade=cascade, gamma=gamma)
    lookup = get_method if methods is None else methods.__getitem__
    method = lookup(spec.method)
    options = spec.options
    if method.linear_fallback is not None and not relu:
        method = lookup(method.linear_fallback)
        options = {k: v for k, v in options.items() if k in method.options}
    if spec.sparsity == 0.0:  # keep every weight; only the refit below may change values
        sol = Solution(W=W0, b=b0, refit=not (relu and method.data == "rows"))
    else:
        sol = method.solve(problem, spec if options is spec.options else replace(spec, options=options))
    W, b, info = sol.W, sol.b, dict(sol.info)
    if spec.refit and sol.refit and np.any(W != 0):
        r2 = _refit(problem, W, spec.damping)
        W, b = r2.W, r2.b
        info["refit"] = True
    elapsed = time.perf_counter() - start
    err2, norm2 = _errors(problem, W, b)
    return GroupSolution(
        W=np.asarray(W), b=None if b is None else np.asarray(b), method=method.name, status=sol.status,
        iterations=int(sol.iterations), time=float(elapsed), err2=err2, norm2=norm2, info=info,
    )
