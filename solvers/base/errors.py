"""The exception hierarchy of layertrim: every error the library raises on bad
input derives from :class:`LayerTrimError` (and from ``ValueError`` where the
problem is a bad value), so callers can catch one class."""


class LayerTrimError(Exception):
    """Root of every error raised by layertrim."""


class ShapeError(LayerTrimError, ValueError):
    """Arrays have the wrong number of dimensions or disagreeing sizes."""


class NonFiniteError(LayerTrimError, ValueError):
    """An input holds NaN or infinite values."""


class EmptyDataError(LayerTrimError, ValueError):
    """An input has no samples, features or outputs."""


class ParameterError(LayerTrimError, ValueError):
    """A parameter (lam, eps, sparsity, tol, pattern, ...) is out of range or unknown."""


class InfeasibleError(LayerTrimError, ValueError):
    """The requested constraints admit no solution."""


class MissingDependencyError(LayerTrimError, ImportError):
    """An optional dependency (cvxpy, torch, ...) needed by this call is not installed."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration limit before meeting its tolerance."""
