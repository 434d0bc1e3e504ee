"""layertrim.solvers: the framework-agnostic core (numpy in, numpy out; no torch).

Every solver takes samples-as-rows data ``X (P, N)``, ``Y (P, M)`` (or a
:class:`GramStats` where only second moments matter), returns one
:class:`Result`, and raises a :class:`LayerTrimError` subclass on bad input.
"""
from .errors import (
    ConvergenceWarning,
    EmptyDataError,
    InfeasibleError,
    LayerTrimError,
    MissingDependencyError,
    NonFiniteError,
    ParameterError,
    ShapeError,
)
from .gram import GramStats, Quadratic
from .path import bisect_sparsity
from .result import Result
from .warmup import warmup

# --- solver exports: one line per solver module -------------------------------
from .grda import grda, grda_step
from .feta import feta
from .nettrim import nettrim
from .lasso import lam_max, lasso
from .threed import AccuracyModel, FlopsModel, ThreeDOptimum, fit_accuracy_model, maximize_accuracy, monomial_exponents, realizable_optimum
from .channel_selection import backward_group_selection
from .projection import project
from .refit import refit
from .iht import iht
from .magnitude import magnitude
from .permutation import nm_permutation
# --- end of solver exports ----------------------------------------------------
