"""Convex sparse regression for linear layers (lasso family).

``min_{W, b} (1/2P) ||X W + 1 b^T - Y||_F^2 + lam R(W)`` with
``R = ||W||_1`` (``"l1"``), ``sum_i ||W_i||_2`` over input rows (``"group"``)
or ``a ||W||_1 + (1 - a)/2 ||W||_F^2`` (``"elastic_net"``); Gram-form
coordinate descent with working sets (:mod:`.cd`, kernels in
:mod:`.cd_sweeps` and :mod:`.cd_kernels`) or FISTA with restart
(:mod:`.fista`), stopped on a relative duality gap (:mod:`.duality`).
"""
from .solver import lam_max, lasso
