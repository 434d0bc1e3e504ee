"""Net-Trim's sample complexity on planted layers (Aghasi, Abdi, Romberg, 2018).

The claim: if weights with at most ``s`` nonzeros per neuron reproduce a
layer's outputs exactly, Net-Trim finds them from ``P = O(s log(N/s))``
samples of ``N`` Gaussian inputs. Here the claim is measured as a phase
transition.

Planted layer: ``X`` (P, N) with i.i.d. N(0, 1) entries; per neuron ``w`` with
``s`` nonzeros on a uniformly random support, values ``+-U[1, 2]``;
``Y = relu(X W + 1 b^T)`` (ReLU program) or ``Y = X W + 1 b^T`` (linear
program); ``b = 0`` unless ``intercept`` (then ``b ~ N(0, (0.25 ||w||)^2)``,
fitted jointly as an unpenalized intercept).

Recovery: ``nettrim(X, Y, eps=1e-6, eps_mode="neuron")`` (one program per
neuron). Success is judged against the planted weights only, never from the
solver's status: relative error ``||[w_hat; b_hat] - [w; b]|| / ||[w; b]||
< 1e-3`` and the entries of ``w_hat`` above ``1e-3 max |w|`` are exactly the
planted support.

Nested samples: one trial draws ``X`` for the largest ``P`` and uses its first
``P`` rows. With ``eps = 0`` an added sample adds a constraint (an equation
on Omega, a half-space off it) that the planted ``w`` satisfies, so if ``w``
is the unique minimizer at ``P`` it stays so at every larger ``P``: success
is monotone in ``P``; each solve is warm-started from the previous ``P``'s
weights, and the count of non-monotone trials is a numerical diagnostic.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from layertrim.solvers import ConvergenceWarning, nettrim
from layertrim.solvers.base.errors import ParameterError
from layertrim.solvers.base.validation import check_bool, check_choice, check_scalar

EPS = 1e-6
TOL = 1e-5
MAX_ITER = 3000
ERROR_TOL = 1e-3
#: the full phase-transition sweep: N = 200, s = 5..40, P = 5..200 in steps of 5, 10 trials
FULL = dict(n_inputs=200, sparsities=tuple(range(5, 41, 5)), sizes=tuple(range(5, 201, 5)), trials=10)
#: the CI setting: N = 100, a coarser grid, 10 trials (a few seconds per program)
QUICK = dict(n_inputs=100, sparsities=(4, 8, 12, 16), sizes=tuple(range(4, 101, 8)), trials=10)


def log_scale(s, n_inputs):
    """``L(s) = s log(N/s)``, the claimed order of the number of samples."""
    s = np.asarray(s, dtype=np.float64)
    return s * np.log(n_inputs / s)


def l1_statistical_dimension(s, n_inputs):
    """Statistical dimension of the l1 descent cone at an s-sparse point of R^N (Amelunxen et al., 2014).

    ``delta(s, N) = min_{tau >= 0} s (1 + tau^2) + 2 (N - s) ((1 + tau^2) Q(tau) - tau phi(tau))``
    (``phi``, ``Q``: the standard normal density and upper tail); l1 minimization from
    ``P`` Gaussian equations succeeds with high probability for ``P > delta`` and
    fails for ``P < delta`` (transition width ``O(sqrt N)``); ``delta ~ 2 s log(N/s)``
    for ``s << N``. The exact reference for the linear program.
    """
    tau = np.linspace(0.0, 6.0, 6001)
    phi = np.exp(-tau**2 / 2) / math.sqrt(2 * math.pi)
    tail = np.array([0.5 * math.erfc(x / math.sqrt(2)) for x in tau])
    return float(np.min(s * (1 + tau**2) + 2 * (n_inputs - s) * ((1 + tau**2) * tail - tau * phi)))


@dataclass(frozen=True)
class PlantedLayer:
    """Inputs ``X`` (P, N), planted weights ``W`` (N, M), intercepts ``b`` (M,), outputs ``Y`` (P, M)."""

    X: np.ndarray
    W: np.ndarray
    b: np.ndarray
    Y: np.ndarray


def planted_layer(rng, n_samples, n_inputs, s, *, neurons=1, relu=True, intercept=False) -> PlantedLayer:
    """A layer whose outputs are exactly ``relu(X W + 1 b^T)`` (or ``X W + 1 b^T``) with ``s``-sparse columns of W."""
    n_samples = check_scalar(n_samples, "n_samples", low=1, integer=True)
    n_inputs = check_scalar(n_inputs, "n_inputs", low=1, integer=True)
    s = check_scalar(s, "s", low=1, high=n_inputs, integer=True)
    neurons = check_scalar(neurons, "neurons", low=1, integer=True)
    relu, intercept = check_bool(relu, "relu"), check_bool(intercept, "intercept")
    X = rng.standard_normal((n_samples, n_inputs))
    W = np.zeros((n_inputs, neurons))
    for m in range(neurons):
        support = rng.choice(n_inputs, size=s, replace=False)
        W[support, m] = rng.choice([-1.0, 1.0], size=s) * rng.uniform(1.0, 2.0, size=s)
    b = 0.25 * np.linalg.norm(W, axis=0) * rng.standard_normal(neurons) if intercept else np.zeros(neurons)
    Z = X @ W + b
    return PlantedLayer(X, W, b, np.maximum(Z, 0.0) if relu else Z)


def relative_error(W_hat, b_hat, W, b):
    """Per neuron ``||[w_hat; b_hat] - [w; b]|| / ||[w; b]||`` (b_hat None means 0)."""
    b_hat = np.zeros_like(b) if b_hat is None else np.asarray(b_hat, np.float64)
    diff = np.vstack([np.asarray(W_hat, np.float64) - W, (b_hat - b)[None]])
    return np.linalg.norm(diff, axis=0) / np.linalg.norm(np.vstack([W, b[None]]), axis=0)


def recovered(W_hat, b_hat, W, b):
    """Per neuron: relative error below 1e-3 and the planted support found (entries above 1e-3 max |w|)."""
    level = ERROR_TOL * np.max(np.abs(W), axis=0)
    support = np.all((np.abs(np.asarray(W_hat)) > level) == (W != 0), axis=0)
    return support & (relative_error(W_hat, b_hat, W, b) < ERROR_TOL)


def recover(X, Y, *, relu, intercept=False, warm_start=None, max_iter=MAX_ITER):
    """Net-Trim with ``eps = 1e-6`` per neuron; below the transition max_iter is expected, so quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return nettrim(X, Y, eps=EPS, relu=relu, intercept=intercept, eps_mode="neuron", tol=TOL,
                       max_iter=max_iter, warm_start=warm_start)


def trial_layer(seed, s, trial, n_samples, n_inputs, *, relu, neurons=1, intercept=False) -> PlantedLayer:
    """The planted layer of one trial, from a stream per ``(seed, s, trial)`` (both programs see the same X, W)."""
    rng = np.random.default_rng((seed, s, trial))
    return planted_layer(rng, n_samples, n_inputs, s, neurons=neurons, relu=relu, intercept=intercept)


def sweep_trial(layer: PlantedLayer, sizes, *, relu, intercept=False, max_iter=MAX_ITER):
    """Success (len(sizes), neurons) on the first ``P`` rows for ascending ``P``, each solve warm-started
    from the previous one; and the solves' Results."""
    success, results, warm = np.zeros((len(sizes), layer.W.shape[1]), dtype=bool), [], None
    for i, P in enumerate(sorted(sizes)):
        res = recover(layer.X[:P], layer.Y[:P], relu=relu, intercept=intercept, warm_start=warm, max_iter=max_iter)
        success[i] = recovered(res.W, res.b, layer.W, layer.b)
        results.append(res)
        warm = (res.W, res.b)
    return success, results


@dataclass
class PhaseTransition:
    """Recovery outcomes on the (s, P) grid of one program.

    ``success[i, t, j, m]``: neuron ``m`` of trial ``t`` recovered at
    ``sparsities[i]``, ``sizes[j]``; only cells with ``P >= s`` are run
    (``ran``; below, recovery is impossible: see the tests). ``rates`` is
    the fraction of (trial, neuron) pairs recovered, NaN where not run.
    ``max_iter_share`` is the fraction of solves that stopped at max_iter;
    ``non_monotone`` counts (trial, neuron) pairs recovered at some ``P`` but
    not at a larger one (impossible in exact arithmetic, see the module notes).
    """

    relu: bool
    n_inputs: int
    sparsities: tuple
    sizes: tuple
    seed: int
    intercept: bool
    success: np.ndarray
    ran: np.ndarray
    seconds: float
    solves: int
    max_iter_share: float
    non_monotone: int

    @property
    def name(self) -> str:
        return "ReLU" if self.relu else "linear"

    @property
    def rates(self):
        rate = self.success.mean(axis=(1, 3))
        return np.where(self.ran, rate, np.nan)

    def ratios(self):
        """``P / (s log(N/s))`` on the grid, (n_s, n_P)."""
        return np.asarray(self.sizes)[None, :] / log_scale(self.sparsities, self.n_inputs)[:, None]


def phase_transition(*, relu, n_inputs, sparsities, sizes, trials, seed=0, neurons=1, intercept=False,
                     max_iter=MAX_ITER) -> PhaseTransition:
    """Recovery of planted layers by Net-Trim over the (s, P) grid (``P >= s``), ``trials`` seeded trials each."""
    trials = check_scalar(trials, "trials", low=1, integer=True)
    neurons = check_scalar(neurons, "neurons", low=1, integer=True)
    n_inputs = check_scalar(n_inputs, "n_inputs", low=1, integer=True)
    relu, intercept = check_bool(relu, "relu"), check_bool(intercept, "intercept")
    if len(sparsities) == 0 or len(sizes) == 0:
        raise ParameterError("sparsities and sizes must be non-empty")
    sparsities = tuple(check_scalar(s, "sparsities", low=1, high=n_inputs, integer=True) for s in sparsities)
    sizes = tuple(sorted(check_scalar(P, "sizes", low=1, integer=True) for P in sizes))
    ran = np.asarray(sizes)[None, :] >= np.asarray(sparsities)[:, None]
    success = np.zeros((len(sparsities), trials, len(sizes), neurons), dtype=bool)
    t0, solves, stalled, non_monotone = time.perf_counter(), 0, 0, 0
    for i, s in enumerate(sparsities):
        cols = np.flatnonzero(ran[i])
        for trial in range(trials if cols.size else 0):
            layer = trial_layer(seed, s, trial, sizes[-1], n_inputs, relu=relu, neurons=neurons, intercept=intercept)
            hit, results = sweep_trial(layer, [sizes[j] for j in cols], relu=relu, intercept=intercept,
                                       max_iter=max_iter)
            success[i, trial, cols] = hit
            solves += len(results)
            stalled += sum(res.status == "max_iter" for res in results)
            non_monotone += int(np.any(hit[:-1] & ~hit[1:], axis=0).sum())
    return PhaseTransition(relu, n_inputs, sparsities, sizes, seed, intercept, success, ran,
                           time.perf_counter() - t0, solves, stalled / max(solves, 1), non_monotone)


def cross_check(pt: PhaseTransition, cells, *, solver="clarabel"):
    """Re-solve the given ``(i, trial, j)`` cells with the cvxpy reference; (sweep says, reference says) per cell.

    Tells a failure of the convex program from a failure of the ADMM to
    converge within max_iter (needs cvxpy, the ``verify`` extra).
    """
    from layertrim.solvers import reference

    out = []
    for i, trial, j in cells:
        s, P = pt.sparsities[i], pt.sizes[j]
        layer = trial_layer(pt.seed, s, trial, pt.sizes[-1], pt.n_inputs, relu=pt.relu,
                            neurons=pt.success.shape[3], intercept=pt.intercept)
        W, b, _ = reference.nettrim(layer.X[:P], layer.Y[:P], EPS, relu=pt.relu, intercept=pt.intercept,
                                    eps_mode="neuron", solver=solver)
        out.append((bool(pt.success[i, trial, j].all()), bool(recovered(W, b, layer.W, layer.b).all())))
    return out


def thresholds(pt: PhaseTransition):
    """Per ``s``, the ``P`` at which the recovery rate reaches 1/2 (and stays there); NaN if not within the grid.

    Rule: ``k`` is the first grid point from which every rate is >= 1/2;
    the threshold interpolates the rate linearly between ``P_{k-1}`` (below
    1/2) and ``P_k``; if ``k`` is the first point run, ``P_k`` itself (an
    upper bound). NaN (censored: the transition lies beyond ``P = N``) when
    the rate at the largest ``P`` is below 1/2.
    """
    sizes = np.asarray(pt.sizes, dtype=np.float64)
    out = np.full(len(pt.sparsities), np.nan)
    for i, row in enumerate(pt.rates):
        run = np.flatnonzero(~np.isnan(row))
        below = run[row[run] < 0.5]
        if run.size == 0 or (below.size and below[-1] == run[-1]):
            continue
        if below.size == 0:
            out[i] = sizes[run[0]]
            continue
        a, b = below[-1], below[-1] + 1  # the run cells (P >= s) are contiguous
        out[i] = sizes[a] + (0.5 - row[a]) / (row[b] - row[a]) * (sizes[b] - sizes[a])
    return out


#: the sample-size models compared by :func:`fit_constant`: ``P* = C f(s, N)`` (at a fixed N,
#: ``s log N`` is proportional to ``s``: the alternative is "linear in s, no log(N/s) factor")
MODELS = {"s log(N/s)": log_scale, "s": lambda s, n: np.asarray(s, np.float64)}


def fit_constant(pt: PhaseTransition, model="s log(N/s)") -> dict:
    """Fit ``P*(s) = C f(s, N)`` to the thresholds of :func:`thresholds` (censored ``s`` left out).

    ``C`` minimizes the relative misfit ``sum_s ((P*(s) - C f(s)) / P*(s))^2``
    (every ``s`` weighs the same), i.e. ``C = sum(1/r) / sum(1/r^2)`` with
    ``r = P*/f``; ``spread`` is the relative RMS misfit. ``envelope`` is the
    smallest ``C`` such that every grid cell with ``P > C s log(N/s)`` has
    rate >= 1/2 (for a censored ``s`` this needs ``C >= N / (s log(N/s))``,
    so the envelope is then a lower bound).
    """
    f = MODELS[check_choice(model, "model", tuple(MODELS))](np.asarray(pt.sparsities), pt.n_inputs)
    p_star = thresholds(pt)
    ok = ~np.isnan(p_star)
    ratio = p_star[ok] / f[ok]
    C = float(np.sum(1 / ratio) / np.sum(1 / ratio**2)) if ok.any() else float("nan")
    spread = float(np.sqrt(np.mean((1 - C / ratio) ** 2))) if ok.any() else float("nan")
    censored = [s for s, known in zip(pt.sparsities, ok) if not known]
    return dict(model=model, C=C, spread=spread, per_s=p_star / f, censored=censored, envelope=_envelope(pt))


def _envelope(pt: PhaseTransition) -> float:
    """``max_s P_last(s) / (s log(N/s))``, ``P_last`` the largest grid ``P`` with rate < 1/2 (0 if none)."""
    L = log_scale(pt.sparsities, pt.n_inputs)
    worst = 0.0
    for row, l in zip(pt.rates, L):
        failing = [P for P, r in zip(pt.sizes, row) if not np.isnan(r) and r < 0.5]
        worst = max(worst, (failing[-1] if failing else 0) / l)
    return worst
