"""``nettrim_rw``: reweighted-l1 Net-Trim (``min sum_i r_i ||W_i||_1`` within ``eps``), then a post-ReLU refit.

As ``nettrim`` in the cascade scheme: the inactive set is bounded by
``V = X W0 + b0`` and, in eps mode, ``eps`` is raised so that the dense
weights stay feasible. The refit on the support is the solver's own
(post-ReLU on ReLU layers), so the generic one does not follow.
"""
from layertrim.solvers.nettrim.reweighted import nettrim_reweighted

from .nettrim import cascade_setting
from .registry import Method, Solution, keyword_options


def solve(problem, spec):
    X, relu = problem.data[0], problem.relu
    target, eps, V, info = cascade_setting(problem, spec.eps)
    res = nettrim_reweighted(X, target.astype(X.dtype), eps=eps, sparsity=spec.sparsity, relu=relu,
                             intercept=problem.intercept, V=V, **spec.options)
    res_info = {k: v for k, v in res.info.items() if k not in ("iterates", "support")}
    return Solution(W=res.W, b=res.b, status=res.status, iterations=res.iterations, info={**info, **res_info},
                    refit=False)


METHOD = Method(
    name="nettrim_rw", data="rows", targets=("sparsity", "eps"), patterns=("unstructured",),
    options=keyword_options(nettrim_reweighted, exclude=("eps", "sparsity", "relu", "intercept", "V")), solve=solve,
    summary="reweighted-l1 Net-Trim within a post-ReLU error budget eps, then a post-ReLU refit on the support",
)
