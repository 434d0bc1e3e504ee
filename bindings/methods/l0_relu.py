"""``l0_relu``: ``min (1/2P)||relu(X W + 1 b^T) - Y||^2 s.t. W in pattern`` on post-ReLU targets.

Started from the l0 solution on the dense pre-activations; layers that no
ReLU follows are solved by ``l0`` (and reported so).
"""
import numpy as np

from layertrim.solvers.dc.l0_relu import l0_relu

from .registry import Method, Solution, keyword_options


def solve(problem, spec):
    X, Y = problem.data
    res = l0_relu(X, np.maximum(Y, 0), sparsity=spec.sparsity, pattern=spec.pattern, intercept=problem.intercept,
                  Y_pre=Y, W0=problem.W0, **spec.options)
    # the refit would undo the post-ReLU fit; l0_relu ends with its own on the final support
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info, refit=False)


METHOD = Method(
    name="l0_relu", data="rows", targets=("sparsity",), patterns=("unstructured", "per_output", "n:m"),
    options=keyword_options(l0_relu, exclude=("sparsity", "pattern", "intercept", "Y_pre", "W0")), solve=solve,
    summary="post-ReLU fit under a sparsity pattern: majorize-minimize rounds of the l0 ADMM", linear_fallback="l0",
)
