"""The registry of pruning methods: one :class:`Method` adapter per method.

A method says what data it needs (Gram statistics or sample rows), which
targets (``sparsity`` / ``eps`` / ``lam``) and sparsity patterns it honours,
which solver options it accepts, and how it solves one layer group
(``solve(problem, spec) -> Solution``). :func:`~layertrim.bindings.torch.prune`,
the command line and the docs read the registry; :func:`register_method`
adds a user's own method.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.gram import GramStats
from layertrim.solvers.base.patterns import parse_pattern

DATA_KINDS = ("gram", "rows")
TARGETS = ("sparsity", "eps", "lam")
#: every pattern kind (``"n:m"`` stands for all N:M patterns)
ALL_PATTERNS = ("unstructured", "per_output", "n:m", "input_rows", "output_columns")


@dataclass(frozen=True)
class LayerProblem:
    """One layer group's problem as a method sees it.

    ``data`` is a :class:`GramStats` (``data="gram"`` methods) or ``(X, Y)``
    rows; ``Y`` is the dense pre-activation. ``W0 (K, M_g)`` and ``b0 (M_g,)``
    (or None) are the dense weights; ``relu`` says a ReLU follows; ``cascade``
    that the inputs come from the already pruned network; ``gamma`` is the
    Net-Trim cascade slack.
    """

    data: object
    W0: np.ndarray
    b0: np.ndarray | None
    relu: bool
    cascade: bool
    gamma: float

    @property
    def intercept(self) -> bool:
        return self.b0 is not None

    def linear_args(self):
        """``(X, Y)`` rows or ``(GramStats, None)``: the first two arguments of a squared-loss solver."""
        return (self.data, None) if isinstance(self.data, GramStats) else self.data


@dataclass
class Solution:
    """What a method returns for one group.

    ``refit=False`` says the generic least-squares refit must not follow
    (the method refits itself, or fits a post-ReLU loss that the refit would
    undo); ``info`` is merged into the layer report.
    """

    W: np.ndarray
    b: np.ndarray | None
    status: str = "optimal"
    iterations: int = 0
    info: dict = field(default_factory=dict)
    refit: bool = True


def keyword_options(fn: Callable, *, exclude=()) -> frozenset:
    """Keyword-only parameters of a core solver that a user may set, minus those the adapter sets."""
    params = inspect.signature(fn).parameters.values()
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY) - set(exclude)


@dataclass(frozen=True)
class Method:
    """A pruning method adapter.

    Parameters
    ----------
    name : str
        What users pass as ``method=``.
    data : {"gram", "rows"}
        Gram statistics (memory independent of the number of samples) or a
        row sample of ``(X, Y)``.
    targets : tuple of {"sparsity", "eps", "lam"}
        The targets it accepts; each layer gives exactly one.
    patterns : tuple
        Pattern kinds it honours (see :data:`ALL_PATTERNS`).
    options : frozenset of str
        Solver options it accepts (``**solver_options`` of ``prune``).
    solve : callable ``(LayerProblem, LayerSpec) -> Solution``
    summary : str
        One line for help texts.
    linear_fallback : str, optional
        The method used on layers that no ReLU follows (FeTa -> lasso).
    separable : tuple
        Pattern kinds on which the method solves every output column on its
        own: a block of columns solved alone gives exactly those columns of
        the whole solve (``prune(column_blocks=...)`` splits only these).
    solve_groups : callable ``(list of LayerProblem, LayerSpec) -> list of Solution or None``, optional
        Every group of a grouped layer (a depthwise conv's channels) at once,
        each with the result ``solve`` gives it alone; None where it does not
        apply to the spec or data (then the groups are solved one by one).
    """

    name: str
    data: str
    targets: tuple
    patterns: tuple
    options: frozenset
    solve: Callable
    summary: str = ""
    linear_fallback: str | None = None
    separable: tuple = ()
    solve_groups: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ParameterError(f"method name must be an identifier string, got {self.name!r}")
        if self.data not in DATA_KINDS:
            raise ParameterError(f"method {self.name!r}: data must be one of {DATA_KINDS}, got {self.data!r}")
        bad = [t for t in self.targets if t not in TARGETS] or ([] if self.targets else ["(none)"])
        if bad:
            raise ParameterError(f"method {self.name!r}: targets must be a non-empty subset of {TARGETS}, got {bad}")
        bad = [p for p in self.patterns if p not in ALL_PATTERNS]
        if bad or not self.patterns:
            raise ParameterError(f"method {self.name!r}: patterns must be a non-empty subset of {ALL_PATTERNS}")
        if not set(self.separable) <= set(self.patterns):
            raise ParameterError(f"method {self.name!r}: separable must be a subset of its patterns {self.patterns}")
        if not callable(self.solve) or not (self.solve_groups is None or callable(self.solve_groups)):
            raise ParameterError(f"method {self.name!r}: solve (and solve_groups, if given) must be callable")

    def check_pattern(self, pattern, layer: str) -> None:
        kind = parse_pattern(pattern).kind
        if kind not in self.patterns:
            raise ParameterError(
                f"layer {layer!r}: method {self.name!r} cannot honour pattern {str(pattern)!r}; "
                f"it honours {list(self.patterns)} (magnitude and iht honour every pattern)"
            )

    def check_separable(self, pattern, layer: str) -> None:
        """The method solves ``pattern``'s output columns independently (else a ParameterError)."""
        if parse_pattern(pattern).kind not in self.separable:
            splits = [(m.name, m.separable) for m in _REGISTRY.values() if m.separable]
            raise ParameterError(
                f"layer {layer!r}: method {self.name!r} with pattern {str(pattern)!r} couples its output "
                f"columns, so column_blocks > 1 would change the result; methods and patterns that "
                f"split exactly: {splits}"
            )

    def check_options(self, options: dict, layer: str) -> None:
        unknown = sorted(set(options) - self.options)
        if unknown:
            hints = []
            for u in unknown:
                close = difflib.get_close_matches(u, sorted(self.options), n=1)
                hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ParameterError(
                f"layer {layer!r}: method {self.name!r} has no option {', '.join(hints)}; "
                f"its options are {sorted(self.options)}"
            )


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to redefine a name); returns it."""
    if not isinstance(method, Method):
        raise ParameterError(f"register_method takes a Method, got {type(method).__name__}")
    if method.name in _REGISTRY and not replace:
        raise ParameterError(f"a method named {method.name!r} is already registered (pass replace=True)")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (a no-op for unknown names)."""
    _REGISTRY.pop(name, None)


def registered_methods() -> tuple:
    """Names of the registered methods, in registration order."""
    return tuple(_REGISTRY)


def get_method(name) -> Method:
    """The registered method called ``name`` (ParameterError naming the choices otherwise)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ParameterError(f"method must be one of {registered_methods()}, got {name!r}") from None
