"""The accuracy model ``acc(d, w, r)``: a polynomial in the depth, width and
resolution ratios, fitted by ridge-regularized (optionally shape-constrained)
least squares.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Sequence

import numpy as np
from scipy.optimize import lsq_linear

from ..base.errors import ParameterError, ShapeError
from ..base.validation import check_array, check_choice, check_scalar, result_dtype

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
