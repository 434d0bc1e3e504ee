"""Input validation in one place: shapes, dtypes, finiteness and parameter ranges.

Dtype policy: float32 inputs stay float32, everything else becomes float64; a
result is returned in the dtype chosen here.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import EmptyDataError, NonFiniteError, ParameterError, ShapeError


def result_dtype(*arrays) -> np.dtype:
    """float32 when every array is float32, float64 otherwise."""
    if arrays and all(np.asarray(a).dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def check_array(a, name: str, *, ndim: int = 2, dtype=None, allow_empty: bool = False) -> np.ndarray:
    """Return ``a`` as a C-contiguous float array of ``ndim`` dimensions.

    Raises ShapeError (wrong ndim), EmptyDataError (a zero-length axis),
    NonFiniteError (NaN/Inf) with the offending name in the message.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ShapeError(f"{name} cannot be converted to an array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ShapeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise EmptyDataError(f"{name} is empty (shape {arr.shape})")
    if np.iscomplexobj(arr):
        raise ShapeError(f"{name} must be real, got dtype {arr.dtype}")
    target = np.dtype(dtype) if dtype is not None else result_dtype(arr)
    arr = np.ascontiguousarray(arr, dtype=target)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise NonFiniteError(f"{name} contains {bad} NaN or infinite value(s)")
    return arr


def check_xy(X, Y):
    """Validate a layer problem ``X (P, N)``, ``Y (P, M)`` (1-D ``Y`` is one output).

    Returns ``(X, Y)`` as contiguous arrays of one common dtype.
    """
    Xa, Ya = np.asarray(X), np.asarray(Y)
    if Ya.ndim == 1:
        Ya = Ya[:, None]
    dtype = result_dtype(Xa, Ya)
    Xc = check_array(Xa, "X", dtype=dtype)
    Yc = check_array(Ya, "Y", dtype=dtype)
    if Xc.shape[0] != Yc.shape[0]:
        raise ShapeError(
            f"X and Y must have the same number of samples (rows): X has {Xc.shape[0]}, Y has {Yc.shape[0]}"
        )
    return Xc, Yc


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
    if value not in options:
        raise ParameterError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def exactly_one(name_a: str, a, name_b: str, b) -> None:
    """Exactly one of two alternative parameters (e.g. lam / sparsity) must be given."""
    if (a is None) == (b is None):
        raise ParameterError(f"give exactly one of {name_a}= and {name_b}=")
