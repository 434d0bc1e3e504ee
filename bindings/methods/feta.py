"""``feta``: ``min (1/2P)||relu(X W + 1 b^T) - Y||^2 + lam ||W||_1`` on post-ReLU targets (FeTa, DC).

Layers that no ReLU follows are solved by ``lasso`` (and reported so).
"""
import numpy as np

from layertrim.solvers.dc import feta

from .registry import Method, Solution, keyword_options


def solve(problem, spec):
    X, Y = problem.data
    res = feta(X, np.maximum(Y, 0), lam=spec.lam, sparsity=spec.sparsity, intercept=problem.intercept,
               W0=problem.W0, b0=problem.b0, **spec.options)
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info, refit=False)


METHOD = Method(
    name="feta", data="rows", targets=("sparsity", "lam"), patterns=("unstructured",),
    options=keyword_options(feta, exclude=("lam", "sparsity", "intercept", "W0", "b0")), solve=solve,
    summary="FeTa: post-ReLU fit + l1 by the convex-concave procedure", linear_fallback="lasso",
)
