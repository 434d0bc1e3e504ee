"""Robustness of the public solver API on arbitrary input.

Contract: every call either returns a :class:`Result` whose ``W`` (and ``b``)
is finite and has the data's dtype, or raises a :class:`LayerTrimError`
subclass -- never another exception, never a crash or a hang. The fuzz test
draws small layers of float32/float64 data at scales from 1e-300 to 1e300
with NaN/Inf entries, empty axes, constant, zero and duplicated columns; the
regression tests below pin each case that once crashed, hung or leaked a
numpy/LAPACK error.
"""
import inspect
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layertrim.solvers import (
    AccuracyModel,
    ConvergenceWarning,
    FlopsModel,
    GramStats,
    LayerTrimError,
    NonFiniteError,
    ParameterError,
    Quadratic,
    Result,
    ShapeError,
    backward_group_selection,
    feta,
    grda,
    iht,
    lam_max,
    lasso,
    magnitude,
    maximize_accuracy,
    nettrim,
    nm_permutation,
    project,
    refit,
)
from layertrim.solvers.base.result import STATUSES
from layertrim.solvers.threshold.projection import topk_in_groups

#: moderate scales are drawn more often, so that most layers reach the solvers
SCALES = (1.0, 1.0, 1.0, 1e-8, 1e8, 1e-30, 1e30, 1e-150, 1e150, 1e-300, 1e300)
STRUCTURES = ("normal", "normal", "normal", "constant_column", "zero_column", "duplicate_column", "integer",
              "rank_one")
CORRUPTIONS = ("nan_x", "inf_x", "nan_y", "ninf_y")
PATTERNS = ("unstructured", "per_output", "2:4", "input_rows", "output_columns")
SPARSITIES = (0.0, 0.5, 0.9)


def _matrix(rng, shape, scale, structure, dtype):
    with np.errstate(over="ignore"):  # float32 at 1e300 is inf on purpose: it must be rejected
        A = rng.standard_normal(shape)
        if A.size and A.shape[1] > 1:
            if structure == "constant_column":
                A[:, 0] = 3.0
            elif structure == "zero_column":
                A[:, -1] = 0.0
            elif structure == "duplicate_column":
                A[:, 1] = A[:, 0]
        if structure == "integer":
            A = np.round(4 * A)
        elif structure == "rank_one" and A.size:
            A = np.outer(A[:, 0], np.ones(A.shape[1]))
        return (A * scale).astype(dtype)


@st.composite
def layers(draw):
    """``(X, Y)``: small shapes (some empty, some mismatched), both dtypes, any scale, NaN/Inf."""
    P, N, M = draw(st.integers(1, 9)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    if draw(st.integers(0, 7)) == 0:  # wider: more than SMALL_GROUP entries per selection group
        N, M = draw(st.integers(17, 24)), draw(st.integers(1, 3))
    if draw(st.integers(0, 11)) == 0:  # an empty axis
        P, N, M = ((0, N, M), (P, 0, M), (P, N, 0))[draw(st.integers(0, 2))]
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    structure = draw(st.sampled_from(STRUCTURES))
    X = _matrix(rng, (P, N), draw(st.sampled_from(SCALES)), structure, dtype)
    P_y = P + 1 if draw(st.integers(0, 19)) == 0 else P
    Y = _matrix(rng, (P_y, M), draw(st.sampled_from(SCALES)), "normal", dtype)
    if draw(st.integers(0, 7)) == 0:
        corruption = draw(st.sampled_from(CORRUPTIONS))
        target = X if corruption in ("nan_x", "inf_x") else Y
        if target.size:
            target.flat[rng.integers(target.size)] = {"nan_x": np.nan, "inf_x": np.inf, "nan_y": np.nan,
                                                      "ninf_y": -np.inf}[corruption]
    return X, Y


def _data_dtype(*arrays):
    return np.dtype(np.float32) if all(a.dtype == np.float32 for a in arrays) else np.dtype(np.float64)


def _calls(X, Y, opt):
    """The solver calls to try on one layer: ``(name, thunk, expected dtype of W)``."""
    dt = _data_dtype(X, Y)
    Yr = np.abs(Y)
    s, pattern, intercept = opt["sparsity"], opt["pattern"], opt["intercept"]
    N, M = X.shape[1], Y.shape[1]
    with np.errstate(over="ignore"):  # float32 weights at 1e300 are inf on purpose
        W = (np.random.default_rng(0).standard_normal((N, M)) * opt["w_scale"]).astype(X.dtype)
    mask = np.random.default_rng(1).random((N, M)) < 0.5

    def from_stats(solver, **kw):
        stats = GramStats.from_arrays(X, Y)
        if opt["tamper"] and stats.Sxy.size:
            stats.Sxy.flat[0] = np.inf
        return solver(stats, **kw)

    return {
        "lasso_lam": (lambda: lasso(X, Y, lam=opt["lam"], penalty=opt["penalty"], intercept=intercept,
                                    max_iter=200), dt),
        "lasso_sparsity": (lambda: lasso(X, Y, sparsity=s, penalty=opt["penalty"], intercept=intercept,
                                         max_iter=200), dt),
        "lasso_stats": (lambda: from_stats(lasso, lam=opt["lam"], intercept=intercept, max_iter=200), dt),
        "lam_max": (lambda: lam_max(X, Y, intercept=intercept), None),
        "iht": (lambda: iht(X, Y, sparsity=None if pattern == "2:4" else s, pattern=pattern,
                            intercept=intercept, max_iter=30), dt),
        "iht_stats": (lambda: from_stats(iht, sparsity=s, intercept=intercept, max_iter=30), dt),
        "iht_debias_swaps": (lambda: iht(X, Y, sparsity=s, debias_every=3, swaps=True, max_iter=30), dt),
        "magnitude": (lambda: magnitude(W, sparsity=None if pattern == "2:4" else s, pattern=pattern), W.dtype),
        "magnitude_refit": (lambda: magnitude(W, sparsity=s, X=X, Y=Y, refit=True, intercept=intercept), dt),
        "project": (lambda: project(W, sparsity=None if pattern == "2:4" else s, pattern=pattern), W.dtype),
        "refit": (lambda: refit(X, Y, mask, intercept=intercept, ridge=opt["ridge"]), dt),
        "nettrim_eps": (lambda: nettrim(X, Yr, eps=opt["eps"], intercept=intercept, max_iter=200), dt),
        "nettrim_linear": (lambda: nettrim(X, Y, eps=opt["eps"], relu=False, intercept=intercept,
                                           max_iter=200), dt),
        "nettrim_sparsity": (lambda: nettrim(X, Yr, sparsity=s, intercept=intercept, max_iter=100), dt),
        "feta_sparsity": (lambda: feta(X, Yr, sparsity=s, intercept=intercept, support_iter=2, iht_iter=10,
                                       polish_iter=5), dt),
        "feta_lam": (lambda: feta(X, Yr, lam=opt["lam"], intercept=intercept, outer_iter=3, inner_iter=10), dt),
        "nm_permutation": (lambda: nm_permutation(np.abs(W), "2:4"), None),
        "group_selection": (lambda: backward_group_selection(X, Y, n_groups=N, n_keep=max(N // 2, 1),
                                                             intercept=intercept), dt),
        "gram_stats": (lambda: GramStats.from_arrays(X, Y).quadratic(intercept), None),
        "grda": (lambda: grda(X, Y, lr=opt["lr"], c=0.01, epochs=2, batch_size=4, intercept=intercept), dt),
    }


CALL_NAMES = tuple(_calls(np.zeros((1, 1)), np.zeros((1, 1)), {
    "sparsity": 0.5, "pattern": "unstructured", "intercept": True, "w_scale": 1.0, "tamper": False,
    "lam": 0.1, "penalty": "l1", "ridge": 0.0, "eps": 0.3, "lr": 0.1,
}))


def check_outcome(name, thunk, dtype):
    """Run ``thunk``: a LayerTrimError is fine; otherwise the output must be finite and of ``dtype``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning and numpy's own are allowed here
        try:
            out = thunk()
        except LayerTrimError:
            return None
    if isinstance(out, tuple):  # project: (W, mask)
        W, mask = out
        assert W.dtype == dtype and mask.dtype == bool, name
        assert np.all(np.isfinite(W)), name
    elif isinstance(out, Quadratic):
        for field in ("G", "C", "yy", "x_mean", "y_mean"):
            assert np.all(np.isfinite(getattr(out, field))), (name, field)
    elif isinstance(out, np.ndarray):  # nm_permutation
        assert np.array_equal(np.sort(out), np.arange(out.size)), name
    elif isinstance(out, float):  # lam_max
        assert np.isfinite(out) and out >= 0, name
    else:
        assert isinstance(out, Result), (name, type(out))
        assert out.status in STATUSES, name
        assert out.W.dtype == dtype, (name, out.W.dtype, dtype)
        assert np.all(np.isfinite(out.W)), (name, out.status)
        if out.b is not None:
            assert out.b.dtype == dtype, (name, out.b.dtype)
            assert np.all(np.isfinite(out.b)), (name, out.status)
        assert not np.isnan(out.objective), (name, out.status)
    return out


options = st.fixed_dictionaries({
    "sparsity": st.sampled_from(SPARSITIES),
    "pattern": st.sampled_from(PATTERNS),
    "intercept": st.booleans(),
    "w_scale": st.sampled_from((1.0, 1.0, 0.0, 1e-300, 1e-30, 1e30, 1e300)),
    "tamper": st.integers(0, 4).map(lambda k: k == 0),
    "lam": st.sampled_from((1e-3, 0.1, 10.0)),
    "penalty": st.sampled_from(("l1", "group", "elastic_net")),
    "ridge": st.sampled_from((0.0, 1e-3)),
    "eps": st.sampled_from((0.0, 0.3, 1.0)),
    "lr": st.sampled_from((0.01, 1.0, 100.0)),
})


@settings(derandomize=True, max_examples=2500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=layers(), name=st.sampled_from(CALL_NAMES), opt=options)
def test_public_api_returns_finite_result_or_layertrim_error(data, name, opt):
    X, Y = data
    thunk, dtype = _calls(X, Y, opt)[name]
    check_outcome(name, thunk, dtype)


CLEAN_CALLS = ("lasso_lam", "lasso_sparsity", "lasso_stats", "iht", "iht_stats", "iht_debias_swaps", "refit",
               "magnitude_refit", "nettrim_eps", "nettrim_sparsity", "feta_sparsity", "feta_lam", "grda",
               "group_selection")


@st.composite
def clean_layers(draw):
    """Finite, non-empty layers of moderate scale (at least 3 samples, generic targets)."""
    P, N, M = draw(st.integers(3, 9)), draw(st.sampled_from((1, 2, 4, 5, 20))), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = _matrix(rng, (P, N), draw(st.sampled_from((1e-8, 1.0, 1e8))), draw(st.sampled_from(STRUCTURES)), dtype)
    Y = _matrix(rng, (P, M), draw(st.sampled_from((1e-8, 1.0, 1e8))), "normal", dtype)
    return X, Y


@settings(derandomize=True, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=clean_layers(), opt=options)
def test_clean_data_of_moderate_scale_is_solved(data, opt):
    """On finite, non-empty data of moderate scale every solver returns a finite Result: the
    safety nets (non-finite statistics, non-finite solutions) must not hide a solver's NaN."""
    X, Y = data
    opt = dict(opt, tamper=False, w_scale=1.0, pattern="unstructured", eps=0.3, lr=0.01)
    calls = _calls(X, Y, opt)
    for name in CLEAN_CALLS:
        thunk, dtype = calls[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = thunk()
        assert check_outcome(name, lambda: out, dtype) is not None


# --- regression tests of the known cases --------------------------------------------------------


@pytest.fixture
def layer(rng):
    X = rng.standard_normal((40, 8))
    Y = X @ rng.standard_normal((8, 3)) + 0.1 * rng.standard_normal((40, 3))
    return X, Y


_SEGFAULT = textwrap.dedent("""
    import numpy as np
    from layertrim.solvers import GramStats, NonFiniteError, iht
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 8)), rng.standard_normal((40, 3))
    for case in ("scaled", "stats"):
        try:
            if case == "scaled":
                iht(X * 1e8, Y * 1e300, sparsity=0.5)
            else:
                stats = GramStats.from_arrays(X, Y)
                stats.Sxy[0, 0] = np.inf
                iht(stats, sparsity=0.5)
        except NonFiniteError as exc:
            print(case, "NonFiniteError", exc)
""")


def test_iht_overflow_cases_raise_in_a_subprocess():
    """These once segfaulted the interpreter (NaN scores read past a Numba buffer)."""
    proc = subprocess.run([sys.executable, "-c", _SEGFAULT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scaled NonFiniteError" in proc.stdout and "stats NonFiniteError" in proc.stdout, proc.stdout


def test_iht_on_overflowing_data_raises(layer):
    X, Y = layer
    with pytest.raises(NonFiniteError, match=r"Y.*overflows float64.*rescale Y"):
        iht(X * 1e8, Y * 1e300, sparsity=0.5)
    with pytest.raises(NonFiniteError, match=r"X.*overflows float64.*rescale X"):
        iht(X * 1e200, Y, sparsity=0.5)
    with pytest.raises(NonFiniteError, match=r"Y.*overflows float64"):
        iht(X * 1e150, Y * 1e160, sparsity=0.5)


def test_gram_statistics_holding_inf_are_rejected(layer):
    X, Y = layer
    stats = GramStats.from_arrays(X, Y)
    stats.Sxy[0, 0] = np.inf
    for solver in (lambda s: iht(s, sparsity=0.5), lambda s: lasso(s, lam=0.1),
                   lambda s: refit(s, mask=np.ones((8, 3))), lambda s: lam_max(s)):
        with pytest.raises(NonFiniteError, match=r"C has 1 non-finite entry.*rescale"):
            solver(stats)
    q = GramStats.from_arrays(X, Y).quadratic(True)
    bad = Quadratic(G=q.G, C=q.C, yy=np.full_like(q.yy, np.nan), x_mean=q.x_mean, y_mean=q.y_mean,
                    n_samples=q.n_samples, intercept=True, dtype=q.dtype)
    with pytest.raises(NonFiniteError, match="yy"):
        iht(bad, sparsity=0.5)
    wrong = Quadratic(G=q.G, C=q.C[:4], yy=q.yy, x_mean=q.x_mean, y_mean=q.y_mean,
                      n_samples=q.n_samples, intercept=True, dtype=q.dtype)
    with pytest.raises(ShapeError, match="G"):
        lasso(wrong, lam=0.1)


def test_accumulating_an_overflowing_batch_keeps_the_statistics(layer):
    X, Y = layer
    stats = GramStats.from_arrays(X, Y)
    before = stats.Sxx.copy(), stats.n_samples
    big = X.copy()
    big[0, 0] = 1e200
    with pytest.raises(NonFiniteError, match="rescale"):
        stats.update(big, Y)
    np.testing.assert_array_equal(stats.Sxx, before[0])
    assert stats.n_samples == before[1]
    with pytest.raises(ShapeError, match="GramStats"):
        stats.merge((X, Y))


def test_feta_with_one_huge_column_returns_promptly(layer):
    """It once never returned (lstsq on an infinite Gram matrix)."""
    X, Y = layer
    X = X.copy()
    X[:, 0] *= 1e154
    for kw in ({"sparsity": 0.5}, {"lam": 0.1}):
        with pytest.raises(NonFiniteError, match="rescale X"):
            feta(X, np.maximum(Y, 0), **kw)


def test_nettrim_on_overflowing_data_raises(layer):
    X, Y = layer
    with pytest.raises(NonFiniteError, match="rescale X"):
        nettrim(X * 1e200, np.maximum(Y, 0), eps=0.1)
    with pytest.raises(NonFiniteError, match="rescale Y"):
        nettrim(X, np.maximum(Y, 0) * 1e300, eps=0.1)


def test_magnitude_rejects_a_bias_of_the_wrong_length(rng):
    W = rng.standard_normal((8, 3))
    with pytest.raises(ShapeError, match=r"b must have one entry per output.*\(3,\)"):
        magnitude(W, sparsity=0.5, b=np.ones(5))
    with pytest.raises(ShapeError, match="b"):
        magnitude(W, sparsity=0.5, b=np.ones((3, 1)))
    with pytest.raises(NonFiniteError, match="b"):
        magnitude(W, sparsity=0.5, b=np.array([1.0, np.nan, 0.0]))
    X = rng.standard_normal((20, 8))
    with pytest.raises(ShapeError, match="b must have one entry per output"):
        magnitude(W, sparsity=0.5, X=X, Y=X @ W, refit=True, b=np.ones(2))
    res = magnitude(W.astype(np.float32), sparsity=0.5, b=np.ones(3))
    assert res.b.shape == (3,) and res.b.dtype == np.float32


def test_maximize_accuracy_rejects_non_numeric_bounds():
    exps = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    model = AccuracyModel(exponents=np.array(exps), coef=np.array([0.5, 0.1, 0.2, 0.1]), form="full", degree=1,
                          ridge=0.0, residual=0.0)
    flops = FlopsModel.power_law()
    for lower, upper in (("a", 1.0), (0.1, None), (np.nan, 1.0), ([0.1, "x", 0.2], 1.0),
                         ([[0.1], [0.2, 0.3]], 1.0), (0.1, {"d": 1})):
        with pytest.raises(ParameterError, match="lower|upper"):
            maximize_accuracy(model, flops, 0.5, lower=lower, upper=upper)
    assert maximize_accuracy(model, flops, 0.5, lower=0.1).accuracy > 0


@pytest.mark.parametrize("solver", [
    lambda X, Y: lasso(X, Y, lam=0.1),
    lambda X, Y: iht(X, Y, sparsity=0.5),
    lambda X, Y: refit(X, Y, mask=[[1], [1]]),
    lambda X, Y: nettrim(X, Y, eps=0.1),
    lambda X, Y: feta(X, Y, sparsity=0.5),
    lambda X, Y: grda(X, Y, lr=0.1, c=0.0),
    lambda X, Y: GramStats.from_arrays(X, Y),
])
def test_ragged_lists_raise_shape_error(solver):
    with pytest.raises(ShapeError, match="X cannot be converted"):
        solver([[1.0, 2.0], [3.0]], [[1.0], [2.0]])
    with pytest.raises(ShapeError, match="Y cannot be converted"):
        solver([[1.0, 2.0], [3.0, 4.0]], [[1.0], [2.0, 3.0]])
    with pytest.raises(ShapeError, match="numeric"):
        solver([["a", "b"], ["c", "d"]], [[1.0], [2.0]])


def test_nettrim_rejects_a_wrongly_shaped_V(rng):
    X = rng.standard_normal((30, 8))
    Y = np.maximum(rng.standard_normal((30, 3)), 0)
    with pytest.raises(ShapeError, match="V"):
        nettrim(X, Y, eps=0.3, V=np.zeros((2, 2)))
    with pytest.raises(ShapeError, match="V"):
        nettrim(X, Y, eps=0.3, V=np.zeros((30, 1)))
    with pytest.raises(NonFiniteError, match="V"):
        nettrim(X, Y, eps=0.3, V=np.full((30, 3), np.nan))


def test_nettrim_rejects_a_V_that_does_not_broadcast(rng):
    X = rng.standard_normal((30, 8))
    Y = np.maximum(rng.standard_normal((30, 3)), 0)
    for V in (np.zeros(5), [[0.0, 1.0], [0.0]]):
        with pytest.raises(ShapeError, match="V"):
            nettrim(X, Y, eps=0.3, V=V)


def test_grda_divergence_is_an_error_status_with_finite_weights(layer):
    X, Y = layer
    for intercept in (True, False):
        with pytest.warns(ConvergenceWarning, match="diverged"):
            res = grda(X, Y, lr=10.0, c=0.0, epochs=3, intercept=intercept)
        assert res.status == "numerical_error" and res.info["diverged"]
        assert np.all(np.isfinite(res.W)) and np.isfinite(res.objective)
        # the returned iterate is the best seen: here the start, W = 0
        assert res.objective <= 0.5 * np.sum(Y**2) / len(Y) + 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ok = grda(X, Y, lr=0.05, c=0.0, epochs=20)
    assert ok.status == "max_iter" and not ok.info["diverged"]


def test_selection_kernel_ranks_nan_last_and_stays_in_its_buffer():
    for group in (5, 40):  # the arg-max path and the partition path
        S = np.full((2, group), np.nan)
        S[0, 3] = 1.0
        S[1, 1:4] = (0.5, 2.0, 1.0)
        mask = topk_in_groups(S, group, 3)
        assert mask.sum(axis=1).tolist() == [3, 3]
        assert mask[0, 3] and mask[1, 1:4].all()


# --- odd parameter values ----------------------------------------------------------------------

ODD_VALUES = (None, "x", np.nan, np.inf, -1, 0, 1e300, True, [1], 1.5, np.ones((2, 2)), object())

#: boolean flags, checked by ``check_bool`` (an array as a flag would make ``if flag:`` raise numpy's
#: ValueError): tested on their own below
FLAGS = {("iht", "refit"), ("iht", "permute"), ("iht", "swaps"), ("magnitude", "refit"),
                   ("magnitude", "permute"), ("nettrim", "intercept"), ("nettrim", "relu")}


def _odd_parameter_cases():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 8)), rng.standard_normal((20, 4))
    W = rng.standard_normal((8, 4))
    base = {
        "lasso": (lasso, (X, Y), {"lam": 0.1}),
        "iht": (iht, (X, Y), {"sparsity": 0.5, "max_iter": 20}),
        "magnitude": (magnitude, (W,), {"sparsity": 0.5}),
        "project": (project, (W,), {"sparsity": 0.5}),
        "refit": (refit, (X, Y, W != 0), {}),
        "nettrim": (nettrim, (X, np.abs(Y)), {"eps": 0.3, "max_iter": 50}),
        "feta": (feta, (X, np.abs(Y)), {"sparsity": 0.5, "support_iter": 1, "iht_iter": 5, "polish_iter": 2}),
        "grda": (grda, (X, Y), {"lr": 0.1, "c": 0.01, "epochs": 1}),
        "lam_max": (lam_max, (X, Y), {}),
    }
    for name, (solver, args, kw) in base.items():
        for pname, param in inspect.signature(solver).parameters.items():
            if param.kind is param.KEYWORD_ONLY:
                yield name, solver, args, kw, pname


def _call_with(solver, args, kw, pname, value):
    kw = dict(kw, **{pname: value})
    if pname in ("lam", "sparsity", "eps"):  # the alternative of a given one: replace it
        for other in ("lam", "sparsity", "eps"):
            if other != pname:
                kw.pop(other, None)
    return solver(*args, **kw)


def test_odd_parameter_values_raise_layertrim_error():
    for name, solver, args, kw, pname in _odd_parameter_cases():
        if (name, pname) in FLAGS:
            continue
        for value in ODD_VALUES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    out = _call_with(solver, args, kw, pname, value)
                except LayerTrimError:
                    continue
            if isinstance(out, Result):
                assert np.all(np.isfinite(out.W)), (name, pname, value)


def test_array_valued_flags_raise_parameter_error():
    for name, solver, args, kw, pname in _odd_parameter_cases():
        if (name, pname) in FLAGS:
            with pytest.raises(ParameterError, match=pname):
                _call_with(solver, args, kw, pname, np.ones((2, 2)))
