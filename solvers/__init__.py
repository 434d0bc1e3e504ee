"""layertrim.solvers: the framework-agnostic core (numpy in, numpy out; no torch).

Every solver takes samples-as-rows data ``X (P, N)``, ``Y (P, M)`` (or a
:class:`GramStats` where only second moments matter), returns one
:class:`Result`, and raises a :class:`LayerTrimError` subclass on bad input.

One package per problem family, on a shared :mod:`.base`:

- :mod:`.lasso`: ``min (1/2P)||XW + 1b^T - Y||^2 + lam R(W)`` (l1, group, elastic net)
- :mod:`.nettrim`: ``min ||W||_1`` s.t. a ReLU-consistent fit within ``eps``
- :mod:`.dc`: ``min (1/2P)||relu(XW + 1b^T) - Y||^2 + lam ||W||_1`` (convex-concave procedure)
- :mod:`.threshold`: projection onto patterns, refit, IHT, l0 ADMM, swaps, channel selection,
  the Wanda and SparseGPT baselines
- :mod:`.grda`: generalized regularized dual averaging
- :mod:`.threed`: accuracy model and its FLOPs-constrained maximum (3-D pruning)
- :mod:`.reference`: the convex problems in cvxpy / OSQP
"""
from .base import (
    ConvergenceWarning,
    EmptyDataError,
    GramStats,
    InfeasibleError,
    LayerTrimError,
    MissingDependencyError,
    NonFiniteError,
    ParameterError,
    Quadratic,
    Result,
    ShapeError,
    bisect_sparsity,
    warmup,
)
from .dc import feta, l0_relu
from .grda import grda, grda_step
from .lasso import lam_max, lasso
from .nettrim import nettrim
from .nettrim.reweighted import nettrim_reweighted
from .threed import AccuracyModel, FlopsModel, ThreeDOptimum, fit_accuracy_model, maximize_accuracy, monomial_exponents, realizable_optimum
from .threshold import (
    backward_group_selection, iht, l0_admm, magnitude, nm_permutation, project, refit, sparsegpt, wanda,
)
