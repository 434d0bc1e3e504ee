"""Shared base of the solver families: errors, the result type, input
validation, Gram statistics, sparsity patterns, the sparsity path search,
proximal operators and kernel warm-up.

Data conventions (every family): samples are rows, ``X (P, N)``, ``Y (P, M)``,
weights ``W (N, M)``, an unpenalized intercept ``b (M,)``; squared-loss
problems may instead receive ``GramStats`` with ``G = X^T X / P``,
``C = X^T Y / P``, ``||Y||^2 / P`` and the means.
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
