"""``sparsegpt``: SparseGPT's blocked OBS sweep from the dense weights (Frantar & Alistarh); no refit."""
from layertrim.solvers.threshold.obs import PATTERNS, sparsegpt

from .registry import Method, Solution, keyword_options


def solve(problem, spec):
    X, _ = problem.linear_args()  # the inputs (rows) or their statistics; the targets are not used
    res = sparsegpt(X, sparsity=spec.sparsity, pattern=spec.pattern, W0=problem.W0, **spec.options)
    # a baseline: SparseGPT's own weights, the bias as it was (SparseGPT leaves it), no least-squares refit
    return Solution(W=res.W, b=problem.b0, status=res.status, iterations=res.iterations, info=res.info, refit=False)


METHOD = Method(
    name="sparsegpt", data="gram", targets=("sparsity",), patterns=PATTERNS,
    options=keyword_options(sparsegpt, exclude=("sparsity", "pattern", "W0", "mask")), solve=solve,
    separable=("per_output", "n:m"),
    summary="SparseGPT: blocked OBS sweep with adaptive masks, bias kept, no refit (baseline)",
)
