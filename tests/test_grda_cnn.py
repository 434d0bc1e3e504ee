"""The CNN directional-pruning experiment: gRDA at c = 0 is SGD on the CNN step by
step (also under a decaying learning rate, whose threshold is the closed-form sum), zero counting and per-tensor magnitude masks against brute force, masked
retraining keeps its zeros, and the three-way comparison's bookkeeping."""
import pytest

torch = pytest.importorskip("torch")

from layertrim.bindings.torch import GRDA, SparsityLogger, limit_threads  # noqa: E402
from layertrim.bindings.torch.examples.grda_cnn import (  # noqa: E402
    apply_masks,
    compare_cnn,
    lr_multipliers,
    magnitude_masks,
    set_lr,
    validation_grid,
    train_epoch,
    vgg_cnn,
    zero_fractions,
)
from layertrim.solvers import ParameterError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

SIZE = 12  # 12 -> 6 -> 3 px: two stages of a tiny CNN


def tiny_cnn(seed, dtype=torch.float64):
    with torch_seed(seed):
        return vgg_cnn((3, 5), image_size=SIZE).to(dtype)


def tiny_data(seed, n=48, dtype=torch.float64):
    gen = torch_generator(seed)
    X = torch.rand(n, 1, SIZE, SIZE, generator=gen, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=gen)
    return X, y


def test_grda_at_c0_is_sgd_step_by_step(seed):
    grda_model, sgd_model = tiny_cnn(seed), tiny_cnn(seed)
    grda = GRDA(grda_model.parameters(), lr=0.05, c=0.0, mu=0.7)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.05, momentum=0.0)
    X, y = tiny_data(seed + 1)
    order = torch.randperm(len(y), generator=torch_generator(seed + 2))
    with limit_threads(1):
        for i in range(0, len(y), 8):  # six steps, compared after each
            idx = order[i : i + 8]
            train_epoch(grda_model, grda, X, y, idx, 8)
            train_epoch(sgd_model, sgd, X, y, idx, 8)
            for pg, ps in zip(grda_model.parameters(), sgd_model.parameters()):
                # identical float64 operations up to the order of a few additions of O(1) numbers
                torch.testing.assert_close(pg, ps, rtol=0, atol=1e-12)
    assert all(grda.state[p]["step"] == 6 for p in grda_model.parameters())


def test_lr_multipliers_closed_form():
    # E = 6: e0 = round(2 * 6 / 3) = 4 epochs at the full rate, then the decay to 0.1
    assert lr_multipliers(6, "constant") == [1.0] * 6
    assert lr_multipliers(6, "step") == [1.0] * 4 + [0.1, 0.1]
    # cosine: 0.1 + 0.9 (1 + cos(pi k / 2)) / 2 for k = 1, 2 -> 0.55, 0.1
    assert lr_multipliers(6, "cosine") == pytest.approx([1.0] * 4 + [0.55, 0.1], rel=1e-12, abs=1e-15)
    with pytest.raises(ParameterError, match="schedule"):
        lr_multipliers(6, "linear")


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_scheduled_grda_is_scheduled_sgd_and_sums_the_threshold(seed, schedule):
    lr, mu, c, batch = 0.05, 0.7, 0.01, 8
    models = {name: tiny_cnn(seed) for name in ("grda0", "sgd", "grda")}
    opts = {"grda0": GRDA(models["grda0"].parameters(), lr=lr, c=0.0, mu=mu),
            "sgd": torch.optim.SGD(models["sgd"].parameters(), lr=lr, momentum=0.0),
            "grda": GRDA(models["grda"].parameters(), lr=lr, c=c, mu=mu)}
    X, y = tiny_data(seed + 1, n=24)
    step_lrs = []
    with limit_threads(1):
        for epoch, m in enumerate(lr_multipliers(6, schedule)):  # 6 epochs of 3 steps
            order = torch.randperm(len(y), generator=torch_generator(seed + 2 + epoch))
            for name in models:
                set_lr(opts[name], lr * m)
            for i in range(0, len(y), batch):
                for name in models:
                    train_epoch(models[name], opts[name], X, y, order[i : i + batch], batch)
                for pg, ps in zip(models["grda0"].parameters(), models["sgd"].parameters()):
                    # the same float64 operations up to the order of a few additions of O(1) numbers
                    torch.testing.assert_close(pg, ps, rtol=0, atol=1e-12)
                step_lrs.append(lr * m)
    # T_n = sum_k c lr_k^(mu + 1/2) (k^mu - (k-1)^mu): the step count runs on through the decay
    expected = sum(c * r ** (mu + 0.5) * (k**mu - (k - 1) ** mu) for k, r in enumerate(step_lrs, start=1))
    for p in models["grda"].parameters():
        assert opts["grda"].state[p]["step"] == 18
        assert opts["grda"].state[p]["threshold"] == pytest.approx(expected, rel=1e-12)


def test_zero_fractions_and_masks_match_brute_force(seed):
    model = tiny_cnn(seed)
    gen = torch_generator(seed + 1)
    fractions = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_((torch.rand(p.shape, generator=gen, dtype=p.dtype) > 0.3).to(p.dtype))
            fractions[name] = float(torch.rand((), generator=gen))
    counted = zero_fractions(model)
    for name, p in model.named_parameters():
        zeros = sum(1 for v in p.detach().flatten().tolist() if v == 0.0)
        assert counted[name] == zeros / p.numel()
    total = sum(p.numel() for p in model.parameters())
    weighted = sum(counted[n] * p.numel() for n, p in model.named_parameters()) / total
    assert SparsityLogger(model).current() == pytest.approx(weighted, rel=1e-12)
    masks = magnitude_masks(model, fractions)
    for name, p in model.named_parameters():
        mask = masks[name]
        assert int(mask.sum()) == round((1 - fractions[name]) * p.numel())
        kept = p.detach().abs()[mask == 1]
        dropped = p.detach().abs()[mask == 0]
        if len(kept) and len(dropped):  # every kept magnitude is at least every dropped one
            assert kept.min() >= dropped.max()


def test_masked_retraining_keeps_zeros_and_trains_the_rest(seed):
    model = tiny_cnn(seed)
    masks = magnitude_masks(model, {n: 0.6 for n, _ in model.named_parameters()})
    apply_masks(model, masks)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X, y = tiny_data(seed + 1)
    with limit_threads(1):
        for epoch in range(3):
            train_epoch(model, opt, X, y, torch.randperm(len(y), generator=torch_generator(seed + 2 + epoch)), 8,
                        masks)
    moved, kept = 0, 0
    for (name, p), p0 in zip(model.named_parameters(), before):
        pruned = masks[name] == 0
        assert torch.all(p.detach()[pruned] == 0)
        moved += int((p.detach()[~pruned] != p0[~pruned]).sum())
        kept += int((~pruned).sum())
    assert 0 < moved <= kept  # the kept weights train (those of units dead on this tiny data may not)


def _image_data(seed):
    gen = torch_generator(seed)
    X = torch.rand(96, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (96,), generator=gen)
    return X[:64], y[:64], X[64:], y[64:]


def test_comparison_bookkeeping(seed):
    with limit_threads(1):
        run = compare_cnn(epochs=3, prune_epoch=2, lr=0.1, c=0.3, mu=0.7, widths=(2, 4), batch_size=16,
                          seed=seed, data=_image_data(seed + 1))
    h = run.history
    assert all(len(h[k]) == 3 for k in h)
    assert h["magnitude_acc"][:2] == h["sgd_acc"][:2]  # the same SGD run up to the pruning epoch
    assert h["sgd_sparsity"][-1] == 0.0 and h["grda_sparsity"][-1] > 0.2
    grda, mag = zero_fractions(run.models["grda"]), zero_fractions(run.models["magnitude"])
    for name, p in run.models["grda"].named_parameters():
        # the magnitude run holds gRDA's final per-tensor sparsity, up to rounding to whole entries
        # (and to entries that happen to be zero among the kept ones, none at this size)
        assert abs(mag[name] - grda[name]) <= 0.5 / p.numel() + 1e-12
    total = sum(p.numel() for p in run.models["grda"].parameters())
    assert abs(h["magnitude_sparsity"][-1] - h["grda_sparsity"][-1]) <= 0.5 * len(grda) / total + 1e-12


def test_validation_grid_rows(seed):
    X, y, Xv, yv = _image_data(seed)
    with limit_threads(1):
        rows = validation_grid((X, y), (Xv, yv), grda_grid=[(0.1, 0.0, 0.7), (0.1, 0.3, 0.7)], sgd_lrs=[0.1],
                               momentum=0.0, epochs=2, batch_size=16, widths=(2, 4), seed=seed)
    assert [r["optimizer"] for r in rows] == ["grda", "grda", "sgd"]
    # gRDA at c = 0 is SGD without momentum: no zeros, the same validation accuracy (float32 rounding of
    # the two update orders could at most flip the prediction of a single image near a tie)
    assert rows[0]["sparsity"] == rows[2]["sparsity"] == 0.0
    assert abs(rows[0]["val_acc"] - rows[2]["val_acc"]) <= 1 / len(yv)
    assert rows[1]["sparsity"] > 0.2


@pytest.mark.parametrize("kwargs", [{"epochs": 1}, {"epochs": 4, "prune_epoch": 4}, {"sgd_lr": 0.0},
                                    {"momentum": 1.0}, {"c": -1.0}, {"schedule": "linear"}])
def test_bad_settings_are_rejected_before_training(kwargs):
    with pytest.raises(ParameterError):
        compare_cnn(data=_image_data(0), **kwargs)


def test_bad_widths_are_rejected():
    with pytest.raises(ParameterError, match="widths"):
        vgg_cnn(())
    with pytest.raises(ParameterError, match="stages"):
        vgg_cnn((2, 2, 2, 2, 2), image_size=16)
