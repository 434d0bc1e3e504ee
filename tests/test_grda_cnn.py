"""The CNN directional-pruning experiment: gRDA at c = 0 is SGD on the CNN step by
step (also under a decaying learning rate, whose threshold is the closed-form sum),
zero counting and per-tensor magnitude masks against brute force, masked retraining
keeps its zeros, SGD's (and the retraining's) learning-rate schedule against its
closed form and a hand-rolled run, the stratified validation split and the
step-matched epochs against brute force, the selection rule on a hand-made table,
and the three-way comparison's bookkeeping."""
import pytest

torch = pytest.importorskip("torch")

from layertrim.bindings.torch import GRDA, SparsityLogger, limit_threads  # noqa: E402
from layertrim.bindings.torch.examples import grda_cnn  # noqa: E402
from layertrim.bindings.torch.examples.grda_cnn import (  # noqa: E402
    apply_masks,
    compare_cnn,
    lr_multipliers,
    magnitude_masks,
    matching_epochs,
    seeded_cnn,
    select_settings,
    set_lr,
    stratified_split,
    train_epoch,
    validation_grid,
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
        rows = validation_grid((X, y), (Xv, yv), grda_grid=[(0.1, 0.0, 0.7), (0.1, 0.3, 0.7)], sgd_grid=[0.1],
                               momentum=0.0, epochs=2, batch_size=16, widths=(2, 4), seed=seed)
    assert [r["optimizer"] for r in rows] == ["grda", "grda", "sgd"]
    # gRDA at c = 0 is SGD without momentum: no zeros, the same validation accuracy (float32 rounding of
    # the two update orders could at most flip the prediction of a single image near a tie)
    assert rows[0]["sparsity"] == rows[2]["sparsity"] == 0.0
    assert abs(rows[0]["val_acc"] - rows[2]["val_acc"]) <= 1 / len(yv)
    assert rows[1]["sparsity"] > 0.2


@pytest.mark.parametrize("kwargs", [{"epochs": 1}, {"epochs": 4, "prune_epoch": 4}, {"sgd_lr": 0.0},
                                    {"momentum": 1.0}, {"c": -1.0}, {"schedule": "linear"},
                                    {"sgd_schedule": "linear"}])
def test_bad_settings_are_rejected_before_training(kwargs):
    with pytest.raises(ParameterError):
        compare_cnn(data=_image_data(0), **kwargs)


def test_bad_widths_are_rejected():
    with pytest.raises(ParameterError, match="widths"):
        vgg_cnn(())
    with pytest.raises(ParameterError, match="stages"):
        vgg_cnn((2, 2, 2, 2, 2), image_size=16)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_sgd_and_retraining_follow_the_sgd_schedule(seed, monkeypatch, schedule):
    calls = []  # (optimizer kind, lr) of every set_lr call, in order

    def recording_set_lr(opt, lr):
        calls.append(("grda" if isinstance(opt, GRDA) else "sgd", lr))
        set_lr(opt, lr)

    monkeypatch.setattr(grda_cnn, "set_lr", recording_set_lr)
    sgd_lr, E = 0.05, 6
    with limit_threads(1):
        compare_cnn(epochs=E, prune_epoch=4, lr=0.1, c=0.3, mu=0.7, sgd_lr=sgd_lr, widths=(2, 4), batch_size=32,
                    seed=seed, data=_image_data(seed + 1), schedule="constant", sgd_schedule=schedule)
    # closed form for E = 6 (e0 = 4): constant 1; step 0.1 after e0; cosine 0.1 + 0.9 (1 + cos(pi k / 2)) / 2
    tail = {"constant": [1.0, 1.0], "step": [0.1, 0.1], "cosine": [0.55, 0.1]}[schedule]
    expected = [sgd_lr * m for m in [1.0] * 4 + tail]
    assert [lr for kind, lr in calls[: 2 * E : 2]] == pytest.approx(expected, rel=1e-12)
    assert [kind for kind, _ in calls[: 2 * E]] == ["sgd", "grda"] * E
    assert [lr for _, lr in calls[1 : 2 * E : 2]] == [0.1] * E  # gRDA keeps its own (constant) schedule
    # the retraining: the two epochs after pruning at the SGD schedule's rates for epochs 5 and 6
    assert [kind for kind, _ in calls[2 * E :]] == ["sgd", "sgd"]
    assert [lr for _, lr in calls[2 * E :]] == pytest.approx(expected[4:], rel=1e-12)


def test_scheduled_sgd_run_is_a_hand_rolled_one(seed):
    sgd_lr, batch, data = 0.05, 32, _image_data(seed + 1)
    with limit_threads(1):
        run = compare_cnn(epochs=3, prune_epoch=2, lr=0.1, c=0.3, mu=0.7, sgd_lr=sgd_lr, widths=(2, 4),
                          batch_size=batch, seed=seed, data=data, sgd_schedule="step")
        model = seeded_cnn(seed, (2, 4))  # the same initialization and batches, by hand
        opt = torch.optim.SGD(model.parameters(), lr=sgd_lr, momentum=0.9)
        gen = torch.Generator().manual_seed(seed)
        orders = [torch.randperm(len(data[1]), generator=gen) for _ in range(3)]
        for order, lr in zip(orders, [sgd_lr, sgd_lr, 0.1 * sgd_lr]):  # e0 = round(2 * 3 / 3) = 2
            for group in opt.param_groups:
                group["lr"] = lr
            train_epoch(model, opt, data[0], data[1], order, batch)
    for p_run, p_hand in zip(run.models["sgd"].parameters(), model.parameters()):
        # the same float32 operations in the same order on one thread: equal up to float32 rounding
        torch.testing.assert_close(p_run, p_hand, rtol=0, atol=1e-6)
    assert run.settings["sgd_schedule"] == "step"


def test_stratified_split_against_counting(rng):
    y = torch.from_numpy(rng.integers(0, 7, size=211))
    train_idx, val_idx = stratified_split(y, 50, seed=int(rng.integers(1000)))
    assert len(val_idx) == 50 and len(train_idx) == 161
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(211))  # a partition
    for k in range(7):
        n_k = int((y == k).sum())
        picked = sum(1 for i in val_idx.tolist() if int(y[i]) == k)
        assert abs(picked - n_k * 50 / 211) <= 1  # each class in its share, up to one image
    assert torch.equal(stratified_split(y, 50, seed=3)[1], stratified_split(y, 50, seed=3)[1])  # deterministic
    with pytest.raises(ParameterError, match="n_val"):
        stratified_split(y, 211)


@pytest.mark.parametrize("epochs, n_full, n_part, batch", [(100, 4000, 3000, 64), (100, 4000, 3500, 64),
                                                           (7, 130, 64, 16), (3, 96, 96, 32), (1, 10, 9, 4)])
def test_matching_epochs_is_the_fewest_epochs_with_the_steps(epochs, n_full, n_part, batch):
    def steps(n_epochs, n):  # batches counted one by one, as train_epoch cuts them
        return n_epochs * len(range(0, n, batch))

    e = matching_epochs(epochs, n_full, n_part, batch)
    assert steps(e, n_part) >= steps(epochs, n_full) > steps(e - 1, n_part)


def _row(optimizer, val_acc, sparsity, lr=0.1):
    return {"optimizer": optimizer, "lr": lr, "c": 0.0, "mu": 0.0, "schedule": "step", "val_acc": val_acc,
            "sparsity": sparsity}


def test_selection_rule_on_a_hand_made_table():
    rows = [_row("grda", 0.985, 0.85),  # the most accurate gRDA, but below 90% zeros: not eligible
            _row("grda", 0.970, 0.93, lr=1), _row("grda", 0.975, 0.90, lr=2),  # exactly 90% counts
            _row("grda", 0.975, 0.95, lr=3),  # ties the best eligible one: the first in grid order wins
            _row("sgd", 0.980, 0.0, lr=4), _row("sgd", 0.982, 0.0, lr=5), _row("sgd", 0.982, 0.0, lr=6)]
    sgd, grda = select_settings(rows)
    assert (sgd["lr"], grda["lr"]) == (5, 2)
    _, grda = select_settings(rows, min_sparsity=0.94)
    assert grda["lr"] == 3
    _, grda = select_settings(rows, min_sparsity=0.99)  # none eligible: the sparsest
    assert grda["lr"] == 3
    with pytest.raises(ParameterError, match="sgd"):
        select_settings([r for r in rows if r["optimizer"] == "grda"])


def test_validation_grid_schedules_match(seed):
    X, y, Xv, yv = _image_data(seed)
    with limit_threads(1):
        rows = validation_grid((X, y), (Xv, yv), grda_grid=[(0.1, 0.0, 0.7, "step")],
                               sgd_grid=[(0.1, "step"), (0.1, "constant")], momentum=0.0, epochs=3,
                               batch_size=16, widths=(2, 4), seed=seed)
    assert [(r["optimizer"], r["schedule"]) for r in rows] == [("grda", "step"), ("sgd", "step"),
                                                                ("sgd", "constant")]
    # gRDA at c = 0 under a step schedule is SGD without momentum under the same one (up to one image
    # flipped near a tie by float32 rounding of the two update orders)
    assert abs(rows[0]["val_acc"] - rows[1]["val_acc"]) <= 1 / len(yv)
