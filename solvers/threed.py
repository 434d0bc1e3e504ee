"""Three-dimensional pruning, the core: an accuracy model ``acc(d, w, r)``, a
FLOPs model and the budget-constrained maximum over depth, width and
resolution ratios (Wang et al., "Accelerate CNNs from Three Dimensions").

The torch binding measures accuracies of pruned-and-fine-tuned networks at a
few ratio triples ``(d, w, r)``; this module fits a polynomial to them,
solves

    max_{d, w, r}  acc(d, w, r)   s.t.  FLOPs(d, w, r) <= budget,
                                        lower <= (d, w, r) <= upper  (within (0, 1]),

to global optimality on the box (dense grid, SLSQP refinement, and an upper
bound on the true maximum), and rounds the optimum to realizable discrete
configurations.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import lsq_linear, minimize

from .base.errors import InfeasibleError, ParameterError, ShapeError
from .base.validation import check_array, check_choice, check_scalar, result_dtype

FORMS = ("specialized", "full")


def monomial_exponents(form: str = "specialized", degree: int = 2) -> np.ndarray:
    """Exponents ``(i, j, k)`` of the monomials ``d^i w^j r^k`` of a model form.

    ``"full"``: the tensor-product basis ``0 <= i, j, k <= degree``,
    ``(degree + 1)^3`` monomials (the unrestricted polynomial of the method).
    ``"specialized"``: a constant, the univariate powers ``d^i, w^i, r^i`` for
    ``1 <= i <= degree`` and the three bilinear interactions ``dw, dr, wr``:
    ``3 * degree + 4`` monomials. Why these: accuracy varies smoothly and
    monotonically along each dimension (captured by the univariate terms),
    while the samples are collected mainly along the three axes, which
    identify no higher-order cross terms; the bilinear terms are the
    lowest-order interactions and the only ones a few off-axis samples can
    pin down. This keeps the number of coefficients linear in ``degree``
    instead of cubic, so a dozen samples suffice.

    Returns
    -------
    ndarray of int, shape (n_monomials, 3)
    """
    check_choice(form, "form", FORMS)
    degree = check_scalar(degree, "degree", low=1, high=8, integer=True)
    if form == "full":
        rng = range(degree + 1)
        return np.array(list(itertools.product(rng, rng, rng)), dtype=np.int64)
    rows = [(0, 0, 0)]
    for axis in range(3):
        for p in range(1, degree + 1):
            e = [0, 0, 0]
            e[axis] = p
            rows.append(tuple(e))
    rows += [(1, 1, 0), (1, 0, 1), (0, 1, 1)]
    return np.array(rows, dtype=np.int64)


def _design(points: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Monomial features ``prod_a points[:, a] ** exponents[m, a]``, shape (n, n_monomials)."""
    return np.prod(points[:, None, :] ** exponents[None, :, :], axis=2)


def _axis_powers(values: np.ndarray, max_power: int) -> np.ndarray:
    """``values[:, None] ** arange(max_power + 1)``, shape (len(values), max_power + 1)."""
    return values[:, None] ** np.arange(max_power + 1)[None, :]


@dataclass(frozen=True)
class AccuracyModel:
    """A fitted polynomial ``acc(d, w, r) = sum_m c_m d^{i_m} w^{j_m} r^{k_m}``.

    Attributes
    ----------
    exponents : ndarray of int, shape (n_monomials, 3)
    coef : ndarray, shape (n_monomials,)
        Coefficients, in the dtype of the fitted samples.
    form : str
        ``"specialized"`` or ``"full"`` (see :func:`monomial_exponents`).
    degree : int
    ridge : float
        The ridge weight used in the fit.
    residual : float
        Root-mean-square fit residual on the samples.
    monotone : bool
        Fitted with the shape constraint (nondecreasing in each ratio).
    """

    exponents: np.ndarray
    coef: np.ndarray
    form: str
    degree: int
    ridge: float
    residual: float
    monotone: bool = False

    def __call__(self, d, w, r):
        """Predicted accuracy, broadcasting over ``d``, ``w``, ``r``."""
        d, w, r = np.broadcast_arrays(*(np.asarray(v, dtype=self.coef.dtype) for v in (d, w, r)))
        pts = np.stack([d.ravel(), w.ravel(), r.ravel()], axis=1)
        return (_design(pts, self.exponents) @ self.coef).reshape(d.shape)

    def gradient(self, x: Sequence[float]) -> np.ndarray:
        """``(d acc/dd, d acc/dw, d acc/dr)`` at one point ``x = (d, w, r)``."""
        x = np.asarray(x, dtype=np.float64)
        g = np.zeros(3)
        for a in range(3):
            e = self.exponents.copy()
            factor = e[:, a].astype(np.float64)
            e[:, a] = np.maximum(e[:, a] - 1, 0)
            g[a] = float((_design(x[None, :], e)[0] * factor) @ self.coef)
        return g

    def grid(self, d: np.ndarray, w: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Values on the tensor grid ``d x w x r``, shape (len(d), len(w), len(r))."""
        top = int(self.exponents.max())
        tensor = np.zeros((top + 1,) * 3)
        np.add.at(tensor, tuple(self.exponents.T), self.coef.astype(np.float64))
        return np.einsum(
            "ia,jb,kc,abc->ijk", _axis_powers(d, top), _axis_powers(w, top), _axis_powers(r, top), tensor,
            optimize=True,
        )

    def lipschitz(self) -> np.ndarray:
        """Bounds ``L_a >= max |d acc / d x_a|`` over ``[0, 1]^3``: ``sum_m |c_m| e_{m,a}``.

        On the unit box every monomial factor is at most 1, so the partial
        derivative of ``d^i w^j r^k`` in ``d`` is at most ``i``.
        """
        return np.abs(self.coef.astype(np.float64)) @ self.exponents.astype(np.float64)


def _shortfall_to_monomials(exponents: np.ndarray) -> np.ndarray:
    """Matrix ``T`` with ``prod_a (1 - x_a)^{e_{m,a}} = sum_n T[m, n] prod_a x_a^{e_{n,a}}``.

    The exponent set must be closed under lowering any exponent (both forms
    are), so the binomial expansion of every shortfall monomial stays in it.
    """
    index = {tuple(e): n for n, e in enumerate(exponents.tolist())}
    T = np.zeros((len(exponents), len(exponents)))
    for m, e in enumerate(exponents.tolist()):
        for k in itertools.product(*(range(p + 1) for p in e)):
            T[m, index[k]] += np.prod([comb(p, q) * (-1.0) ** q for p, q in zip(e, k)])
    return T


def fit_accuracy_model(points, accuracy, *, form: str = "specialized", degree: int = 2, ridge: float = 1e-6,
                       monotone: bool = False) -> AccuracyModel:
    """Fit ``acc(d, w, r)`` to measured samples by ridge-regularized least squares.

    Solves ``min_c ||Phi c - a||^2 + ridge * n * ||c_{-0}||^2`` where ``Phi``
    holds the monomials of ``form`` at the samples, ``a`` the accuracies and
    ``c_{-0}`` every coefficient but the constant (which stays unpenalized).
    The ridge term makes the fit unique when the samples do not identify every
    monomial (e.g. interactions from samples on the axes only) and picks the
    smallest such coefficients.

    With ``monotone=True`` the same monomials are written in the shortfalls
    ``u = 1 - (d, w, r)`` (how much of each dimension was pruned),

        acc = beta_0 - sum_{m != 0} beta_m  u_d^{i_m} u_w^{j_m} u_r^{k_m},   beta_m >= 0,

    and the bound-constrained least-squares problem (same ridge on
    ``beta_{-0}``) is solved with :func:`scipy.optimize.lsq_linear`. Every
    basis term ``-u^e`` has partial derivative ``e_a u_a^{e_a - 1} prod_{b != a}
    u_b^{e_b} >= 0`` in ``x_a`` on the unit box and second derivative
    ``-e_a (e_a - 1) (...) <= 0``, so the fitted accuracy is nondecreasing in
    each ratio and concave along each axis on ``[0, 1]^3`` and never exceeds
    ``beta_0 = acc(1, 1, 1)``: pruning can only cost accuracy, with growing
    marginal cost, and the model cannot extrapolate to accuracies above the
    unpruned network's. An interaction ``-u_a u_b`` says that pruning two
    dimensions together costs more than the sum of the two costs; for the
    opposite sign, each bilinear monomial also enters as
    ``gamma_ab (x_a x_b - 1) = -gamma_ab (u_a + u_b - u_a u_b)``,
    ``gamma_ab >= 0`` (same ridge), which is nondecreasing in every ratio,
    linear along each axis and at most 0 on the unit box, and says that
    pruning two dimensions together costs less than the sum. Without it the
    shape constraint alone would favour pruning one dimension only. The
    coefficients are expanded back into monomials of ``(d, w, r)``.

    Parameters
    ----------
    points : array_like, shape (n_samples, 3)
        Ratios ``(d, w, r)``, each in ``[0, 1]`` (1 = the unpruned network).
    accuracy : array_like, shape (n_samples,)
    form : {"specialized", "full"}
    degree : int
        Highest power per variable.
    ridge : float >= 0
    monotone : bool
        Constrain the fit to be nondecreasing in each ratio (see above).

    Returns
    -------
    AccuracyModel
    """
    P = check_array(points, "points", ndim=2)
    dtype = result_dtype(P, np.asarray(accuracy))
    a = check_array(accuracy, "accuracy", ndim=1, dtype=dtype)
    P = P.astype(dtype, copy=False)
    if P.shape[1] != 3:
        raise ShapeError(f"points must have 3 columns (d, w, r), got shape {P.shape}")
    if P.shape[0] != a.shape[0]:
        raise ShapeError(f"points has {P.shape[0]} rows but accuracy has {a.shape[0]} values")
    if np.any(P < 0) or np.any(P > 1):
        raise ParameterError("points must be ratios in [0, 1]")
    ridge = check_scalar(ridge, "ridge", low=0.0)
    exps = monomial_exponents(form, degree)
    X64, a64 = P.astype(np.float64), a.astype(np.float64)
    n, k = X64.shape[0], len(exps)
    if ridge == 0.0 and n < k:
        raise ParameterError(f"{n} samples cannot determine {k} coefficients without ridge > 0")
    penalty = np.sqrt(ridge * n) * np.eye(k)[1:]
    rhs = np.concatenate([a64, np.zeros(k - 1)])
    if monotone:
        basis = _design(1.0 - X64, exps)
        basis[:, 1:] *= -1.0
        pairs = [m for m, e in enumerate(exps.tolist()) if sorted(e) == [0, 1, 1]]
        product = _design(X64, exps[pairs]) - 1.0  # x_a x_b - 1, nondecreasing on the unit box
        j = len(pairs)
        penalty = np.sqrt(ridge * n) * np.eye(k + j)[1:]
        rhs = np.concatenate([a64, np.zeros(k + j - 1)])
        lower = np.r_[-np.inf, np.zeros(k + j - 1)]
        beta = lsq_linear(np.vstack([np.hstack([basis, product]), penalty]), rhs, bounds=(lower, np.inf),
                          method="bvls", tol=1e-12).x
        gamma, beta = beta[k:], beta[:k]
        beta[1:] *= -1.0
        coef = beta @ _shortfall_to_monomials(exps)
        coef[pairs] += gamma
        coef[0] -= gamma.sum()
    else:
        coef, *_ = np.linalg.lstsq(np.vstack([_design(X64, exps), penalty]), rhs, rcond=None)
    rms = float(np.sqrt(np.mean((_design(X64, exps) @ coef - a64) ** 2)))
    return AccuracyModel(exps, coef.astype(dtype), form, int(degree), ridge, rms, bool(monotone))


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs as a sum of power terms ``F(d, w, r) = sum_t c_t d^{p_t} w^{q_t} r^{s_t}``.

    The binding builds the table from a network's per-layer counts: a layer
    inside removable blocks scales with ``d``, its FLOPs scale with ``w`` once
    per pruned channel dimension (``q`` in 0, 1, 2) and with ``r^2`` when it
    acts on feature maps. :meth:`power_law` is the fallback ``F0 d w^2 r^2``.

    Attributes
    ----------
    coef : ndarray, shape (n_terms,)
    powers : ndarray, shape (n_terms, 3)
    """

    coef: np.ndarray
    powers: np.ndarray

    def __post_init__(self):
        coef = np.asarray(self.coef, dtype=np.float64).ravel()
        powers = np.asarray(self.powers, dtype=np.float64).reshape(-1, 3)
        if coef.shape[0] != powers.shape[0]:
            raise ShapeError(f"FlopsModel has {coef.shape[0]} coefficients but {powers.shape[0]} power rows")
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(powers))):
            raise ParameterError("FlopsModel coefficients and powers must be finite")
        if np.any(powers < 0):
            raise ParameterError("FlopsModel powers must be >= 0")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "powers", powers)

    @classmethod
    def power_law(cls, total: float = 1.0) -> "FlopsModel":
        """The usual approximation ``total * d * w^2 * r^2``."""
        total = check_scalar(total, "total", low=0.0, low_open=True)
        return cls(np.array([total]), np.array([[1.0, 2.0, 2.0]]))

    @property
    def total(self) -> float:
        """FLOPs of the unpruned network, ``F(1, 1, 1)``."""
        return float(self.coef.sum())

    @property
    def monotone(self) -> bool:
        """True when ``F`` is nondecreasing in each ratio on the box (nonnegative terms)."""
        return bool(np.all(self.coef[self.powers.sum(axis=1) > 0] >= 0))

    def __call__(self, d, w, r):
        d, w, r = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (d, w, r)))
        out = np.zeros(d.shape)
        for c, (p, q, s) in zip(self.coef, self.powers):
            out = out + c * d**p * w**q * r**s
        return out

    def gradient(self, x: Sequence[float]) -> np.ndarray:
        d, w, r = (float(v) for v in x)
        g = np.zeros(3)
        for c, (p, q, s) in zip(self.coef, self.powers):
            g[0] += c * p * d ** max(p - 1, 0) * w**q * r**s if p else 0.0
            g[1] += c * q * d**p * w ** max(q - 1, 0) * r**s if q else 0.0
            g[2] += c * s * d**p * w**q * r ** max(s - 1, 0) if s else 0.0
        return g

    def grid(self, d: np.ndarray, w: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Values on the tensor grid ``d x w x r``."""
        out = np.zeros((len(d), len(w), len(r)))
        for c, (p, q, s) in zip(self.coef, self.powers):
            out += c * (d**p)[:, None, None] * (w**q)[None, :, None] * (r**s)[None, None, :]
        return out


@dataclass(frozen=True)
class ThreeDOptimum:
    """Solution of the budget-constrained accuracy maximization.

    Attributes
    ----------
    d, w, r : float
        Depth, width and resolution ratios.
    accuracy : float
        Predicted accuracy ``acc(d, w, r)``.
    flops : float
        ``FLOPs(d, w, r)`` (in the units of the FLOPs model).
    budget : float
        The FLOPs budget (same units).
    grid_accuracy : float
        Best predicted accuracy over the feasible grid points.
    upper_bound : float
        Certified bound ``>=`` the true maximum over the box: the grid best
        plus ``sum_a L_a h_a`` (Lipschitz bounds times grid steps); ``nan``
        when the FLOPs model is not known to be monotone.
    grid_points : int
        Points per axis of the grid.
    """

    d: float
    w: float
    r: float
    accuracy: float
    flops: float
    budget: float
    grid_accuracy: float
    upper_bound: float
    grid_points: int

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (self.d, self.w, self.r)

    @property
    def gap(self) -> float:
        """``upper_bound - accuracy``: how far the answer can be from the true maximum."""
        return self.upper_bound - self.accuracy


def _check_box(lower, upper):
    lo = np.asarray(lower, dtype=np.float64).ravel()
    hi = np.asarray(upper, dtype=np.float64).ravel()
    lo = np.broadcast_to(lo, (3,)).copy() if lo.size in (1, 3) else None
    hi = np.broadcast_to(hi, (3,)).copy() if hi.size in (1, 3) else None
    if lo is None or hi is None:
        raise ShapeError("lower and upper must be scalars or 3 values (d, w, r)")
    if np.any(lo < 0) or np.any(hi > 1) or np.any(lo > hi) or np.any(hi <= 0):
        raise ParameterError(f"need 0 <= lower <= upper <= 1 and upper > 0, got lower={lo}, upper={hi}")
    return lo, hi


def maximize_accuracy(
    model: AccuracyModel,
    flops: FlopsModel | Callable,
    budget: float,
    *,
    lower=0.05,
    upper=1.0,
    grid_points: int = 61,
    n_starts: int = 5,
) -> ThreeDOptimum:
    """Globally maximize ``acc(d, w, r)`` subject to ``FLOPs(d, w, r) <= budget`` on a box.

    Solves ``max acc(d, w, r)  s.t.  F(d, w, r) <= budget, lower <= (d, w, r) <= upper``.

    Parameters
    ----------
    model : AccuracyModel
    flops : FlopsModel or callable ``(d, w, r) -> flops`` (vectorized)
    budget : float > 0
        In the units of ``flops`` (for a ratio, use a model with total 1).
    lower, upper : float or 3 values
        The box, within ``[0, 1]``.
    grid_points : int
        Points per axis of the search grid.
    n_starts : int
        Best feasible grid points (distinct cells) refined by SLSQP.

    Returns
    -------
    ThreeDOptimum

    Notes
    -----
    1. Evaluate ``acc`` and ``F`` on the ``grid_points^3`` tensor grid of the
       box and keep the feasible points.
    2. Polish the ``n_starts`` best with SLSQP (analytic gradients), keep the
       best feasible answer, never worse than the grid best.
    3. Certificate: when ``F`` is nondecreasing in each ratio (nonnegative
       terms), any feasible point ``x*`` rounds down to a feasible grid point
       ``x_g`` with ``|x*_a - x_g,a| <= h_a``, hence
       ``acc(x*) <= acc(x_g) + sum_a L_a h_a`` with ``L_a`` from
       :meth:`AccuracyModel.lipschitz`; this is ``upper_bound``.
    With a monotone model (``fit_accuracy_model(..., monotone=True)``) and
    nonnegative FLOPs terms, the maximum lies on the budget surface
    ``F = budget`` unless the box's upper corner already meets the budget.

    Raises InfeasibleError when no grid point meets the budget (the budget is
    below the FLOPs at ``lower``).
    """
    if not isinstance(model, AccuracyModel):
        raise ParameterError("model must be an AccuracyModel (see fit_accuracy_model)")
    if not callable(flops):
        raise ParameterError("flops must be a FlopsModel or a callable (d, w, r) -> flops")
    budget = check_scalar(budget, "budget", low=0.0, low_open=True)
    grid_points = check_scalar(grid_points, "grid_points", low=2, integer=True)
    n_starts = check_scalar(n_starts, "n_starts", low=0, integer=True)
    lo, hi = _check_box(lower, upper)
    axes = [np.linspace(lo[a], hi[a], grid_points) for a in range(3)]
    acc = model.grid(*axes)
    if isinstance(flops, FlopsModel):
        F = flops.grid(*axes)
    else:
        D, Wg, R = np.meshgrid(*axes, indexing="ij")
        F = np.asarray(flops(D, Wg, R), dtype=np.float64)
    # relative slack for rounding in the FLOPs evaluation only
    feasible = F <= budget * (1 + 1e-12)
    if not feasible.any():
        raise InfeasibleError(
            f"no point of the box meets the FLOPs budget {budget:.6g}; the smallest is {F.min():.6g} at lower={lo}"
        )
    masked = np.where(feasible, acc, -np.inf)
    order = np.argsort(masked, axis=None)[::-1]
    best_idx = np.unravel_index(order[0], acc.shape)
    best_x = np.array([axes[a][best_idx[a]] for a in range(3)])
    grid_best = float(acc[best_idx])
    best_val = grid_best

    def f_flops(x):
        return float(np.asarray(flops(*x)))

    def g_flops(x):
        if isinstance(flops, FlopsModel):
            return flops.gradient(x)
        eps = 1e-7
        return np.array([(f_flops(x + eps * e) - f_flops(x - eps * e)) / (2 * eps) for e in np.eye(3)])

    starts = [int(i) for i in order[: max(n_starts, 0)] if np.isfinite(masked.flat[i])]
    for flat in starts:
        x0 = np.array([axes[a][i] for a, i in enumerate(np.unravel_index(flat, acc.shape))])
        res = minimize(
            lambda x: -float(model(*x)),
            x0,
            jac=lambda x: -model.gradient(x),
            method="SLSQP",
            bounds=list(zip(lo, hi)),
            constraints=[{"type": "ineq", "fun": lambda x: budget - f_flops(x), "jac": lambda x: -g_flops(x)}],
            options={"maxiter": 200, "ftol": 1e-12},
        )
        x = np.clip(res.x, lo, hi)
        val = float(model(*x))
        if f_flops(x) <= budget * (1 + 1e-9) and val > best_val:
            best_val, best_x = val, x
    steps = (hi - lo) / (grid_points - 1)
    monotone = isinstance(flops, FlopsModel) and flops.monotone
    bound = grid_best + float(model.lipschitz() @ steps) if monotone else float("nan")
    return ThreeDOptimum(
        d=float(best_x[0]),
        w=float(best_x[1]),
        r=float(best_x[2]),
        accuracy=best_val,
        flops=f_flops(best_x),
        budget=budget,
        grid_accuracy=grid_best,
        upper_bound=bound,
        grid_points=grid_points,
    )


def realizable_optimum(
    model: AccuracyModel,
    flops: FlopsModel | Callable,
    budget: float,
    depths,
    widths,
    resolutions,
    *,
    check: Callable[[float, float, float], float] | None = None,
    slack: float = 0.0,
) -> ThreeDOptimum:
    """Best configuration among the realizable discrete ratios that meets the budget.

    Depth and width are discrete in a real network (whole blocks, channel
    counts), resolution in whole pixels. Every combination of ``depths x
    widths x resolutions`` is ranked by predicted accuracy; the best one whose
    model FLOPs meet ``budget`` — and, when ``check`` is given (e.g. the real
    FLOPs counted on the pruned network), whose ``check(d, w, r) <= budget``
    too — is returned. Exhaustive, so it is the exact discrete optimum.

    With ``check`` and ``slack > 0``, combinations whose model FLOPs are
    within ``budget * (1 + slack)`` are candidates too and only ``check``
    decides: the model's rounding error (channel counts, feature-map sizes)
    can then no longer exclude a configuration that really meets the budget,
    as long as the model overestimates by less than ``slack``.

    Returns
    -------
    ThreeDOptimum
        ``grid_accuracy`` and ``upper_bound`` both hold the best predicted
        accuracy among the candidates (model FLOPs within
        ``budget * (1 + slack)``), an upper bound when ``check`` rejects some; ``grid_points`` is the
        number of combinations.

    Raises InfeasibleError when no combination meets the budget.
    """
    budget = check_scalar(budget, "budget", low=0.0, low_open=True)
    slack = check_scalar(slack, "slack", low=0.0)
    if slack > 0 and check is None:
        raise ParameterError("slack > 0 needs check= (the model FLOPs alone decide without it)")
    axes = []
    for name, vals in (("depths", depths), ("widths", widths), ("resolutions", resolutions)):
        v = np.unique(check_array(vals, name, ndim=1, dtype=np.float64))
        if np.any(v < 0) or np.any(v > 1):
            raise ParameterError(f"{name} must be ratios in [0, 1]")
        axes.append(v)
    acc = model.grid(*axes)
    if isinstance(flops, FlopsModel):
        F = flops.grid(*axes)
    else:
        F = np.asarray(flops(*np.meshgrid(*axes, indexing="ij")), dtype=np.float64)
    masked = np.where(F <= budget * (1 + slack + 1e-12), acc, -np.inf)
    for flat in np.argsort(masked, axis=None)[::-1]:
        if not np.isfinite(masked.flat[flat]):
            break
        idx = np.unravel_index(flat, acc.shape)
        x = [float(axes[a][idx[a]]) for a in range(3)]
        real = float(F[idx]) if check is None else float(check(*x))
        if real <= budget:
            best = float(masked.max())
            return ThreeDOptimum(*x, float(acc[idx]), real, budget, best, best, int(acc.size))
    raise InfeasibleError(f"no realizable configuration meets the FLOPs budget {budget:.6g}")
