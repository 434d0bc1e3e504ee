"""``iht``: ``min (1/2P)||X W + 1 b^T - Y||^2 s.t. W in pattern`` by accelerated IHT from the dense weights."""
from layertrim.solvers.threshold.iht import iht

from .registry import ALL_PATTERNS, Method, Solution, keyword_options


def solve(problem, spec):
    X, Y = problem.linear_args()
    res = iht(X, Y, sparsity=spec.sparsity, pattern=spec.pattern, intercept=problem.intercept, W0=problem.W0,
              refit=spec.refit, **spec.options)
    # iht refits its final support itself; a damped refit (spec.damping > 0) replaces that one
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info,
                    refit=bool(spec.damping))


METHOD = Method(
    name="iht", data="gram", targets=("sparsity",), patterns=ALL_PATTERNS,
    options=keyword_options(iht, exclude=("sparsity", "pattern", "intercept", "W0", "refit")), solve=solve,
    summary="iterative hard thresholding on the Gram form (swaps=True adds exact exchanges)",
)
