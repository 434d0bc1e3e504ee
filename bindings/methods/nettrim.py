"""``nettrim``: ``min ||W||_1`` s.t. a ReLU-consistent fit within ``eps ||Y||_F`` (Net-Trim).

In the cascade scheme the inactive set is bounded by ``V = X W0 + b0`` and,
in eps mode, ``eps' = max(eps, gamma ||relu(X W0 + b0) - relu(Y)||_F / ||relu(Y)||_F)``
so that the dense weights stay feasible. The refit follows only on layers
without ReLU (it would undo the post-ReLU fit).
"""
import numpy as np

from layertrim.solvers.nettrim import nettrim

from .registry import Method, Solution, keyword_options


def cascade_setting(problem, eps):
    """``(target, eps, V, info)`` of a Net-Trim-type program on ``problem`` (module docstring)."""
    X, Y = problem.data
    W0, b0, relu = problem.W0, problem.b0, problem.relu
    pred0 = X @ W0 + (0 if b0 is None else b0)
    target = np.maximum(Y, 0) if relu else Y
    V, info = None, {}
    if problem.cascade:
        if relu:
            V = pred0.astype(X.dtype)
        if eps is not None:
            dense = np.maximum(pred0, 0) if relu else pred0
            base = float(np.linalg.norm(dense - target) / max(np.linalg.norm(target), 1e-300))
            info["eps_requested"] = eps
            eps = max(eps, problem.gamma * base)
    return target, eps, V, info


def solve(problem, spec):
    X, relu = problem.data[0], problem.relu
    target, eps, V, info = cascade_setting(problem, spec.eps)
    res = nettrim(X, target.astype(X.dtype), eps=eps, sparsity=spec.sparsity, relu=relu,
                  intercept=problem.intercept, V=V, **spec.options)
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info={**info, **res.info},
                    refit=not relu)


METHOD = Method(
    name="nettrim", data="rows", targets=("sparsity", "eps"), patterns=("unstructured",),
    options=keyword_options(nettrim, exclude=("eps", "sparsity", "relu", "intercept", "V")), solve=solve,
    summary="Net-Trim: min ||W||_1 within a post-ReLU error budget eps (ADMM)",
)
