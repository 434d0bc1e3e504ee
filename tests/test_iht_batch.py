"""iht_batch: many small problems at once, each with the result iht gives it alone."""
import importlib
import warnings

import numpy as np
import pytest

from layertrim.solvers import ConvergenceWarning, GramStats, ParameterError, ShapeError, iht
from layertrim.solvers.threshold.iht_batch import iht_batch

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import prune  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

iht_method = importlib.import_module("layertrim.bindings.methods.iht")


def problems(rng, g=40, K=9, m=1, P=60):
    """``g`` problems: one whose sparse truth is its start (fitted exactly), one with a constant
    input, one with two equal inputs (singular supports), the rest noisy ReLU targets."""
    stats, W0 = [], []
    for j in range(g):
        X = rng.standard_normal((P, K)) @ rng.standard_normal((K, K))
        w = rng.standard_normal((K, m))
        if j == 0:
            w[K // 2 :] = 0.0
            Y = X @ w
        else:
            if j == 1:
                X[:, 2] = 1.5
            if j == 2:
                X[:, 4] = X[:, 5]
            Y = np.maximum(X @ w, 0.0) + 0.1 * rng.standard_normal((P, m))
        stats.append(GramStats.from_arrays(X, Y))
        W0.append(w)
    return stats, np.stack(W0)


@pytest.mark.parametrize("K, m, pattern", [(9, 1, "unstructured"), (9, 3, "unstructured"), (8, 4, "per_output")])
def test_each_result_is_iht_on_the_problem_alone(rng, K, m, pattern):
    stats, W0 = problems(rng, K=K, m=m)
    batch = iht_batch([s.quadratic() for s in stats], W0, sparsity=0.5, pattern=pattern)
    alone = [iht(s, sparsity=0.5, pattern=pattern, W0=W0[j]) for j, s in enumerate(stats)]
    assert batch[0].iterations == alone[0].iterations == 0  # the start fits exactly: stop rule (0)
    assert max(r.iterations for r in alone) > 1  # the iteration itself is exercised
    for j, (got, want) in enumerate(zip(batch, alone)):
        assert got.status == want.status and got.iterations == want.iterations
        assert np.array_equal(got.W != 0, want.W != 0)
        # the same operations on stacked arrays: only the order of BLAS reductions differs
        # (rounding of 1e-16 relative, a few orders of magnitude through the solves)
        np.testing.assert_allclose(got.W, want.W, rtol=1e-9, atol=1e-12 * np.abs(want.W).max())
        np.testing.assert_allclose(got.b, want.b, rtol=1e-9, atol=1e-12)
        # the loss 1/2 <W, GW> - <C, W> + 1/2 sum yy cancels to ~0 at an interpolating start: its
        # rounding is that of its largest term, f(0) = 1/2 sum yy, summed in another order
        f0 = 0.5 * stats[j].quadratic().yy.sum()
        assert abs(got.objective - want.objective) <= 1e-9 * want.objective + 64 * np.finfo(float).eps * f0
        assert got.info["sparsity"] == want.info["sparsity"]


def test_exactly_singular_supports_are_solved_as_iht_solves_them(rng):
    # inputs 0 and 1 are the same balanced +-1 column: centered exactly, G's block on them is
    # exactly [[1, 1], [1, 1]], and the start keeps both (the largest weights), so the stacked
    # Cholesky factorization fails and each system goes through refit's own three-step solve
    stats, W0 = [], []
    for _ in range(6):
        X = rng.standard_normal((64, 6))
        X[:, 0] = X[:, 1] = rng.permutation(np.repeat([1.0, -1.0], 32))
        w = rng.standard_normal((6, 2))
        w[:2] = 10.0
        stats.append(GramStats.from_arrays(X, X @ w + 0.1 * rng.standard_normal((64, 2))))
        W0.append(w)
    W0 = np.stack(W0)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(stats[0].quadratic().G[:2, :2])
    batch = iht_batch([s.quadratic() for s in stats], W0, sparsity=0.5)
    for j, (got, s) in enumerate(zip(batch, stats)):
        want = iht(s, sparsity=0.5, W0=W0[j])
        assert got.status == want.status and got.iterations == want.iterations
        assert np.array_equal(got.W != 0, want.W != 0)
        np.testing.assert_allclose(got.W, want.W, rtol=1e-9, atol=1e-12 * np.abs(want.W).max())


def test_problems_at_max_iter_are_counted_in_one_warning(rng):
    stats, W0 = problems(rng)
    with pytest.warns(ConvergenceWarning, match=r"in \d+ of 40 problems"):
        batch = iht_batch([s.quadratic() for s in stats], W0, sparsity=0.5, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alone = [iht(s, sparsity=0.5, W0=W0[j], max_iter=2) for j, s in enumerate(stats)]
    assert [r.status for r in batch] == [r.status for r in alone]
    assert "max_iter" in {r.status for r in batch}


def test_refused_inputs(rng):
    stats, W0 = problems(rng, g=3)
    quads = [s.quadratic() for s in stats]
    with pytest.raises(ParameterError, match="unstructured or per_output"):
        iht_batch(quads, W0, sparsity=0.5, pattern="input_rows")
    with pytest.raises(ShapeError, match="one shape"):
        iht_batch(quads[:2] + [problems(rng, g=1, K=8)[0][0].quadratic()], W0, sparsity=0.5)
    with pytest.raises(ShapeError, match="W0"):
        iht_batch(quads, W0[:2], sparsity=0.5)
    few, _ = problems(rng, g=1, P=9)  # 9 samples, 9 inputs: supports may exceed the rank
    with pytest.raises(ShapeError, match="samples"):
        iht_batch([few[0].quadratic()], W0[:1], sparsity=0.5)


def _depthwise_net(seed):
    with torch_seed(seed):
        return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1, groups=12),
                             nn.ReLU(), nn.Conv2d(12, 4, 1))


def test_a_depthwise_conv_is_pruned_as_group_by_group(seed, monkeypatch):
    gen = torch_generator(seed)
    data = [torch.randn(8, 3, 10, 10, generator=gen) for _ in range(2)]
    calls = []
    batched = iht_method.iht_batch
    monkeypatch.setattr(iht_method, "iht_batch", lambda quads, *a, **k: calls.append(len(quads)) or batched(
        quads, *a, **k))
    a, b = _depthwise_net(seed), _depthwise_net(seed)
    prune(a, data, method="iht", sparsity=0.5, progress=False)
    assert calls == [12]  # the depthwise conv's 12 channels, in one call
    prune(b, data, method="iht", sparsity=0.5, progress=False, swaps=False)  # an option left to iht: one by one
    assert calls == [12]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        # float64 solves equal to rounding, written back in float32
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)
