"""Solves that do not finish say so: a result that did not converge comes with a
ConvergenceWarning (also at the end of a sparsity search whose intermediate solves are
silent), and Ctrl-C inside any long compiled kernel is a KeyboardInterrupt."""
import importlib
import warnings

import numpy as np
import pytest

from layertrim import solvers
from layertrim.solvers import ConvergenceWarning, nettrim
from layertrim.solvers.dc.subproblem import solve_subproblem


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


def _pending_sigint(*args, **kwargs):
    """What a compiled kernel does when Ctrl-C arrives while it runs (see solvers/base/interrupt.py)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as pending:
        raise SystemError("CPUDispatcher(<function kernel>) returned a result with an exception set") from pending


def _layer(rng, relu=False):
    X = rng.standard_normal((40, 8))
    Y = X @ rng.standard_normal((8, 3))
    return X, (np.maximum(Y, 0) if relu else Y)


#: (module, kernel it calls, public call that reaches the kernel)
KERNEL_CALLS = {
    "lasso-cd": ("lasso.cd", "cd_columns", lambda X, Y: solvers.lasso(X, Y, lam=1e-3, solver="cd")),
    "group-lasso-cd": ("lasso.cd", "bcd_rows", lambda X, Y: solvers.lasso(X, Y, lam=1e-3, penalty="group")),
    "lasso-fista": ("lasso.solver", "soft_threshold", lambda X, Y: solvers.lasso(X, Y, lam=1e-3, solver="fista")),
    "nettrim-admm": ("nettrim.solver", "admm", lambda X, Y: solvers.nettrim(X, np.maximum(Y, 0), eps=0.05)),
    "feta-ccp": ("dc.ccp", "active_targets", lambda X, Y: solvers.feta(X, np.maximum(Y, 0), lam=1e-3)),
    "feta-sparsity": ("dc.support", "majorizer_targets",
                      lambda X, Y: solvers.feta(X, np.maximum(Y, 0), sparsity=0.5)),
    "dc-subproblem": ("dc.subproblem", "surrogate_residual",
                      lambda X, Y: solve_subproblem(X, np.maximum(Y, 0), np.zeros((8, 3)), lam=1e-3)),
    "grda": ("grda", "_grda_epoch", lambda X, Y: solvers.grda(X, Y, lr=0.01, c=0.01, epochs=2)),
    "grda-step": ("grda", "_grda_update",
                  lambda X, Y: solvers.grda_step(np.zeros(3), np.zeros(3), np.ones(3), 0.1, 1, 0.0, 0.1, 0.5)),
    "iht-iteration": ("threshold.iteration", "support_mask", lambda X, Y: solvers.iht(X, Y, sparsity=0.5)),
    "iht-swaps": ("threshold.swaps", "exchange_search", lambda X, Y: solvers.iht(X, Y, sparsity=0.5, swaps=True)),
    "iht-permute": ("threshold.permutation", "refine_groups",
                    lambda X, Y: solvers.iht(X, Y, pattern="2:4", permute=True)),
    "magnitude-permute": ("threshold.permutation", "refine_groups",
                          lambda X, Y: solvers.magnitude(np.ones((8, 3)), pattern="2:4", permute=True)),
}


@pytest.mark.parametrize("case", list(KERNEL_CALLS))
def test_ctrl_c_in_every_long_kernel_reaches_the_caller_as_keyboard_interrupt(case, rng, monkeypatch):
    module, kernel, call = KERNEL_CALLS[case]
    monkeypatch.setattr(importlib.import_module(f"layertrim.solvers.{module}"), kernel, _pending_sigint)
    with pytest.raises(KeyboardInterrupt):
        call(*_layer(rng))
