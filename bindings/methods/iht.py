"""``iht``: ``min (1/2P)||X W + 1 b^T - Y||^2 s.t. W in pattern`` by accelerated IHT from the dense weights."""
import numpy as np

from layertrim.solvers.base.backend import as_quadratic_any, check_start
from layertrim.solvers.base.gram import GramStats
from layertrim.solvers.base.patterns import parse_pattern
from layertrim.solvers.threshold.iht import iht
from layertrim.solvers.threshold.iht_batch import PATTERNS, iht_batch

from .registry import ALL_PATTERNS, Method, Solution, keyword_options

#: the options :func:`iht_batch` runs as :func:`iht` does
BATCH_OPTIONS = frozenset({"max_iter", "tol"})


def solve(problem, spec):
    X, Y = problem.linear_args()
    res = iht(X, Y, sparsity=spec.sparsity, pattern=spec.pattern, intercept=problem.intercept, W0=problem.W0,
              refit=spec.refit, **spec.options)
    return _solution(res, spec)


def solve_groups(problems, spec):
    """Every group at once by :func:`iht_batch` (Gram data, entry-wise patterns, default options, the
    final refit on, more samples than inputs); None otherwise."""
    if (not spec.refit or set(spec.options) - BATCH_OPTIONS or parse_pattern(spec.pattern).kind not in PATTERNS
            or not all(isinstance(p.data, GramStats) for p in problems)):
        return None
    quads = [as_quadratic_any(p.data, intercept=p.intercept) for p in problems]
    if any(q.n_features > q.n_samples - int(q.intercept) for q in quads):
        return None
    W0 = np.stack([check_start(p.W0, q.n_features, q.n_outputs, q.G) for p, q in zip(problems, quads)])
    results = iht_batch(quads, W0, sparsity=spec.sparsity, pattern=spec.pattern, **spec.options)
    return [_solution(res, spec) for res in results]


def _solution(res, spec):
    # iht refits its final support itself; a damped refit (spec.damping > 0) replaces that one
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info=res.info,
                    refit=bool(spec.damping))


METHOD = Method(
    name="iht", data="gram", targets=("sparsity",), patterns=ALL_PATTERNS,
    options=keyword_options(iht, exclude=("sparsity", "pattern", "intercept", "W0", "refit")), solve=solve,
    summary="iterative hard thresholding on the Gram form (swaps=True adds exact exchanges)",
    solve_groups=solve_groups,
)
