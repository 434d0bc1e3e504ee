"""Projection onto sparsity patterns: brute force on tiny matrices, exact counts, ties, errors."""
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layertrim.solvers import NonFiniteError, ParameterError, ShapeError, project
from layertrim.solvers.base.patterns import n_zeros, parse_pattern


def feasible(mask, pattern, keep):
    """Membership of a boolean mask in a pattern with exact counts (independent of the code)."""
    N, M = mask.shape
    if pattern == "unstructured":
        return mask.sum() == keep
    if pattern == "per_output":
        return bool(np.all(mask.sum(axis=0) == keep))
    if pattern == "input_rows":
        full = mask.all(axis=1)
        return bool(np.all(full | ~mask.any(axis=1))) and full.sum() == keep
    if pattern == "output_columns":
        full = mask.all(axis=0)
        return bool(np.all(full | ~mask.any(axis=0))) and full.sum() == keep
    n, m = map(int, pattern.split(":"))
    return bool(np.all(mask.reshape(N // m, m, M).sum(axis=1) == n))


def brute_force(S, pattern, keep):
    """Enumerate all masks; best sum of S^2, ties -> lexicographically smallest sorted flat indices."""
    N, M = S.shape
    best, best_key = None, None
    for bits in itertools.product((False, True), repeat=N * M):
        mask = np.array(bits).reshape(N, M)
        if not feasible(mask, pattern, keep):
            continue
        value = float(np.sum(S[mask] ** 2))
        key = (-value, tuple(np.flatnonzero(mask)))
        if best_key is None or key < best_key:
            best, best_key = mask, key
    return best


CASES = [  # (pattern, sparsity, kept units as counted by hand)
    ("unstructured", 0.5, 6),
    ("unstructured", 0.75, 3),
    ("per_output", 0.5, 2),
    ("per_output", 0.3, 2),  # ceil(0.3 * 4) = 2 zeros per column
    ("2:4", None, 2),
    ("1:2", None, 1),
    ("input_rows", 0.5, 2),
    ("output_columns", 0.34, 1),  # ceil(0.34 * 3) = 2 zeros
]


@pytest.mark.parametrize("pattern,sparsity,keep", CASES)
@pytest.mark.parametrize("integer", [False, True])
def test_matches_brute_force(pattern, sparsity, keep, integer, seed_shift):
    # a stable seed per case (hash() of a str changes from process to process)
    rng = np.random.default_rng(zlib.crc32(f"{pattern}-{sparsity}-{integer}".encode()) + seed_shift)
    for _ in range(4):
        # small integers make many exact ties; floats make none
        W = rng.integers(-2, 3, size=(4, 3)).astype(float) if integer else rng.standard_normal((4, 3))
        Wp, mask = project(W, sparsity=sparsity, pattern=pattern)
        expected = brute_force(np.abs(W), pattern, keep)
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(Wp, np.where(expected, W, 0.0))


def test_scores_brute_force_and_euclidean_distance(rng):
    W = rng.standard_normal((4, 3))
    scores = rng.random((4, 3))
    _, mask = project(W, sparsity=0.5, scores=scores)
    np.testing.assert_array_equal(mask, brute_force(scores, "unstructured", 6))
    # with |W| the result is the nearest point of the pattern: no other feasible mask is closer
    Wp, mask = project(W, sparsity=0.5)
    best = min(
        np.sum((W * ~np.isin(np.arange(12), c).reshape(4, 3)) ** 2)
        for c in itertools.combinations(range(12), 6)
    )
    assert np.sum((W - Wp) ** 2) == pytest.approx(best, rel=1e-12)


def test_tie_rule_lower_index_wins():
    W = np.ones((4, 2))
    _, mask = project(W, sparsity=0.5)
    np.testing.assert_array_equal(mask.ravel(), [1, 1, 1, 1, 0, 0, 0, 0])
    _, mask = project(W, pattern="per_output", sparsity=0.5)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0])
    _, mask = project(W, pattern="2:4")
    np.testing.assert_array_equal(mask[:, 1], [1, 1, 0, 0])
    _, mask = project(np.ones((16, 1)), pattern="4:8")  # small groups: the arg-max path
    np.testing.assert_array_equal(mask[:, 0], [1] * 4 + [0] * 4 + [1] * 4 + [0] * 4)
    _, mask = project(np.ones((40, 1)), pattern="per_output", sparsity=0.5)  # partition path
    np.testing.assert_array_equal(mask[:, 0], [1] * 20 + [0] * 20)


# derandomized: the same examples in every run (a failure is reproducible, not a coin toss)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    N=st.integers(1, 24),
    M=st.integers(1, 24),
    sparsity=st.floats(0.0, 0.999),
    pattern=st.sampled_from(["unstructured", "per_output", "input_rows", "output_columns"]),
    seed=st.integers(0, 2**16),
)
def test_exact_counts_and_optimality(N, M, sparsity, pattern, seed, seed_shift):
    rng = np.random.default_rng(seed + seed_shift)
    W = rng.integers(-3, 4, size=(N, M)).astype(float)  # ties and zeros on purpose
    Wp, mask = project(W, sparsity=sparsity, pattern=pattern)
    units = {"unstructured": N * M, "per_output": N, "input_rows": N, "output_columns": M}[pattern]
    zeros = n_zeros(sparsity, units)
    # the fewest zeros reaching the target (1e-12 slack for floating-point products such as 0.9 * 10)
    assert zeros / units >= sparsity - 1e-12 and (zeros - 1) / units < sparsity
    assert feasible(mask, pattern, units - zeros)
    np.testing.assert_array_equal(Wp, np.where(mask, W, 0.0))
    # optimality certificate: no dropped unit outranks a kept one in its group
    S2 = W**2
    if pattern == "unstructured":
        kept, dropped = S2[mask], S2[~mask]
        assert kept.size == 0 or dropped.size == 0 or kept.min() >= dropped.max()
    elif pattern == "per_output":
        for j in range(M):
            k, d = S2[mask[:, j], j], S2[~mask[:, j], j]
            assert k.size == 0 or d.size == 0 or k.min() >= d.max()
    else:
        axis = 1 if pattern == "input_rows" else 0
        unit, chosen = S2.sum(axis=axis), mask.all(axis=axis)
        assert chosen.all() or not chosen.any() or unit[chosen].min() >= unit[~chosen].max()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(groups=st.integers(1, 12), M=st.integers(1, 12), nm=st.sampled_from(["2:4", "4:8", "1:4", "3:16", "8:32"]),
       seed=st.integers(0, 2**16))
def test_nm_counts(groups, M, nm, seed, seed_shift):
    n, m = map(int, nm.split(":"))
    W = np.random.default_rng(seed + seed_shift).standard_normal((groups * m, M)).astype(np.float32)
    Wp, mask = project(W, pattern=nm)
    assert Wp.dtype == np.float32
    blocks = mask.reshape(groups, m, M)
    assert np.all(blocks.sum(axis=1) == n)
    absw = np.abs(W).reshape(groups, m, M)
    assert np.all(np.where(blocks, absw, np.inf).min(axis=1) >= np.where(blocks, -np.inf, absw).max(axis=1))


def test_float32_and_dtype_preserved(rng):
    W = rng.standard_normal((8, 5))
    for dtype in (np.float32, np.float64):
        Wp, mask = project(W.astype(dtype), sparsity=0.6, pattern="per_output")
        assert Wp.dtype == dtype and mask.dtype == bool
        assert np.all(mask.sum(axis=0) == 8 - 5)


def test_sparsity_zero_keeps_everything_and_large_rounds_up(rng):
    W = rng.standard_normal((3, 3))
    Wp, mask = project(W, sparsity=0.0)
    assert mask.all() and np.array_equal(Wp, W)
    _, mask = project(W, sparsity=0.95)  # ceil(8.55) = 9 zeros: nothing kept
    assert not mask.any()
    _, mask = project(np.ones((10, 10)), sparsity=0.9)  # 0.9 * 100 is 90.00000000000001 in floats
    assert mask.sum() == 10


def test_parse_pattern():
    assert parse_pattern(" 2:4 ").n == 2 and parse_pattern("4:8").m == 8
    assert parse_pattern("Per_Output").kind == "per_output"
    assert parse_pattern("2:4").fixed_sparsity == 0.5
    for bad in ("3:2", "0:4", "4:4", "2-4", "rows", "", 5, None):
        with pytest.raises(ParameterError):
            parse_pattern(bad)


def test_bad_inputs(rng):
    W = rng.standard_normal((8, 3))
    with pytest.raises(ParameterError, match="sparsity is required"):
        project(W)
    with pytest.raises(ParameterError, match="fixes the sparsity"):
        project(W, pattern="2:4", sparsity=0.7)
    project(W, pattern="2:4", sparsity=0.5)  # the matching value is accepted
    with pytest.raises(ParameterError):
        project(W, sparsity=1.0)
    with pytest.raises(ShapeError, match="multiple of 4"):
        project(rng.standard_normal((6, 3)), pattern="2:4")
    with pytest.raises(NonFiniteError):
        project(W, sparsity=0.5, scores=np.full((8, 3), np.nan))
    with pytest.raises(ParameterError, match="non-negative"):
        project(W, sparsity=0.5, scores=-np.ones((8, 3)))
    with pytest.raises(ShapeError, match="shape of W"):
        project(W, sparsity=0.5, scores=np.ones((3, 8)))
    with pytest.raises(ShapeError):
        project(np.ones(5), sparsity=0.5)
    with pytest.raises(NonFiniteError):
        project(np.array([[np.inf, 1.0]]), sparsity=0.5)
