"""Solves that do not finish say so: a result that did not converge comes with a
ConvergenceWarning (also at the end of a sparsity search whose intermediate solves are
silent), and Ctrl-C inside a compiled kernel is a KeyboardInterrupt."""
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


def test_ctrl_c_inside_a_kernel_is_a_keyboard_interrupt():
    from layertrim.solvers.base.interrupt import interruptible

    def kernel_returning_with_pending_sigint():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as pending:
            raise SystemError("CPUDispatcher(<function admm>) returned a result with an exception set") from pending

    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            kernel_returning_with_pending_sigint()
    with pytest.raises(SystemError):  # a SystemError of another origin stays one
        with interruptible():
            raise SystemError("something else")
