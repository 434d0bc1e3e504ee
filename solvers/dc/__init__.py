"""Difference-of-convex (FeTa-style) fitting of a sparse ReLU layer.

``min_{W, b} (1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1`` with
``Y >= 0``, written as ``g - h`` (both convex) and solved by the
convex-concave procedure (:mod:`.feta`, the loop in :mod:`.ccp`): each outer
step minimizes the convex majorizer (:mod:`.subproblem`, FISTA or SVRG over
:mod:`.kernels`); the sparsity mode searches the support by majorize-minimize
(:mod:`.support`). :mod:`.l0_relu` fits the same loss under a sparsity
pattern by rounds of the l0 ADMM on quadratic majorizers.
"""
from .feta import feta
from .l0_relu import l0_relu
