"""``lasso`` and ``group_lasso``: ``min (1/2P)||X W + 1 b^T - Y||^2 + lam R(W)``, then refit.

``R = ||W||_1`` (lasso) or ``sum_i ||W_i||_2`` over input rows (group lasso:
whole input neurons / channels removed).
"""
from layertrim.solvers.lasso import lasso

from .registry import Method, Solution, keyword_options


def _solve(problem, spec, penalty):
    X, Y = problem.linear_args()
    res = lasso(X, Y, lam=spec.lam, sparsity=spec.sparsity, penalty=penalty, intercept=problem.intercept,
                **spec.options)
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info)


def solve_l1(problem, spec):
    return _solve(problem, spec, "l1")


def solve_group(problem, spec):
    return _solve(problem, spec, "group")


_OPTIONS = keyword_options(lasso, exclude=("lam", "sparsity", "penalty", "intercept"))

METHOD = Method(
    name="lasso", data="gram", targets=("sparsity", "lam"), patterns=("unstructured",), options=_OPTIONS,
    solve=solve_l1, summary="l1-penalized least squares (coordinate descent, duality gap), then refit",
)
GROUP_METHOD = Method(
    name="group_lasso", data="gram", targets=("sparsity", "lam"), patterns=("unstructured", "input_rows"),
    options=_OPTIONS, solve=solve_group,
    summary="row-group lasso: removes whole inputs (neurons / channels), then refit",
)
