"""Net-Trim (Aghasi et al.): the convex program that prunes one layer.

ReLU layer, ``Omega = {Y > 0}``::

    min_{W, b} ||W||_1  s.t.  ||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F,
                              (X W + 1 b^T)_{Omega^c} <= V_{Omega^c}

linear layer: ``||X W + 1 b^T - Y||_F <= eps ||Y||_F``. Solved by ADMM
(:mod:`.solver`) on a reduced, scaled and factorized instance
(:mod:`.problem`); the fused Numba steps are in :mod:`.steps`, the loop in
:mod:`.kernels`.
"""
from .solver import nettrim
