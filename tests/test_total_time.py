"""Total pruning time: the retrain-until-recovered loop, the time bookkeeping, masks held
during retraining, the depth networks, and argument checks (tiny models, synthetic data)."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seeding import torch_seed  # noqa: E402

from layertrim.bindings.torch import prune  # noqa: E402
from layertrim.bindings.torch.examples.threshold_depth import deep_mlp, depth_curve  # noqa: E402
from layertrim.bindings.torch.examples.total_time import (  # noqa: E402
    Evaluation,
    epoch_batches,
    first_recovery,
    retrain_until_recovered,
    total_time,
)
from layertrim.bindings.torch.training import accuracy  # noqa: E402
from layertrim.solvers.base.errors import LayerTrimError, ParameterError  # noqa: E402

N_FEATURES, N_CLASSES = 16, 3


def _data(rng, n):
    """Gaussian inputs labelled by a random linear teacher (float32 / int64 tensors)."""
    X = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    teacher = np.random.default_rng(0).standard_normal((N_FEATURES, N_CLASSES))
    return torch.from_numpy(X), torch.from_numpy((X @ teacher).argmax(1))


@pytest.fixture
def problem(rng, seed):
    """A 16-32-3 ReLU MLP and its data: (model, X_train, y_train, X_test, y_test)."""
    with torch_seed(seed):
        model = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, N_CLASSES))
    X, y = _data(rng, 256)
    Xt, yt = _data(rng, 128)
    return model, X, y, Xt, yt


def _pruned(model, X, sparsity=0.8):
    prune(model, [X], method="magnitude", sparsity=sparsity, refit=False, progress=False)
    return model


def _score(Xt, yt):
    """exp(-cross-entropy) on the test set: continuous, strictly below 1, so a target of 1 is never met."""
    def score(model):
        with torch.no_grad():
            return math.exp(-float(torch.nn.functional.cross_entropy(model(Xt).double(), yt)))
    return score


def test_first_recovery_of_a_recorded_history():
    history = [Evaluation(0, 0.0, 0.5), Evaluation(10, 1.0, 0.8), Evaluation(20, 2.0, 0.7), Evaluation(30, 3.0, 0.9)]
    assert first_recovery(history, 0.75) is history[1]
    assert first_recovery(history, 0.85) is history[3]
    assert first_recovery(history, 0.5) is history[0]
    assert first_recovery(history, 0.95) is None


def test_loop_stops_at_the_first_evaluation_within_the_target(problem):
    model, X, y, Xt, yt = problem
    _pruned(model, X)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    score = _score(Xt, yt)
    options = dict(max_epochs=2, eval_every=3, lr=1e-2, batch_size=32)
    full = retrain_until_recovered(model, X, y, score, target=1.0, **options)
    assert full.recovered is None and full.seconds is None
    assert [e.step for e in full.history] == [0, 3, 6, 8, 11, 14, 16]  # chunks of 3 over 8 batches per epoch
    target = max(e.accuracy for e in full.history[1:])
    expected = full.history.index(first_recovery(full.history, target))
    model.load_state_dict(state)
    stopped = retrain_until_recovered(model, X, y, score, target=target, **options)
    # the same training, so the same scores up to the first one at or above the target, then stop
    assert [(e.step, e.accuracy) for e in stopped.history] == [(e.step, e.accuracy) for e in full.history[:expected + 1]]
    assert stopped.recovered is stopped.history[-1]


def test_already_recovered_trains_nothing(problem):
    model, X, y, Xt, yt = problem
    before = [p.clone() for p in model.parameters()]
    out = retrain_until_recovered(model, X, y, lambda m: accuracy(m, Xt, yt), target=0.0)
    assert len(out.history) == 1 and out.seconds == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_times_add_up(problem):
    model, X, y, Xt, yt = problem
    dense = accuracy(model, Xt, yt)
    row = total_time(model, "magnitude", 0.8, calibration=[X], X_train=X, y_train=y,
                     evaluate=lambda m: accuracy(m, Xt, yt), dense_accuracy=dense, tolerance=1.0, repeats=3,
                     max_epochs=1, eval_every=4, batch_size=32)
    # tolerance 1 makes step 0 a recovery: zero retraining seconds, total = pruning
    assert row.retraining.seconds == 0.0 and row.total_seconds == row.prune_seconds
    assert 0.0 <= row.solve_seconds <= row.prune_seconds
    row = total_time(model, "magnitude", 0.8, calibration=[X], X_train=X, y_train=y, evaluate=_score(Xt, yt),
                     dense_accuracy=1.0, tolerance=0.0, max_epochs=1, eval_every=4, batch_size=32)
    seconds = [e.seconds for e in row.retraining.history]
    assert row.total_seconds is None and seconds == sorted(seconds)
    assert row.final_accuracy == row.retraining.history[-1].accuracy
    assert row.achieved == pytest.approx(0.8, abs=0.01)  # 32 * 19 + 3 * 32 weights: whole-weight rounding


def test_fine_tuning_keeps_the_masks(problem):
    model, X, y, Xt, yt = problem
    _pruned(model, X)
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    masks = [m.weight_mask.clone() for m in layers]
    before = [m.weight.detach().clone() for m in layers]
    retrain_until_recovered(model, X, y, _score(Xt, yt), target=1.0, max_epochs=1, eval_every=4, lr=1e-2)
    for layer, mask, w0 in zip(layers, masks, before):
        assert torch.equal(layer.weight_mask, mask)
        assert torch.count_nonzero(layer.weight[mask == 0]) == 0  # exact zeros: the mask multiplies
        assert not torch.equal(layer.weight[mask == 1], w0[mask == 1])  # and the kept weights did train


def test_epoch_batches_are_a_reproducible_permutation(problem):
    _, X, y, _, _ = problem
    first = epoch_batches(X, y, epoch=1, batch_size=50, seed=3)
    again = epoch_batches(X, y, epoch=1, batch_size=50, seed=3)
    assert [len(b[1]) for b in first] == [50] * 5 + [6]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    rows = torch.cat([b[0] for b in first])
    order = torch.argsort(rows[:, 0])
    assert torch.equal(rows[order], X[torch.argsort(X[:, 0])])  # every sample exactly once
    other = epoch_batches(X, y, epoch=2, batch_size=50, seed=3)
    assert not torch.equal(other[0][0], first[0][0])


@pytest.mark.parametrize("depth", [2, 5, 8])
def test_depth_networks_have_the_requested_depth(depth, seed):
    with torch_seed(seed):
        model = deep_mlp(depth, width=12)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth + 1
    assert [lin.out_features for lin in linears] == [12] * depth + [10]
    assert linears[0].in_features == 784
    assert sum(isinstance(m, torch.nn.ReLU) for m in model) == depth


@pytest.mark.parametrize("kwargs", [dict(target=1.5), dict(target=-0.1), dict(max_epochs=0), dict(eval_every=0),
                                    dict(lr=0.0), dict(batch_size=0), dict(eval_every=2.5)])
def test_bad_retraining_arguments(problem, kwargs):
    model, X, y, Xt, yt = problem
    with pytest.raises(ParameterError):
        retrain_until_recovered(model, X, y, lambda m: 0.5, **{"target": 0.9, **kwargs})


def test_bad_evaluate_and_total_time_arguments(problem):
    model, X, y, Xt, yt = problem
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ParameterError, match="evaluate"):
        retrain_until_recovered(model, X, y, 0.5, target=0.9)
    common = dict(calibration=[X], X_train=X, y_train=y, evaluate=lambda m: 0.5)
    for method, s, dense in [("bogus", 0.8, 0.9), ("magnitude", 1.0, 0.9), ("magnitude", 0.8, 1.2)]:
        with pytest.raises(LayerTrimError):
            total_time(model, method, s, dense_accuracy=dense, **common)
    with pytest.raises(ParameterError, match="repeats"):
        total_time(model, "magnitude", 0.8, dense_accuracy=0.9, repeats=0, **common)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs", [dict(sparsity=1.0), dict(methods=["bogus"]), dict(depths=[0]),
                                    dict(n_calibration=0)])
def test_bad_depth_arguments_fail_before_training(kwargs):
    with pytest.raises(ParameterError):
        depth_curve(**{"depths": [2], **kwargs})
    with pytest.raises(ParameterError):
        deep_mlp(0)
