"""``magnitude``: keep the largest dense weights under the pattern (exact projection), then refit."""
from layertrim.solvers.threshold.projection import project

from .registry import ALL_PATTERNS, Method, Solution, keyword_options


def solve(problem, spec):
    W, _mask = project(problem.W0, sparsity=spec.sparsity, pattern=spec.pattern, **spec.options)
    return Solution(W=W, b=problem.b0)


METHOD = Method(
    name="magnitude", data="gram", targets=("sparsity",), patterns=ALL_PATTERNS,
    options=keyword_options(project, exclude=("sparsity", "pattern")), solve=solve,
    separable=("per_output", "n:m"),
    summary="largest |W| under the pattern, then least-squares refit (the baseline)",
)
