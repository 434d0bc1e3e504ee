"""``layertrim verify``: solve a user's layer problem with a layertrim solver and
with cvxpy, and compare objectives and constraint violations.

Every quantity printed is evaluated here from ``(X, Y, W, b)`` by the formulas
below, for both solutions alike, so the comparison does not rely on what
either solver reports about itself:

- lasso: ``f(W, b) = (1/2P) ||X W + 1 b^T - Y||_F^2 + lam ||W||_1``.
- nettrim: ``||W||_1`` subject to ``||(X W + 1 b^T - Y)_Omega||_F <= eps ||Y||_F``
  and ``(X W + 1 b^T)_{Omega^c} <= V_{Omega^c}`` (``Omega = {Y > 0}``, ``V = 0``
  unless the archive holds ``V``); with ``--linear`` only the ball on all entries.
  Violations are relative to ``||Y||_F``.
- feta (nonconvex): the convex subproblem of the convex–concave procedure
  linearized at the returned point; at a fixed point of the procedure the
  returned point minimizes it, so the gap to cvxpy's minimum measures how far
  the solver is from stationarity.
- iht (nonconvex): least squares on the returned support,
  ``(1/2P) ||X W + 1 b^T - Y||_F^2`` with ``W`` zero off the support; the refit
  step must reach cvxpy's minimum over that support.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from layertrim.solvers.base.errors import LayerTrimError, ParameterError
from layertrim.solvers.base.validation import check_scalar, check_sparsity, exactly_one

from .cli_io import load_layer_problem

#: a reference weight counts as zero below this fraction of its largest entry
#: (interior-point solvers return tiny nonzeros instead of exact zeros)
ZERO_RTOL = 1e-6


class Reference(NamedTuple):
    """A reference solution ``(W, b)``."""

    W: np.ndarray
    b: np.ndarray | None


@dataclass
class Comparison:
    """What ``verify`` prints: the problem, one line per measured quantity, a verdict."""

    problem: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, name, fast, ref=""):
        self.rows.append((name, fast, ref))

    def check(self, name: str, value: float, tol: float):
        """Record a failure when ``|value| > tol``."""
        if not abs(value) <= tol:
            self.failures.append(f"{name} {value:.2e} exceeds {tol:.0e}")

    def format(self, reference: str) -> str:
        head = ("", "layertrim", reference)
        w0 = max(len(r[0]) for r in [head, *self.rows])
        w1 = max(len(r[1]) for r in [head, *self.rows])
        w2 = max(len(r[2]) for r in [head, *self.rows])
        lines = [self.problem, ""]
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}".rstrip() for a, b, c in [head, *self.rows]]
        return "\n".join(lines)


def _residual(X, Y, W, b):
    R = X @ W - Y
    return R + b if b is not None else R


def _ref_sparsity(W) -> float:
    scale = np.max(np.abs(W)) if W.size else 0.0
    return float(np.mean(np.abs(W) <= ZERO_RTOL * scale))


def _gap_rows(cmp: Comparison, name: str, fast: float, ref: float, rtol: float, dtype):
    """``(fast - ref) / |ref|`` within ``rtol``; when ``|ref|`` is below the noise of ``dtype`` (``sqrt(eps)``:
    an optimum of 0, as for ``Y = 0``), the absolute gap within that noise (a ratio would be noise over ~0)."""
    atol = float(np.sqrt(np.finfo(dtype).eps))
    kind, gap, tol = ("relative", (fast - ref) / abs(ref), rtol) if abs(ref) > atol else ("absolute", fast - ref, atol)
    cmp.add(f"{kind} {name}", f"{gap:.2e}")
    cmp.check(f"{kind} {name}", gap, tol)


def lasso_objective(X, Y, W, b, lam) -> float:
    """``(1/2P) ||X W + 1 b^T - Y||_F^2 + lam ||W||_1``."""
    return float(0.5 * np.sum(_residual(X, Y, W, b) ** 2) / X.shape[0] + lam * np.abs(W).sum())


def nettrim_violations(X, Y, W, b, eps, *, relu=True, V=None):
    """Relative violations ``(ball, inactive)`` of Net-Trim's two constraints (0 when satisfied).

    ``ball = max(0, ||R_Omega||_F - eps ||Y||_F) / ||Y||_F`` with ``R = X W + 1 b^T - Y``;
    ``inactive = ||(X W + 1 b^T - V)_+ on Omega^c||_F / ||Y||_F`` (0 for a linear layer);
    absolute instead of relative when ``Y = 0``.
    """
    R = _residual(X, Y, W, b)
    ny = float(np.linalg.norm(Y)) or 1.0
    if not relu:
        return max(0.0, float(np.linalg.norm(R)) - eps * float(np.linalg.norm(Y))) / ny, 0.0
    omega = Y > 0
    ball = max(0.0, float(np.linalg.norm(R[omega])) - eps * float(np.linalg.norm(Y))) / ny
    Z = R + Y  # X W + 1 b^T
    bound = np.zeros_like(Y) if V is None else V
    excess = np.maximum(Z - bound, 0.0)[~omega]
    return ball, float(np.linalg.norm(excess)) / ny


def relu_objective(X, Y, W, b, lam) -> float:
    """FeTa's ``(1/2P) ||relu(X W + 1 b^T) - Y||_F^2 + lam ||W||_1``."""
    Z = np.maximum(_residual(X, Y, W, b) + Y, 0.0)
    return float(0.5 * np.sum((Z - Y) ** 2) / X.shape[0] + lam * np.abs(W).sum())


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _param(args, name: str):
    """The regularization the caller gave, or ParameterError naming the choices."""
    value = getattr(args, name)
    exactly_one(name, value, "sparsity", args.sparsity)
    if args.sparsity is not None:
        check_sparsity(args.sparsity)
        return None
    return check_scalar(value, name, low=0.0, low_open=name == "eps")


def _reject(args, *names):
    given = [f"--{n}" for n in names if getattr(args, n) is not None]
    if given:
        raise ParameterError(f"--method {args.method} does not take {', '.join(given)}")


def verify_lasso(X, Y, args, extras, cmp: Comparison):
    _reject(args, "eps")
    lam = _param(args, "lam")
    from layertrim.solvers import lasso, reference

    fast, t_fast = _timed(lasso, X, Y, lam=lam, sparsity=args.sparsity, intercept=args.intercept)
    lam = float(fast.info["lam"]) if lam is None else lam
    (W_ref, b_ref, _), t_ref = _timed(reference.lasso, X, Y, lam, intercept=args.intercept, solver=args.solver)
    ref = Reference(W_ref, b_ref)
    f_fast = lasso_objective(X, Y, fast.W, fast.b, lam)
    f_ref = lasso_objective(X, Y, ref.W, ref.b, lam)
    cmp.problem += f"\nlasso: (1/2P)||XW + 1b^T - Y||_F^2 + lam ||W||_1,  lam = {lam:.6g}"
    _objective_rows(cmp, f_fast, f_ref, args.rtol, X.dtype)
    _common_rows(cmp, fast, ref, t_fast, t_ref)


def verify_nettrim(X, Y, args, extras, cmp: Comparison):
    _reject(args, "lam")
    eps = _param(args, "eps")
    from layertrim.solvers import nettrim, reference

    relu = not args.linear
    V = extras.get("V")
    if V is not None and V.shape != Y.shape:
        raise ParameterError(f"V must have the shape of Y {Y.shape}, got {V.shape}")
    kw = dict(relu=relu, intercept=args.intercept, V=V)
    fast, t_fast = _timed(nettrim, X, Y, eps=eps, sparsity=args.sparsity, **kw)
    eps = float(fast.info["eps"]) if eps is None else eps
    (W_ref, b_ref, _), t_ref = _timed(reference.nettrim, X, Y, eps, solver=args.solver, **kw)
    ref = Reference(W_ref, b_ref)
    kind = "ReLU" if relu else "linear"
    cmp.problem += f"\nnettrim ({kind}): min ||W||_1 s.t. constraints,  eps = {eps:.6g}"
    _objective_rows(cmp, float(np.abs(fast.W).sum()), float(np.abs(ref.W).sum()), args.rtol, X.dtype)
    names = ("fit-ball violation", "inactive-set violation")
    for name, v_fast, v_ref in zip(names, nettrim_violations(X, Y, fast.W, fast.b, eps, relu=relu, V=V),
                                   nettrim_violations(X, Y, ref.W, ref.b, eps, relu=relu, V=V)):
        if relu or name == names[0]:
            cmp.add(name, f"{v_fast:.2e}", f"{v_ref:.2e}")
            cmp.check(f"layertrim's {name}", v_fast, args.ctol)
    _common_rows(cmp, fast, ref, t_fast, t_ref)


def verify_feta(X, Y, args, extras, cmp: Comparison):
    _reject(args, "eps")
    if args.sparsity is not None:
        raise ParameterError(
            "--method feta is verified at a given --lam: its sparsity mode ends with a polish on a fixed "
            "support, which is not the lam problem the reference states"
        )
    lam = _param(args, "lam")
    if np.any(Y < 0):
        raise ParameterError("feta fits post-ReLU targets: Y must be >= 0 (for a linear layer use --method lasso)")
    from layertrim.solvers import feta, reference

    fast, t_fast = _timed(feta, X, Y, lam=lam, intercept=args.intercept)
    sub, t_ref = _timed(reference.feta_subproblem, X, Y, fast.W, fast.b, lam=lam,
                        intercept=args.intercept, solver=args.solver)
    cmp.problem += (f"\nfeta: (1/2P)||relu(XW + 1b^T) - Y||_F^2 + lam ||W||_1,  lam = {lam:.6g}"
                    "\nchecked: the convex subproblem linearized at layertrim's solution")
    s_fast = feta_subproblem_objective(X, Y, fast.W, fast.b, lam, fast.W, fast.b)
    s_ref = feta_subproblem_objective(X, Y, sub.W, sub.b, lam, fast.W, fast.b)
    cmp.add("subproblem objective", f"{s_fast:.9e}", f"{s_ref:.9e}")
    _gap_rows(cmp, "stationarity gap", s_fast, s_ref, args.rtol, X.dtype)
    cmp.add("DC objective", f"{relu_objective(X, Y, fast.W, fast.b, lam):.9e}",
            f"{relu_objective(X, Y, sub.W, sub.b, lam):.9e}")
    _common_rows(cmp, fast, sub, t_fast, t_ref)


def feta_subproblem_objective(X, Y, W, b, lam, Wk, bk) -> float:
    """``(1/2P)||relu(Z)||^2 - (1/P)<Y * 1[Z_k > 0], Z> + (1/2P)||Y||^2 + lam ||W||_1``.

    ``Z = X W + 1 b^T``; ``Z_k`` is the linearization point's pre-activation.
    The concave part ``-(1/P)<Y, relu(Z)>`` is replaced by its linearization at
    ``Z_k`` (subgradient ``1[Z_k > 0]``); the constant makes the subproblem equal
    the DC objective at ``Z = Z_k``.
    """
    P = X.shape[0]
    Z = _residual(X, Y, W, b) + Y
    Zk = _residual(X, Y, Wk, bk) + Y
    lin = np.sum(Y * (Zk > 0) * Z)
    return float((0.5 * np.sum(np.maximum(Z, 0) ** 2) - lin + 0.5 * np.sum(Y**2)) / P + lam * np.abs(W).sum())


def verify_iht(X, Y, args, extras, cmp: Comparison):
    _reject(args, "lam", "eps")
    if args.sparsity is None:
        raise ParameterError("--method iht needs --sparsity")
    check_sparsity(args.sparsity)
    from layertrim.solvers import iht

    fast, t_fast = _timed(iht, X, Y, sparsity=args.sparsity, intercept=args.intercept)
    ref, t_ref = _timed(support_least_squares, X, Y, fast.W != 0, intercept=args.intercept, solver=args.solver)
    ref = Reference(*ref)
    cmp.problem += (f"\niht: (1/2P)||XW + 1b^T - Y||_F^2 s.t. W has sparsity {args.sparsity:g}"
                    "\nchecked: least squares on layertrim's support")
    P = X.shape[0]
    f_fast = float(0.5 * np.sum(_residual(X, Y, fast.W, fast.b) ** 2) / P)
    f_ref = float(0.5 * np.sum(_residual(X, Y, ref.W, ref.b) ** 2) / P)
    _objective_rows(cmp, f_fast, f_ref, args.rtol, X.dtype)
    _common_rows(cmp, fast, ref, t_fast, t_ref)


def support_least_squares(X, Y, mask, *, intercept=True, solver="clarabel"):
    """cvxpy reference: ``min (1/2P) ||X W + 1 b^T - Y||_F^2`` with ``W = 0`` off ``mask``.

    Returns ``(W, b)`` with exact zeros off the support.
    """
    from layertrim.solvers.reference import require_cvxpy, solve

    cp = require_cvxpy()
    P, N = X.shape
    M = Y.shape[1]
    W = cp.Variable((N, M))
    b = cp.Variable(M) if intercept else None
    Z = X @ W + (np.ones((P, 1)) @ cp.reshape(b, (1, M), order="C") if intercept else 0)
    cons = [cp.multiply(1.0 - mask, W) == 0] if not mask.all() else []
    solve(cp.Problem(cp.Minimize(cp.sum_squares(Z - Y) / (2 * P)), cons), solver)
    W_ref = np.where(mask, W.value, 0.0)
    return W_ref, (np.asarray(b.value) if intercept else None)


def _objective_rows(cmp: Comparison, f_fast: float, f_ref: float, rtol: float, dtype):
    cmp.add("objective", f"{f_fast:.9e}", f"{f_ref:.9e}")
    _gap_rows(cmp, "objective gap", f_fast, f_ref, rtol, dtype)


def _common_rows(cmp: Comparison, fast, ref, t_fast, t_ref):
    cmp.add("status", fast.status, "optimal")
    cmp.add("sparsity", f"{np.mean(fast.W == 0):.2%}", f"{_ref_sparsity(ref.W):.2%}")
    cmp.add("time (s)", f"{t_fast:.3f}", f"{t_ref:.3f}")


VERIFIERS = {"lasso": verify_lasso, "nettrim": verify_nettrim, "feta": verify_feta, "iht": verify_iht}


class DisagreementError(LayerTrimError):
    """The fast and the reference solutions disagree beyond the stated tolerances."""


def main(args) -> Comparison:
    """Run the comparison of ``args.method`` on ``args.file``; print it; raise on disagreement."""
    X, Y, extras = load_layer_problem(args.file)
    if args.outputs is not None:
        k = check_scalar(args.outputs, "--outputs", low=1, integer=True)
        Y = np.ascontiguousarray(Y[:, :k])
        if "V" in extras:
            extras["V"] = np.ascontiguousarray(extras["V"][:, :k])
    cmp = Comparison(problem=f"{args.file}: X {X.shape}, Y {Y.shape}, {X.dtype}, "
                             f"{'with' if args.intercept else 'no'} intercept")
    VERIFIERS[args.method](X, Y, args, extras, cmp)
    print(cmp.format(f"cvxpy ({args.solver})"))
    if cmp.failures:
        raise DisagreementError("; ".join(cmp.failures))
    print(f"\nagree: objective within {args.rtol:g} relative"
          + (f", constraints within {args.ctol:g} relative" if args.method == "nettrim" else ""))
    return cmp
