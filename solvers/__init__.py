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
# --- end of solver exports ----------------------------------------------------
