"""Array-API backend: the few primitives that differ between numpy and other array libraries.

numpy arrays keep the Numba/BLAS path of every solver unchanged. Any other
array that the array API standard covers (through ``array_api_compat``: torch
tensors on any device, CuPy) is solved with namespace-generic code on its own
device and dtype: the Gram statistics, matmuls, gradient steps, support
selection (:func:`~layertrim.solvers.threshold.projection.support_mask_xp`)
and dense solves (``xp.linalg``). The core never imports such a library
itself. The pieces that stay on the host (the support exchanges, grouping
columns by support) move the few arrays they need with :func:`to_host`.
"""
from __future__ import annotations

from dataclasses import replace

import array_api_compat as aac
import numpy as np

from .errors import EmptyDataError, NonFiniteError, ParameterError, ShapeError
from .gram import Quadratic, as_quadratic
from .validation import check_bool, check_weights


def is_foreign(x) -> bool:
    """True for an array-API array that is not a numpy array (e.g. a torch tensor)."""
    return aac.is_array_api_obj(x) and not aac.is_numpy_array(x)


def namespace(*arrays):
    """The array namespace shared by ``arrays`` (numpy's for numpy arrays)."""
    return aac.array_namespace(*(a for a in arrays if a is not None))


def to_host(x) -> np.ndarray:
    """A foreign array as a numpy array on the host; anything else (numpy, lists, None) unchanged."""
    if not is_foreign(x):
        return x
    return np.asarray(aac.to_device(x, "cpu"))


def like(a, ref, dtype=None):
    """The host or device array ``a`` as an array of ``ref``'s library, device and (or) ``dtype``."""
    xp = namespace(ref)
    out = xp.asarray(a, device=aac.device(ref))
    return xp.astype(out, ref.dtype if dtype is None else dtype)


def check_xp_array(a, name: str, *, ndim: int = 2, dtype=None):
    """A foreign array of ``ndim`` dimensions, real floating (integers become float64), finite."""
    xp = namespace(a)
    if a.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if any(n == 0 for n in a.shape):
        raise EmptyDataError(f"{name} is empty (shape {tuple(a.shape)}); every axis needs at least one entry")
    if xp.isdtype(a.dtype, "complex floating"):
        raise ShapeError(f"{name} must be real, got dtype {a.dtype}")
    target = dtype if dtype is not None else (a.dtype if xp.isdtype(a.dtype, "real floating") else xp.float64)
    a = xp.astype(a, target)
    if not bool(xp.all(xp.isfinite(a))):
        raise NonFiniteError(f"{name} contains NaN or infinite value(s); remove or impute them")
    return a


def quadratic_xp(X, Y, *, intercept: bool) -> Quadratic:
    """The Gram form of ``(1/2P) ||X W + 1 b^T - Y||^2`` from foreign arrays, on their device.

    ``G = Xc^T Xc / P``, ``C = Xc^T Yc / P``, ``yy = ||Yc_m||^2 / P`` with
    ``Xc = X - x_mean`` (``Yc`` likewise) when ``intercept``, else ``Xc = X``;
    computed in the data's dtype (float32 stays float32, unlike the float64
    statistics of the numpy path).
    """
    if Y is None:
        raise ShapeError("Y is required when X is an array")
    try:
        xp = namespace(X, Y)
    except TypeError as exc:
        raise ShapeError(f"X and Y must be arrays of one library and device ({exc})") from None
    if Y.ndim == 1:
        Y = Y[:, None]
    X = check_xp_array(X, "X")
    dtype = xp.float32 if X.dtype == xp.float32 and Y.dtype == xp.float32 else xp.float64
    X, Y = check_xp_array(X, "X", dtype=dtype), check_xp_array(Y, "Y", dtype=dtype)
    if X.shape[0] != Y.shape[0]:
        raise ShapeError(f"X and Y must have the same number of samples (rows): {X.shape[0]} and {Y.shape[0]}")
    P = X.shape[0]
    x_mean, y_mean = xp.mean(X, axis=0), xp.mean(Y, axis=0)
    Xc, Yc = (X - x_mean, Y - y_mean) if intercept else (X, Y)
    G, C, yy = (Xc.T @ Xc) / P, (Xc.T @ Yc) / P, xp.sum(Yc * Yc, axis=0) / P
    if not bool(xp.all(xp.isfinite(G))) or not bool(xp.all(xp.isfinite(C))):
        raise NonFiniteError("the second moments of X and Y overflow; rescale X and Y")
    return Quadratic(G=G, C=C, yy=yy, x_mean=x_mean, y_mean=y_mean, n_samples=P, intercept=intercept, dtype=dtype)


def loss(q: Quadratic, W) -> float:
    """``q.loss(W)`` for numpy (unchanged), the same formula in ``W``'s namespace otherwise."""
    if not is_foreign(W):
        return q.loss(W)
    xp = namespace(W)
    val = 0.5 * float(xp.sum(W * (q.G @ W))) - float(xp.sum(q.C * W)) + 0.5 * float(xp.sum(q.yy))
    return max(val, 0.0)


def intercept_for(q: Quadratic, W):
    """``b = y_mean - x_mean W`` (None without intercept) in ``W``'s namespace."""
    if not is_foreign(W):
        return q.intercept_for(W)
    return None if not q.intercept else q.y_mean - q.x_mean @ W


def zero_fraction(W) -> float:
    """Fraction of exactly-zero entries of ``W``."""
    xp = namespace(W)
    return float(xp.mean(xp.astype(W == 0, xp.float64)))


def fro(x) -> float:
    """``||x||_F``: ``np.linalg.norm`` for numpy, ``vector_norm`` over all entries otherwise."""
    if not is_foreign(x):
        return float(np.linalg.norm(x))
    return float(namespace(x).linalg.vector_norm(x))


def to_host_quadratic(q: Quadratic) -> Quadratic:
    """``q`` with float64 numpy moments (for the host-only pieces: exchanges, permutations)."""
    if not is_foreign(q.G):
        return q
    host = {k: to_host(getattr(q, k)).astype(np.float64) for k in ("G", "C", "yy", "x_mean", "y_mean")}
    return Quadratic(**host, n_samples=q.n_samples, intercept=q.intercept, dtype=np.dtype(np.float64))


def scatter_rows(values, rows: np.ndarray, n: int):
    """The ``(n, k)`` array with ``values[r]`` at row ``rows[r]`` and zeros elsewhere (``rows`` on the host).

    Built by one ``take`` from ``values`` with a zero row appended, so it needs
    no integer-array assignment (which the array API standard does not have).
    """
    xp = namespace(values)
    index = np.full(n, len(rows), dtype=np.int64)
    index[rows] = np.arange(len(rows))
    padded = xp.concat([values, xp.zeros((1, values.shape[1]), dtype=values.dtype, device=aac.device(values))])
    return xp.take(padded, xp.asarray(index, device=aac.device(values)), axis=0)


def take_2d(A, rows: np.ndarray, cols: np.ndarray):
    """``A[rows][:, cols]`` for host index arrays ``rows``, ``cols``."""
    xp, dev = namespace(A), aac.device(A)
    return xp.take(xp.take(A, xp.asarray(rows, device=dev), axis=0), xp.asarray(cols, device=dev), axis=1)


def as_quadratic_any(X, Y=None, *, intercept: bool = True) -> Quadratic:
    """:func:`~.gram.as_quadratic` for numpy data and statistics, :func:`quadratic_xp` for foreign arrays."""
    if is_foreign(X) or is_foreign(Y):
        return quadratic_xp(X, Y, intercept=check_bool(intercept, "intercept"))
    return as_quadratic(X, Y, intercept=intercept)


def check_start(W0, n_features: int, n_outputs: int, ref, name: str = "W0"):
    """Validated start weights: float64 numpy for numpy moments ``ref``, else ``ref``'s library and dtype."""
    if not is_foreign(ref):
        return check_weights(W0, n_features, n_outputs, name=name, dtype=np.float64)
    W = check_xp_array(W0 if is_foreign(W0) else like(check_weights(W0, n_features, n_outputs, name=name), ref),
                       name, dtype=ref.dtype)
    if tuple(W.shape) != (n_features, n_outputs):
        raise ShapeError(f"{name} must have shape ({n_features}, {n_outputs}), got {tuple(W.shape)}")
    return like(W, ref)


def refuse_foreign(ref, option: str, value) -> None:
    """ParameterError when a numpy-only ``option`` is set for foreign arrays."""
    if value and is_foreign(ref):
        raise ParameterError(f"{option}={value!r} is only available for numpy input; convert the arrays with "
                             "numpy.asarray (on the host) or leave the option off")


def on_device(a, ref):
    """The host array ``a`` (or None) as an array of ``ref``'s library on its device, dtype kept."""
    return None if a is None else namespace(ref).asarray(a, device=aac.device(ref))


def result_on_host(res):
    """A :class:`Result` with ``W``, ``b`` as host numpy arrays (unchanged for numpy results)."""
    return res if not is_foreign(res.W) else replace(res, W=to_host(res.W), b=to_host(res.b))
