"""The matmul-bound solvers on torch tensors through the array API equal the numpy path.

Tolerances. float64 tensors run the same arithmetic as the numpy path up to
the summation order inside BLAS and reductions (relative 1e-16 per
operation); on these small, well-conditioned layers (cond(G) < 100) the
solutions agree to far better than ``RTOL64 = 1e-9`` relative to ``max |W|``,
and the supports, chosen from scores that differ by far more than that,
coincide. float32 tensors are solved in float32 (iht, l0, the Net-Trim
iterations) or from float32 statistics (lasso), while the numpy path forms
float64 statistics: the two differ by ``cond * eps32 ~ 1e-5``, hence
``RTOL32 = 1e-4``; the nonconvex solvers are compared there on planted
supports whose weights (|w| >= 1) stand far above the noise, so that both
select the planted support.
"""
import numpy as np
import pytest

from layertrim.solvers.base.errors import ParameterError, ShapeError
from layertrim.solvers.base.patterns import parse_pattern
from layertrim.solvers.lasso import lasso
from layertrim.solvers.nettrim import nettrim
from layertrim.solvers.threshold.admm_l0 import l0_admm
from layertrim.solvers.threshold.iht import iht
from layertrim.solvers.threshold.projection import support_mask

torch = pytest.importorskip("torch")

RTOL64, RTOL32 = 1e-9, 1e-4
#: Net-Trim stops at relative residuals <= tol; two float32 runs may stop a few iterations apart
NETTRIM_TOL, NETTRIM_RTOL32 = 1e-4, 1e-3
PATTERNS = [("unstructured", 0.75), ("per_output", 0.75), ("2:4", None)]
DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


def _random_layer(rng, P=96, N=24, M=6):
    X = rng.standard_normal((P, N))
    return X, X @ rng.standard_normal((N, M)) + 0.3 * rng.standard_normal((P, M))


def _planted_layer(rng, pattern, P=96, N=24, M=6):
    """A layer whose weights lie exactly on ``pattern`` (25% or 2 of 4 kept), |w| in [1, 2], small noise."""
    keep = np.zeros((N, M), dtype=bool)
    for j in range(M):
        if pattern == "2:4":
            for g in range(0, N, 4):
                keep[g + rng.choice(4, 2, replace=False), j] = True
        elif pattern == "per_output" or j % 2:
            keep[rng.choice(N, N // 4, replace=False), j] = True
    if pattern == "unstructured":  # a global count: uneven columns
        keep = np.zeros(N * M, dtype=bool)
        keep[rng.choice(N * M, N * M // 4, replace=False)] = True
        keep = keep.reshape(N, M)
    W = keep * rng.uniform(1.0, 2.0, (N, M)) * rng.choice([-1.0, 1.0], (N, M))
    X = rng.standard_normal((P, N))
    return X, X @ W + 1e-3 * rng.standard_normal((P, M))


def _tensors(*arrays, dtype=torch.float64, device="cpu"):
    return [torch.asarray(a, dtype=dtype, device=device) for a in arrays]


def _close(res_np, res_t, rtol):
    """Same weights and intercept within ``rtol * max |W|``; the tensor result keeps type, dtype, device."""
    W, b = res_t.W, res_t.b
    assert isinstance(W, torch.Tensor) and isinstance(b, torch.Tensor)
    assert W.dtype == DTYPES[res_np.W.dtype.type] and b.dtype == W.dtype
    scale = max(float(np.abs(res_np.W).max()), 1.0)
    np.testing.assert_allclose(W.cpu().numpy(), res_np.W, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(b.cpu().numpy(), res_np.b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
def test_iht_float64_tensors_equal_numpy(rng, pattern, sparsity):
    X, Y = _random_layer(rng)
    ref = iht(X, Y, sparsity=sparsity, pattern=pattern, debias_every=5)
    res = iht(*_tensors(X, Y), sparsity=sparsity, pattern=pattern, debias_every=5)
    _close(ref, res, RTOL64)
    assert res.iterations == ref.iterations
    assert res.objective == pytest.approx(ref.objective, rel=RTOL64)


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
def test_iht_float32_tensors_equal_numpy(rng, pattern, sparsity):
    X, Y = (a.astype(np.float32) for a in _planted_layer(rng, pattern))
    ref = iht(X, Y, sparsity=sparsity, pattern=pattern)
    res = iht(*_tensors(X, Y, dtype=torch.float32), sparsity=sparsity, pattern=pattern)
    np.testing.assert_array_equal(res.W.numpy() != 0, ref.W != 0)
    _close(ref, res, RTOL32)


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
def test_l0_tensors_equal_numpy(rng, pattern, sparsity):
    X, Y = _random_layer(rng)
    ref = l0_admm(X, Y, sparsity=sparsity, pattern=pattern, rho=0.03)
    res = l0_admm(*_tensors(X, Y), sparsity=sparsity, pattern=pattern, rho=0.03)
    _close(ref, res, RTOL64)
    assert (res.iterations, res.info["swap_moves"]) == (ref.iterations, ref.info["swap_moves"])
    X32, Y32 = (a.astype(np.float32) for a in _planted_layer(rng, pattern))
    ref32 = l0_admm(X32, Y32, sparsity=sparsity, pattern=pattern, rho=0.03)
    _close(ref32, l0_admm(*_tensors(X32, Y32, dtype=torch.float32), sparsity=sparsity, pattern=pattern, rho=0.03),
           RTOL32)


@pytest.mark.parametrize("penalty", ["l1", "group", "elastic_net"])
def test_fista_lasso_tensors_equal_numpy(rng, penalty):
    X, Y = _random_layer(rng)
    ref = lasso(X, Y, lam=0.05, penalty=penalty, solver="fista", tol=1e-7)
    res = lasso(*_tensors(X, Y), lam=0.05, penalty=penalty, tol=1e-7)  # "auto" is FISTA for tensors
    _close(ref, res, RTOL64)
    assert res.info["solver"] == "fista" and res.status == ref.status == "optimal" and res.info["gap"] <= 1e-7
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    ref32 = lasso(X32, Y32, lam=0.05, penalty=penalty, solver="fista", tol=1e-7)
    _close(ref32, lasso(*_tensors(X32, Y32, dtype=torch.float32), lam=0.05, penalty=penalty, tol=1e-7), RTOL32)


def test_fista_lasso_sparsity_path_on_tensors(rng):
    X, Y = _random_layer(rng)
    ref = lasso(X, Y, sparsity=0.6, solver="fista")
    res = lasso(*_tensors(X, Y), sparsity=0.6)
    assert res.info["lam"] == pytest.approx(ref.info["lam"], rel=1e-12)
    _close(ref, res, 1e-6)  # each solve stops at a relative gap of 1e-6


@pytest.mark.parametrize("relu,eps_mode", [(True, "layer"), (False, "neuron")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nettrim_tensors_equal_numpy(rng, relu, eps_mode, dtype):
    X, Y = _random_layer(rng)
    Y = (np.maximum(Y, 0) if relu else Y).astype(dtype)
    X = X.astype(dtype)
    ref = nettrim(X, Y, eps=0.1, relu=relu, eps_mode=eps_mode, tol=NETTRIM_TOL)
    res = nettrim(*_tensors(X, Y, dtype=DTYPES[dtype]), eps=0.1, relu=relu, eps_mode=eps_mode, tol=NETTRIM_TOL)
    assert res.status == ref.status == "optimal"
    _close(ref, res, RTOL64 if dtype == np.float64 else NETTRIM_RTOL32)


@pytest.mark.parametrize("pattern,sparsity", PATTERNS + [("input_rows", 0.5), ("output_columns", 0.5), ("1:8", None)])
def test_support_selection_on_tensors_matches_the_kernel(rng, pattern, sparsity):
    pat = parse_pattern(pattern)
    s = pat.resolve_sparsity(sparsity)
    for S in (np.abs(rng.standard_normal((24, 6))), np.round(2 * np.abs(rng.standard_normal((24, 6))))):  # ties
        mask = support_mask(torch.asarray(S), pat, s)
        assert mask.dtype == torch.bool
        np.testing.assert_array_equal(mask.numpy(), support_mask(S, pat, s))


def test_numpy_only_options_are_refused_for_tensors(rng):
    X, Y = _tensors(*_random_layer(rng))
    with pytest.raises(ParameterError, match="permute"):
        iht(X, Y, pattern="2:4", permute=True)
    with pytest.raises(ParameterError, match="solver='cd'"):
        lasso(X, Y, lam=0.1, solver="cd")
    with pytest.raises(ShapeError, match="one library"):
        iht(X.numpy(), Y, sparsity=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.is_available() is False: no CUDA device")
def test_iht_and_lasso_on_cuda_match_the_cpu(rng):
    X, Y = _random_layer(rng)
    for solve in (lambda a, b: iht(a, b, sparsity=0.75), lambda a, b: lasso(a, b, lam=0.05, tol=1e-8)):
        cpu, gpu = solve(*_tensors(X, Y)), solve(*_tensors(X, Y, device="cuda"))
        assert gpu.W.device.type == "cuda" and gpu.W.dtype == torch.float64
        scale = float(cpu.W.abs().max())
        np.testing.assert_allclose(gpu.W.cpu().numpy(), cpu.W.numpy(), rtol=0, atol=RTOL64 * scale)
