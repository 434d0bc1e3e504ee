"""``wanda``: keep the largest ``|W_ij| * ||x_i||`` of every output (Sun et al.); no weight update."""
from layertrim.solvers.threshold.wanda import PATTERNS, wanda

from .registry import Method, Solution


def solve(problem, spec):
    X, _ = problem.linear_args()  # the inputs (rows) or their statistics; the targets are not used
    res = wanda(problem.W0, X, sparsity=spec.sparsity, pattern=spec.pattern)
    # a baseline: the dense weights on Wanda's support, the bias as it was, no least-squares refit
    return Solution(W=res.W, b=problem.b0, status=res.status, iterations=res.iterations, info=res.info, refit=False)


METHOD = Method(
    name="wanda", data="gram", targets=("sparsity",), patterns=PATTERNS, options=frozenset(), solve=solve,
    separable=PATTERNS,
    summary="Wanda: largest |W| * input norm per output, no update, no refit (baseline)",
)
