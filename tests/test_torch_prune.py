"""prune(): every method on a real MLP and CNN, cascade vs parallel, torch.nn.utils.prune
interop, fine-tuning with masks held, atomicity on failure, report, bad inputs."""
import importlib
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from torch import nn  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402
from torch_models import accuracy, digits, loader, trained  # noqa: E402

from layertrim.bindings.torch import fine_tune, make_permanent, prune, sparsity  # noqa: E402
from layertrim.solvers import EmptyDataError, NonFiniteError, ParameterError  # noqa: E402

prune_module = importlib.import_module("layertrim.bindings.torch.prune")
layer_solve = importlib.import_module("layertrim.bindings.torch.layer_solve")
methods = importlib.import_module("layertrim.bindings.methods")

METHODS = ["magnitude", "iht", "lasso", "group_lasso", "nettrim", "feta"]


@pytest.fixture(scope="module")
def data():
    X, y, Xt, yt = digits()
    return loader(X[:500], y[:500]), (Xt, yt)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_prunes_the_mlp(method, data):
    calib, (Xt, yt) = data
    model = trained("mlp")
    dense_acc = accuracy(model, Xt, yt)
    # Net-Trim is driven by its error budget here (one ADMM solve per layer; its
    # sparsity mode bisects on eps and is exercised in the core's own tests)
    target = dict(eps=0.1) if method == "nettrim" else dict(sparsity=0.5)
    report = prune(model, calib, method=method, progress=False, max_rows=300, **target)
    assert [r.name for r in report.layers] == ["1", "3", "5"]
    for r in report.layers:
        # every solver returns at least the target number of zeros (refit can only add zeros
        # on inputs that are constant in the calibration data)
        if method == "nettrim":
            assert r.sparsity > 0.1 and r.info["eps"] >= 0.1 - 1e-12, r
        else:
            assert r.sparsity >= 0.5 - 1e-9, r
        assert r.status in ("optimal", "max_iter")
        assert torch_prune.is_pruned(model)
    counts = sparsity(model)
    assert counts.zeros == report.zeros and counts.total == report.total == 64 * 48 + 48 * 32 + 32 * 10
    # half the weights of a well-conditioned MLP go with little loss; the threshold is
    # loose (8 points) so that it tests "did not break the network", not the method's quality
    assert accuracy(model, Xt, yt) > dense_acc - 0.08


def test_reported_error_is_the_true_layer_error(data):
    calib, _ = data
    model = trained("mlp")
    dense = trained("mlp")
    report = prune(model, calib, method="lasso", sparsity=0.7, progress=False)
    X = torch.cat([x for x, _ in calib]).flatten(1)
    with torch.no_grad():
        Y = dense[1](X)
        err = (model[1](X) - Y).norm() / Y.norm()
        # second layer in cascade: inputs from the pruned first layer, targets from the dense net
        Y2 = dense[3](torch.relu(Y))
        err2 = (model[3](torch.relu(model[1](X))) - Y2).norm() / Y2.norm()
    # float32 forward passes vs float64 statistics: agreement to ~1e-5 relative
    assert report["1"].rel_error == pytest.approx(err.item(), rel=1e-4)
    assert report["3"].rel_error == pytest.approx(err2.item(), rel=1e-4)


def test_cascade_and_parallel(data):
    calib, (Xt, yt) = data
    X = torch.cat([x for x, _ in calib])
    dense = trained("mlp")
    models, reports = {}, {}
    for scheme in ("cascade", "parallel"):
        models[scheme] = trained("mlp")
        reports[scheme] = prune(models[scheme], calib, method="magnitude", sparsity=0.8, scheme=scheme, progress=False)
    # the first layer sees the same inputs in both schemes
    torch.testing.assert_close(models["cascade"][1].weight, models["parallel"][1].weight)
    assert not torch.equal(models["cascade"][3].weight, models["parallel"][3].weight)
    with torch.no_grad():
        ref = dense(X)
        out_err = {s: ((m(X) - ref).norm() / ref.norm()).item() for s, m in models.items()}
    # cascade refits later layers on the pruned inputs, so the network output stays closer
    assert out_err["cascade"] < out_err["parallel"], out_err
    # an executor gives the same result as the serial parallel scheme
    threaded = trained("mlp")
    with ThreadPoolExecutor(2) as ex:
        prune(threaded, calib, method="magnitude", sparsity=0.8, scheme="parallel", executor=ex, progress=False)
    for a, b in zip(threaded.parameters(), models["parallel"].parameters()):
        torch.testing.assert_close(a, b)


def test_per_layer_methods_and_targets(data):
    calib, _ = data
    model = trained("mlp")
    report = prune(
        model, calib, progress=False,
        method={"1": {"method": "nettrim", "eps": 0.05}, "3": "iht", "5": {"method": "magnitude", "refit": False}},
        sparsity={"3": 0.6, "5": 0.3},
    )
    assert [r.method for r in report.layers] == ["nettrim", "iht", "magnitude"]
    assert report["3"].sparsity >= 0.6 and report["5"].sparsity >= 0.3
    # Net-Trim's cascade rule: eps never below gamma * (error of the dense weights on the pruned
    # inputs); for the first layer those inputs are the data, so the dense error is 0 and eps stays
    assert report["1"].info["eps_requested"] == 0.05
    # magnitude without refit keeps the surviving dense values
    dense = trained("mlp")
    kept = model[5].weight != 0
    torch.testing.assert_close(model[5].weight[kept], dense[5].weight[kept])


def test_cnn_with_batchnorm_residual_and_depthwise(data):
    X, y, Xt, yt = digits()
    calib = loader(X[:300], y[:300])
    for method, target in (("magnitude", dict(sparsity=0.5)), ("lasso", dict(sparsity=0.5)),
                           ("nettrim", dict(eps=0.1, max_iter=1000))):  # capped ADMM: speed
        model = trained("cnn")
        dense_acc = accuracy(model, Xt, yt)
        bn_before = _state(model[1])
        report = prune(model, calib, method=method, progress=False, max_rows=1000, **target)
        assert [r.name for r in report.layers] == ["0", "3.conv", "4", "6", "10"]
        floor = 0.5 if "sparsity" in target else 0.0
        assert all(r.sparsity >= floor for r in report.layers), str(report)
        _assert_same_state(model[1], bn_before)  # BatchNorm untouched
        assert model[4].weight_mask.shape == (8, 1, 3, 3)
        # a loose floor: the pruned CNN still classifies far above chance (10%)
        assert accuracy(model, Xt, yt) > dense_acc - 0.25, (method, str(report))


def test_masks_survive_fine_tuning_and_make_permanent(data):
    calib, (Xt, yt) = data
    model = trained("mlp")
    prune(model, calib, method="iht", sparsity=0.9, progress=False)
    masks = {n: model[i].weight_mask.clone() for n, i in (("1", 1), ("3", 3), ("5", 5))}
    acc_pruned = accuracy(model, Xt, yt)
    X, y, _, _ = digits()
    fine_tune(model, loader(X, y, 50), epochs=2, lr=3e-3)
    for i in (1, 3, 5):
        m = model[i]
        assert torch.all(m.weight[m.weight_mask == 0] == 0)
        torch.testing.assert_close(m.weight_mask, masks[str(i)])
    assert accuracy(model, Xt, yt) >= acc_pruned - 0.01  # retraining does not hurt
    zeros = sparsity(model).zeros
    make_permanent(model)
    assert not torch_prune.is_pruned(model)
    assert all(not hasattr(model[i], "weight_orig") and isinstance(model[i].weight, nn.Parameter) for i in (1, 3, 5))
    assert sparsity(model).zeros == zeros
    # without the reparametrization, fine_tune re-zeroes the pruned entries after each step
    fine_tune(model, loader(X, y, 50), epochs=1, lr=3e-3)
    assert sparsity(model).zeros == zeros


def test_failure_leaves_the_model_exactly_as_before(data, monkeypatch):
    calib, _ = data
    model = trained("mlp")
    torch_prune.l1_unstructured(model[3], "weight", amount=0.2)  # an existing reparametrization
    before = _state(model)
    hooks = {i: dict(model[i]._forward_pre_hooks) for i in (1, 3, 5)}
    x = calib[0][0]
    with torch.no_grad():
        out_before = model(x)

    calls = {"n": 0}
    real_write = prune_module._write_layer

    def flaky_write(module, W, b):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        real_write(module, W, b)

    monkeypatch.setattr(prune_module, "_write_layer", flaky_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        prune(model, calib, method="magnitude", sparsity=0.5, progress=False)
    monkeypatch.undo()

    real_solve = methods.solve_group

    def interrupted(spec, *args, **kw):
        if spec.method == "lasso":
            raise KeyboardInterrupt
        return real_solve(spec, *args, **kw)

    monkeypatch.setattr(layer_solve, "solve_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prune(model, calib, method={"1": "magnitude", "3": "lasso"}, sparsity=0.5, progress=False)

    _assert_same_state(model, before)
    for i in (1, 3, 5):
        assert dict(model[i]._forward_pre_hooks) == hooks[i]
    assert not hasattr(model[1], "weight_orig") and isinstance(model[1].weight, nn.Parameter)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out_before, rtol=0, atol=0)


def test_report_table_and_json(data):
    calib, _ = data
    model = trained("mlp")
    report = prune(model, calib, method="magnitude", sparsity=0.75, progress=False)
    text = str(report)
    lines = text.splitlines()
    assert len({len(l) for l in lines[:5]}) == 1  # aligned columns
    for name in ("1", "3", "5", "total", "magnitude"):
        assert name in text
    d = json.loads(report.to_json())
    assert d == json.loads(json.dumps(report.to_dict()))
    assert d["sparsity"] == pytest.approx(report.sparsity) and len(d["layers"]) == 3
    assert d["layers"][0]["shape"] == [48, 64]


def test_bad_inputs_give_clear_errors(data):
    calib, _ = data
    model = trained("mlp")
    before = _state(model)
    with pytest.raises(EmptyDataError, match="empty"):
        prune(model, [], method="magnitude", sparsity=0.5, progress=False)
    with pytest.raises(ParameterError, match="no layer named"):
        prune(model, calib, method="magnitude", sparsity=0.5, layers=["fc9"], progress=False)
    with pytest.raises(ParameterError, match="ReLU"):
        prune(model, calib, method="magnitude", sparsity=0.5, layers=["2"], progress=False)
    with pytest.raises(ParameterError, match="method"):
        prune(model, calib, method="obs", sparsity=0.5, progress=False)
    with pytest.raises(ParameterError, match="exactly one"):
        prune(model, calib, method="lasso", sparsity=0.5, lam=0.1, progress=False)
    with pytest.raises(ParameterError, match="exactly one"):
        prune(model, calib, method="magnitude", eps=0.1, progress=False)
    with pytest.raises(ParameterError, match="not being pruned"):
        prune(model, calib, method="magnitude", sparsity={"1": 0.5, "9": 0.5}, layers=["1"], progress=False)
    with pytest.raises(ParameterError, match="sparsity"):
        prune(model, calib, method="magnitude", sparsity=1.5, progress=False)
    bad = [(x.clone(), y) for x, y in calib[:2]]
    bad[1][0][3, 0, 2, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        prune(model, bad, method="magnitude", sparsity=0.5, progress=False)
    _assert_same_state(model, before)
    assert not torch_prune.is_pruned(model)


def test_erk_split_meets_the_overall_target():
    from layertrim.bindings.torch import erk_sparsity

    model = trained("mlp")
    sizes = {"1": 64 * 48, "3": 48 * 32, "5": 32 * 10}
    for s in (0.5, 0.9, 0.98):
        split = erk_sparsity(model, s)
        zeros = sum(split[n] * sizes[n] for n in sizes)
        assert zeros == pytest.approx(s * sum(sizes.values()), rel=1e-12)
        assert split["1"] > split["3"] > split["5"] >= 0.0  # small layers stay denser
    # at 20% overall the small last layer would need density > 1: it stays dense
    assert erk_sparsity(model, 0.2)["5"] == 0.0
