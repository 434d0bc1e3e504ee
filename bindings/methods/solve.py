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
    """``(||X W + 1 b^T - Y||_F^2, ||Y||_F^2)`` from Gram statistics or ``(X, Y)``.

    From statistics, with the centered moments ``Sxx``, ``Sxy``, ``syy`` and
    the means (the cross terms of the centered rows vanish):
    ``tr(W^T Sxx W) - 2 tr(W^T Sxy) + sum(syy) + P ||x_mean W + b - y_mean||^2``.
    """
    if isinstance(data, GramStats):
        W = np.asarray(W, dtype=np.float64)
        P = data.n_samples
        shift = data.x_mean @ W - data.y_mean + (0.0 if b is None else np.asarray(b, dtype=np.float64))
        err = float(np.sum(W * (data.Sxx @ W)) - 2.0 * np.sum(W * data.Sxy) + data.syy.sum() + P * (shift @ shift))
        return max(err, 0.0), float(data.yty_diag().sum())
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
    method, spec = _method_for(spec, relu, methods)
    if spec.sparsity == 0.0:  # keep every weight; only the refit below may change values
        sol = Solution(W=W0, b=b0, refit=not (relu and method.data == "rows"))
    else:
        sol = method.solve(problem, spec)
    return _finish(problem, spec, method, sol, time.perf_counter() - start)


def solve_groups(spec: LayerSpec, datas, W0s, b0s, *, relu: bool, cascade: bool, gamma: float,
                 methods: dict | None = None) -> list:
    """Every group of a grouped layer: at once through the method's ``solve_groups`` where it
    applies (each group's time is its share of the batch), else :func:`solve_group` on each."""
    start = time.perf_counter()
    problems = [LayerProblem(data=d, W0=w, b0=None if b0s is None else b0s[j], relu=relu, cascade=cascade,
                             gamma=gamma) for j, (d, w) in enumerate(zip(datas, W0s))]
    method, spec_m = _method_for(spec, relu, methods)
    sols = None
    if method.solve_groups is not None and spec_m.sparsity != 0.0:
        sols = method.solve_groups(problems, spec_m)
    if sols is None:
        return [solve_group(spec, p.data, p.W0, p.b0, relu=relu, cascade=cascade, gamma=gamma, methods=methods)
                for p in problems]
    share = (time.perf_counter() - start) / len(problems)
    return [_finish(p, spec_m, method, sol, share) for p, sol in zip(problems, sols)]


def _method_for(spec: LayerSpec, relu: bool, methods: dict | None):
    """The method that solves the layer (its linear fallback where no ReLU follows) and the spec
    with the options that method takes."""
    lookup = get_method if methods is None else methods.__getitem__
    method = lookup(spec.method)
    if method.linear_fallback is not None and not relu:
        method = lookup(method.linear_fallback)
        options = {k: v for k, v in spec.options.items() if k in method.options}
        if options != spec.options:
            spec = replace(spec, options=options)
    return method, spec


def _finish(problem: LayerProblem, spec: LayerSpec, method, sol: Solution, elapsed: float) -> GroupSolution:
    """The refit the method asks for (damped with ``spec.damping``), errors and the report facts."""
    start = time.perf_counter()
    W, b, info = sol.W, sol.b, dict(sol.info)
    if spec.refit and sol.refit and np.any(W != 0):
        r2 = _refit(problem, W, spec.damping)
        W, b = r2.W, r2.b
        info["refit"] = True
    elapsed += time.perf_counter() - start
    err2, norm2 = _errors(problem, W, b)
    return GroupSolution(
        W=np.asarray(W), b=None if b is None else np.asarray(b), method=method.name, status=sol.status,
        iterations=int(sol.iterations), time=float(elapsed), err2=err2, norm2=norm2, info=info,
    )
