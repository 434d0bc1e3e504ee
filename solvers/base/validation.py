"""Input validation in one place: shapes, dtypes, finiteness and parameter ranges.

Dtype policy: float32 inputs stay float32, everything else becomes float64; a
result is returned in the dtype chosen here.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import EmptyDataError, NonFiniteError, ParameterError, ShapeError


def result_dtype(*arrays) -> np.dtype:
    """float32 when every array is float32, float64 otherwise (also for inputs
    that are no arrays at all: :func:`check_array` then rejects them)."""
    try:
        if arrays and all(np.asarray(a).dtype == np.float32 for a in arrays):
            return np.dtype(np.float32)
    except Exception:  # noqa: BLE001 - ragged and the like
        pass
    return np.dtype(np.float64)


def as_numeric_array(a, name: str) -> np.ndarray:
    """``np.asarray(a)`` of a real numeric (or boolean) dtype, else ShapeError naming ``name``.

    Ragged nested lists, strings, objects, complex, datetime and timedelta
    values are rejected here, before any conversion error of numpy can surface.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ShapeError(
            f"{name} cannot be converted to an array ({exc}); pass a rectangular numeric array"
        ) from exc
    kind = arr.dtype.kind
    if kind == "c":
        raise ShapeError(f"{name} must be real, got dtype {arr.dtype}; pass the real part or a float array")
    if kind not in "biuf":
        raise ShapeError(
            f"{name} must be a numeric array, got dtype {arr.dtype}"
            + (" (ragged nested lists?)" if kind == "O" else "")
            + "; pass a rectangular array of floats"
        )
    return arr


def check_array(a, name: str, *, ndim: int = 2, dtype=None, allow_empty: bool = False) -> np.ndarray:
    """Return ``a`` as a C-contiguous float array of ``ndim`` dimensions.

    Raises ShapeError (not numeric, ragged, complex, wrong ndim), EmptyDataError
    (a zero-length axis), NonFiniteError (NaN/Inf, also values that overflow
    the target dtype) with the offending name in the message.
    """
    arr = as_numeric_array(a, name)
    if arr.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise EmptyDataError(f"{name} is empty (shape {arr.shape}); every axis needs at least one entry")
    target = np.dtype(dtype) if dtype is not None else result_dtype(arr)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
        arr = np.ascontiguousarray(arr, dtype=target)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise NonFiniteError(
            f"{name} contains {bad} NaN or infinite value(s) (in {target}); remove or impute them"
        )
    return arr


#: elements converted to float64 at a time by :func:`squared_norm` (8 MB)
_NORM_CHUNK = 1 << 20


def squared_norm(a: np.ndarray) -> float:
    """``||a||_F^2`` accumulated in float64 (``inf`` when it overflows), without a full float64 copy."""
    flat = np.ascontiguousarray(a).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        if flat.dtype == np.float64:
            return float(flat @ flat)
        total = 0.0
        for start in range(0, flat.size, _NORM_CHUNK):
            part = flat[start : start + _NORM_CHUNK].astype(np.float64)
            total += float(part @ part)
        return total


def check_moments(X: np.ndarray, Y: np.ndarray) -> None:
    """Raise NonFiniteError when finite data are scaled beyond what the solvers can represent.

    1. Every entry of ``X^T X``, ``X^T Y`` and ``Y^T Y`` (centered or not, before
       the division by ``P``) is bounded by ``||X||_F^2``, ``||X||_F ||Y||_F`` and
       ``||Y||_F^2`` (and ``||X||_F ||Y||_F <= max(||X||_F^2, ||Y||_F^2)``); when
       one of them is not a finite float64 the layer problem cannot be
       represented, whichever solver is used.
    2. The weights of a fit are of the order ``||Y||_F / ||X||_F``; when the
       square of that overflows float64 (or the ratio itself the data's
       float32), norms and objectives of ``W`` overflow although the data do not.
    """
    sx, sy = squared_norm(X), squared_norm(Y)
    for name, val, arr in (("X", sx, X), ("Y", sy, Y)):
        if not np.isfinite(val):
            raise NonFiniteError(
                f"{name} is finite but ||{name}||_F^2 overflows float64 (largest |entry| "
                f"{float(np.max(np.abs(arr))):.3g}); rescale {name} (e.g. divide it by its largest entry)"
            )
    if sx > 0 and sy > 0:
        ratio = np.sqrt(sy) / np.sqrt(sx)
        if not ratio < _ratio_limit(X.dtype):
            raise NonFiniteError(
                f"X and Y are scaled far apart: the weights would be of the order ||Y||_F / ||X||_F = "
                f"{ratio:.3g}, beyond what {X.dtype} solvers can represent; rescale X or Y to comparable "
                "magnitudes (e.g. divide each by its largest entry)"
            )


def _ratio_limit(dtype) -> float:
    """The largest ``||Y||_F / ||X||_F`` whose square (and, for float32 data, itself) is representable."""
    limit = float(np.sqrt(np.finfo(np.float64).max))
    return min(limit, float(np.finfo(np.float32).max)) if dtype == np.float32 else limit


#: how far inside every limit of :func:`check_moments` squared norms summed in any order must lie
#: to be accepted without the exact check (rounding moves them by far less)
_MARGIN = 1e3


def clearly_representable(sx: np.ndarray, sy: np.ndarray, dtype) -> np.ndarray:
    """Where squared norms ``sx = ||X_g||_F^2``, ``sy = ||Y_g||_F^2`` (arrays, summed in any order) pass
    :func:`check_moments` with a margin of ``1e3`` on every limit; elsewhere run the exact check."""
    big = np.finfo(np.float64).max / _MARGIN
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = np.sqrt(sy) / np.sqrt(sx)
        ok = (sx < big) & (sy < big)
        return ok & ((sx == 0) | (sy == 0) | (ratio < _ratio_limit(dtype) / _MARGIN))


#: the advice of every NonFiniteError about overflowing statistics
_RESCALE = "rescale X and Y (e.g. divide each by its largest entry) before accumulating"


def check_finite_moments(source: str, **moments) -> None:
    """Raise NonFiniteError if any of the named moment arrays holds NaN or Inf.

    Finite data can still have second moments beyond float64 (``X^T Y`` of
    ``X ~ 1e8``, ``Y ~ 1e300``); every solver in Gram form would then compute
    with infinities (and selection kernels with NaN scores), so this is checked
    once, where the statistics are formed or received.
    """
    for name, value in moments.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ShapeError(f"{source}: {name} must be a numeric array, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise NonFiniteError(
                f"{source}: {name} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} "
                f"(the statistics overflow float64 or were given NaN/Inf); {_RESCALE}"
            )


def check_xy(X, Y):
    """Validate a layer problem ``X (P, N)``, ``Y (P, M)`` (1-D ``Y`` is one output).

    Returns ``(X, Y)`` as contiguous arrays of one common dtype. Besides the
    checks of :func:`check_array`, data whose second moments or implied
    weight scale overflow are rejected (:func:`check_moments`).
    """
    Xa, Ya = as_numeric_array(X, "X"), as_numeric_array(Y, "Y")
    if Ya.ndim == 1:
        Ya = Ya[:, None]
    dtype = result_dtype(Xa, Ya)
    Xc = check_array(Xa, "X", dtype=dtype)
    Yc = check_array(Ya, "Y", dtype=dtype)
    if Xc.shape[0] != Yc.shape[0]:
        raise ShapeError(
            f"X and Y must have the same number of samples (rows): X has {Xc.shape[0]}, Y has {Yc.shape[0]}"
        )
    check_moments(Xc, Yc)
    return Xc, Yc


def check_broadcastable(value, name: str, shape, dtype=None) -> np.ndarray:
    """``value`` as a validated array of ``shape``: lower-dimensional values (a scalar, one
    value per column) are broadcast, full-dimensional ones must match exactly."""
    arr = as_numeric_array(value, name)
    shape = tuple(shape)
    if arr.ndim >= len(shape):
        if arr.shape != shape:
            raise ShapeError(f"{name} must have shape {shape}, got {arr.shape}")
    else:
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ShapeError(
                f"{name} of shape {arr.shape} does not broadcast to {shape}; pass a scalar, "
                f"one value per column ({shape[-1]},) or the full shape {shape}"
            ) from None
    return check_array(arr, name, ndim=len(shape), dtype=dtype)


def check_weights(W, n_features: int, n_outputs: int, name: str = "W", dtype=None) -> np.ndarray:
    """Validate a weight matrix of shape ``(n_features, n_outputs)``."""
    Wa = check_array(W, name, dtype=dtype)
    if Wa.shape != (n_features, n_outputs):
        raise ShapeError(f"{name} must have shape ({n_features}, {n_outputs}), got {Wa.shape}")
    return Wa


def check_scalar(value, name: str, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    """Check a real (or integer) scalar against an interval; return it as float/int."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ParameterError(f"{name} must be {'an integer' if integer else 'a real number'}, got {value!r}")
    if not np.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ParameterError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ParameterError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return int(value) if integer else float(value)


def check_sparsity(sparsity) -> float:
    """A target fraction of zero weights, in ``[0, 1)``."""
    return check_scalar(sparsity, "sparsity", low=0.0, high=1.0, high_open=True)


def check_choice(value, name: str, options) -> str:
    """``value`` must be one of ``options``."""
    try:
        known = isinstance(value, (str, numbers.Number, type(None))) and value in options
    except TypeError:  # unhashable against a set of options
        known = False
    if not known:
        raise ParameterError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """A flag: ``True``/``False`` (numpy booleans accepted), else ParameterError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def exactly_one(name_a: str, a, name_b: str, b) -> None:
    """Exactly one of two alternative parameters (e.g. lam / sparsity) must be given."""
    if (a is None) == (b is None):
        raise ParameterError(f"give exactly one of {name_a}= and {name_b}=")
