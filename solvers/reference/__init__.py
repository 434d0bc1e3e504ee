"""Reference formulations of layertrim's convex problems in cvxpy (Clarabel or SCS)
and, for the l1 lasso, directly in OSQP: slow but independent, for checking any
fast solution. Needs the ``verify`` extra (cvxpy, osqp, clarabel, scs)."""
from ._cvxpy import require_cvxpy, solve

# --- reference exports: one line per module ------------------------------------
from .feta import feta_subproblem
from .nettrim import nettrim
from .lasso import lasso, lasso_osqp
# --- end of reference exports --------------------------------------------------
