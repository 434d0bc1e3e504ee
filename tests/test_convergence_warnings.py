"""A result that did not converge always comes with a ConvergenceWarning, also when it is
the end of a sparsity search whose intermediate solves are silent."""
import warnings

import numpy as np
import pytest

from layertrim.solvers import ConvergenceWarning, nettrim


def test_nettrim_sparsity_mode_warns_when_its_result_did_not_converge(rng):
    X = rng.standard_normal((80, 12))
    Y = np.maximum(X @ rng.standard_normal((12, 4)), 0)
    with pytest.warns(ConvergenceWarning, match=r"nettrim \(sparsity=0.5\).*'max_iter'"):
        res = nettrim(X, Y, sparsity=0.5, max_iter=3)
    assert res.status == "max_iter"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # converged: no warning at all
        res = nettrim(X, Y, sparsity=0.5, max_iter=20000, tol=1e-4)
    assert res.status == "optimal"
