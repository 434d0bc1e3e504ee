"""save_sparse / load_sparse round trips, file size vs sparsity, sparsity counts."""
import os

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402

from layertrim.bindings.torch import load_sparse, save_sparse, sparsity  # noqa: E402
from layertrim.solvers import ParameterError, ShapeError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402


def _model(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        return nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Conv1d(1, 4, 5), nn.Linear(96, 10, bias=False))


def _pruned(amount, seed):
    model = _model(seed)
    for i in (0, 2, 3):
        torch_prune.l1_unstructured(model[i], "weight", amount=amount)
    return model


def _effective(model):
    return {n: model[i].weight.detach().clone() for n, i in (("0", 0), ("2", 2), ("3", 3))}


@pytest.mark.parametrize("amount", [0.6, 0.97])  # both position encodings (bit mask, indices)
def test_round_trip_is_exact_into_plain_and_pruned_models(tmp_path, amount, seed):
    model = _pruned(amount, seed)
    path = tmp_path / "m.pt"
    save_sparse(model, path)
    blob = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert not any(k.endswith(("_orig", "_mask")) for k in blob["tensors"])
    state = load_sparse(path)
    for n, w in _effective(model).items():
        torch.testing.assert_close(state[f"{n}.weight"], w, rtol=0, atol=0)
    torch.testing.assert_close(state["0.bias"], model[0].bias, rtol=0, atol=0)

    plain = _model(seed + 1)
    with torch.no_grad():
        for p in plain.parameters():
            p.zero_()
    load_sparse(path, plain)
    plain.load_state_dict(state)  # strict loading into an unpruned model works
    target = _model(seed + 2)
    with torch_seed(seed + 3):  # random_unstructured draws its mask from torch's global generator
        for i in (0, 2, 3):
            torch_prune.random_unstructured(target[i], "weight", amount=0.1)
    load_sparse(path, target)
    x = torch.randn(3, 1, 200, generator=torch_generator(seed + 4))
    with torch.no_grad():
        ref = model[3](model[2](model[1](model[0](x))))
        for m in (plain, target):
            torch.testing.assert_close(m[3](m[2](m[1](m[0](x)))), ref, rtol=0, atol=0)
    torch.testing.assert_close(target[0].weight_mask, model[0].weight_mask)


def test_file_shrinks_with_sparsity(tmp_path, seed):
    sizes = {}
    for amount in (0.5, 0.9, 0.98):
        path = tmp_path / f"{amount}.pt"
        save_sparse(_pruned(amount, seed), path)
        sizes[amount] = os.path.getsize(path)
    dense = tmp_path / "dense.pt"
    torch.save(_model(seed).state_dict(), dense)
    d = os.path.getsize(dense)
    assert sizes[0.5] <= d * 1.02 and sizes[0.9] < sizes[0.5] and sizes[0.98] < sizes[0.9]
    # 90% zeros: values 0.4 B + positions <= 0.125 B per weight, vs 4 B dense, plus headers
    assert sizes[0.9] < 0.25 * d, (sizes, d)


def test_load_errors(tmp_path, seed):
    bogus = tmp_path / "bogus.pt"
    torch.save({"a": torch.zeros(2)}, bogus)
    with pytest.raises(ParameterError, match="not a layertrim-sparse"):
        load_sparse(bogus)
    path = tmp_path / "m.pt"
    save_sparse(_pruned(0.9, seed), path)
    with torch_seed(seed + 1):
        other = nn.Sequential(nn.Linear(200, 50), nn.ReLU(), nn.Conv1d(1, 4, 5), nn.Linear(96, 10, bias=False))
    with pytest.raises(ShapeError, match=r"0\.(weight|bias)"):
        load_sparse(path, other)


def test_sparsity_counts(seed):
    model = _pruned(0.9, seed)
    counts = sparsity(model)
    assert list(counts.layers) == ["0", "2", "3"]
    manual = {n: int((w == 0).sum()) for n, w in _effective(model).items()}
    assert {n: c.zeros for n, c in counts.layers.items()} == manual
    assert counts.total == 200 * 100 + 4 * 5 + 96 * 10
    assert counts.overall == pytest.approx(sum(manual.values()) / counts.total)
    assert "total" in str(counts)
