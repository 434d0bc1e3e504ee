"""``l0``: ``min (1/2P)||X W + 1 b^T - Y||^2 s.t. W in pattern`` by ADMM on the l0 constraint, from the dense weights."""
from layertrim.solvers.threshold.admm_l0 import l0_admm

from .registry import ALL_PATTERNS, Method, Solution, keyword_options


def solve(problem, spec):
    X, Y = problem.linear_args()
    res = l0_admm(X, Y, sparsity=spec.sparsity, pattern=spec.pattern, intercept=problem.intercept, W0=problem.W0,
                  **spec.options)
    # l0_admm ends with least squares on its final support; a damped refit (spec.damping > 0) replaces it
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info,
                    refit=bool(spec.damping))


METHOD = Method(
    name="l0", data="gram", targets=("sparsity",), patterns=ALL_PATTERNS,
    options=keyword_options(l0_admm, exclude=("sparsity", "pattern", "intercept", "W0")), solve=solve,
    summary="recommended for a sparsity target: ADMM on the l0-constrained fit, refit and exact exchanges",
)
