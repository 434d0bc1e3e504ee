"""Validation helpers, the error hierarchy, Result and the sparsity bisection."""
import numpy as np
import pytest

from layertrim.solvers import (
    EmptyDataError,
    InfeasibleError,
    LayerTrimError,
    MissingDependencyError,
    NonFiniteError,
    ParameterError,
    Result,
    ShapeError,
    bisect_sparsity,
)
from layertrim.solvers.base.validation import (
    check_array,
    check_choice,
    check_scalar,
    check_sparsity,
    check_weights,
    check_xy,
    exactly_one,
    result_dtype,
)


def test_hierarchy():
    for cls in (ShapeError, NonFiniteError, EmptyDataError, ParameterError, InfeasibleError):
        assert issubclass(cls, LayerTrimError) and issubclass(cls, ValueError)
    assert issubclass(MissingDependencyError, LayerTrimError) and issubclass(MissingDependencyError, ImportError)


def test_check_array_dtype_policy():
    assert check_array(np.ones((2, 2), np.float32), "X").dtype == np.float32
    assert check_array(np.ones((2, 2), np.int64), "X").dtype == np.float64
    assert check_array([[1, 2]], "X").flags.c_contiguous
    assert check_array(np.ones((3, 2)).T, "X").flags.c_contiguous
    assert result_dtype(np.ones(1, np.float32), np.ones(1)) == np.float64


@pytest.mark.parametrize(
    "value, error, match",
    [
        (np.ones(3), ShapeError, "2-D"),
        ([[1, 2], [3]], ShapeError, "converted"),
        (np.array([["a"]]), ShapeError, "numeric"),
        (np.ones((2, 2), complex), ShapeError, "real"),
        (np.ones((0, 2)), EmptyDataError, "empty"),
        (np.array([[1.0, np.nan]]), NonFiniteError, "1 NaN"),
        (np.array([[np.inf, -np.inf]]), NonFiniteError, "2 NaN"),
    ],
)
def test_check_array_errors(value, error, match):
    with pytest.raises(error, match=match):
        check_array(value, "X")


def test_check_xy():
    X, Y = check_xy(np.ones((4, 2), np.float32), np.ones(4, np.float32))
    assert Y.shape == (4, 1) and X.dtype == Y.dtype == np.float32
    X, Y = check_xy(np.ones((4, 2), np.float32), np.ones((4, 1)))
    assert X.dtype == Y.dtype == np.float64
    with pytest.raises(ShapeError, match="X has 4, Y has 3"):
        check_xy(np.ones((4, 2)), np.ones((3, 1)))
    with pytest.raises(ShapeError, match=r"shape \(2, 3\)"):
        check_weights(np.ones((3, 3)), 2, 3)


def test_check_scalar():
    assert check_scalar(3, "k", low=0, integer=True) == 3
    assert check_scalar(np.float32(0.5), "a", low=0, high=1) == 0.5
    for value, kw, match in [
        (True, {}, "real number"),
        ("1", {}, "real number"),
        (1.5, {"integer": True}, "integer"),
        (np.inf, {}, "finite"),
        (0.0, {"low": 0.0, "low_open": True}, "> 0"),
        (-1.0, {"low": 0.0}, ">= 0"),
        (1.0, {"high": 1.0, "high_open": True}, "< 1"),
        (2.0, {"high": 1.0}, "<= 1"),
    ]:
        with pytest.raises(ParameterError, match=match):
            check_scalar(value, "p", **kw)
    assert check_sparsity(0.0) == 0.0
    with pytest.raises(ParameterError, match="sparsity"):
        check_sparsity(1.0)
    assert check_choice("a", "c", ("a", "b")) == "a"
    with pytest.raises(ParameterError, match="one of"):
        check_choice("z", "c", ("a", "b"))
    exactly_one("lam", 1.0, "sparsity", None)
    for a, b in [(None, None), (1.0, 0.5)]:
        with pytest.raises(ParameterError, match="exactly one of lam= and sparsity="):
            exactly_one("lam", a, "sparsity", b)


def test_result():
    W = np.array([[0.0, 1.0], [0.0, 0.0]])
    res = Result(W=W, b=np.array([1.0, 2.0]), status="optimal", objective=1.0, iterations=3, time=0.1)
    assert res.converged and res.sparsity == 0.75
    np.testing.assert_allclose(res.predict(np.array([[1.0, 1.0]])), [[1.0, 3.0]])
    assert "sparsity=0.750" in repr(res)
    with pytest.raises(ValueError, match="status"):
        Result(W=W, b=None, status="done", objective=0.0, iterations=0, time=0.0)


def _threshold_solver(values):
    """A solver whose weights are ``values`` soft-thresholded at t (zeros grow with t)."""

    def solve(t, warm):
        W = np.where(np.abs(values) > t, values, 0.0)
        return Result(W=W, b=None, status="optimal", objective=0.0, iterations=1, time=0.0)

    return solve


@pytest.mark.parametrize("target", [0.0, 0.3, 0.77, 0.95])
def test_bisect_sparsity_hits_target(target, rng):
    values = rng.standard_normal((40, 5))
    res, t, trace = bisect_sparsity(_threshold_solver(values), target, 0.0, 10.0, count_tol=0)
    k = int(np.ceil(target * values.size))
    # distinct magnitudes: every zero count is reachable, so the count is exact
    assert int(np.sum(res.W == 0)) == k
    assert trace[0][0] == 10.0 and len(trace) <= 40


def test_bisect_sparsity_errors():
    values = np.arange(1.0, 11.0).reshape(5, 2)
    with pytest.raises(ParameterError, match="lo < hi"):
        bisect_sparsity(_threshold_solver(values), 0.5, 2.0, 1.0)
    with pytest.raises(ParameterError, match="not reached"):
        bisect_sparsity(_threshold_solver(values), 0.9, 0.0, 1.0)
