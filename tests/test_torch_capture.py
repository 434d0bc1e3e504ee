"""Capture: im2col exactness, row sampling, Gram streaming, ReLU detection, bad inputs."""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import capture, find_layers, relu_layers  # noqa: E402
from layertrim.bindings.torch.capture import RowReservoir  # noqa: E402
from layertrim.bindings.torch.layers import (  # noqa: E402
    bias_vectors,
    output_rows,
    unfold_input,
    weight_from_matrices,
    weight_matrices,
)
from layertrim.solvers import EmptyDataError, GramStats, NonFiniteError, ParameterError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

capture_module = importlib.import_module("layertrim.bindings.torch.capture")

LAYERS = [
    ("linear", lambda: nn.Linear(6, 4), (3, 5, 6)),  # two leading batch dims
    ("conv2d", lambda: nn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    ("stride-pad-dil", lambda: nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2)), (2, 3, 9, 8)),
    ("reflect", lambda: nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), (2, 2, 6, 6)),
    ("replicate", lambda: nn.Conv2d(2, 4, 3, padding=2, padding_mode="replicate"), (2, 2, 6, 6)),
    ("circular", lambda: nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular", stride=2), (2, 2, 7, 6)),
    ("same-even-kernel", lambda: nn.Conv2d(2, 3, 4, padding="same", dilation=2), (2, 2, 9, 9)),
    ("groups", lambda: nn.Conv2d(6, 4, 3, groups=2, bias=False), (2, 6, 5, 5)),
    ("depthwise", lambda: nn.Conv2d(4, 8, 3, groups=4, padding=1), (2, 4, 5, 5)),
    ("conv1d", lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1, dilation=2, groups=1), (2, 3, 11)),
    ("conv1d-depthwise-reflect", lambda: nn.Conv1d(4, 4, 3, groups=4, padding=1, padding_mode="reflect"), (2, 4, 9)),
    ("conv2d-unbatched", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_unfolded_inputs_times_weights_reproduce_the_layer(name, make, shape, seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        layer = make().double()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch_generator(seed))
    X = unfold_input(layer, x)
    Y = output_rows(layer, layer(x))
    W = weight_matrices(layer)
    pred = X @ W
    b = bias_vectors(layer)
    if b is not None:
        pred = pred + b[:, None, :]
    # float64 throughout: only summation order differs from torch's conv kernels
    torch.testing.assert_close(pred, Y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weight_from_matrices(layer, W), layer.weight.detach())


def test_reservoir_keeps_distinct_rows_uniformly(seed_shift):
    n, k, seeds = 1000, 100, 300
    counts = np.zeros(n)
    for seed in range(seed_shift, seed_shift + seeds):
        res = RowReservoir(k, seed)
        for start in range(0, n, 37):
            idx = np.arange(start, min(start + 37, n), dtype=np.float64)
            res.add(idx[None, :, None], idx[None, :, None])
        (X, Y), = res.groups()
        rows = X[:, 0].astype(int)
        assert len(rows) == k and len(set(rows)) == k  # without replacement
        np.testing.assert_array_equal(X, Y)  # rows of X and Y stay paired
        counts[rows] += 1
    # each row is kept with probability k/n = 0.1: per block of 100 rows the
    # count is ~ Binomial-like with mean 3000 and sd < 55; 6 sd cannot fail by chance
    blocks = counts.reshape(10, 100).sum(axis=1)
    assert np.all(np.abs(blocks - seeds * k / 10) < 6 * 55), blocks


def _mlp(seed):
    with torch_seed(seed):  # module init draws from torch's global generator
        return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(0.1), nn.Linear(7, 4), nn.Tanh(), nn.Linear(4, 2))


@pytest.mark.parametrize("pooled_rows", [1, 1024])  # an update per batch, or one for all three
def test_gram_mode_equals_statistics_of_all_rows_and_rows_mode_keeps_all_when_budget_allows(seed, monkeypatch,
                                                                                          pooled_rows):
    monkeypatch.setattr(capture_module, "POOLED_ROWS", pooled_rows)
    model = _mlp(seed)
    g = torch_generator(seed)
    data = [torch.randn(16, 5, generator=g) for _ in range(3)]
    rows = capture(model, data, mode="rows", max_rows=1000)
    gram = capture(model, data, mode="gram")
    assert list(rows) == ["0", "3", "5"]
    for name in rows:
        (X, Y), = rows[name].groups
        assert X.shape[0] == 48 and rows[name].rows_seen == 48
        stats = gram[name].groups[0]
        assert isinstance(stats, GramStats)
        ref = GramStats.from_arrays(X, Y)
        # same sums in another order: entries agree to float64 rounding relative to the
        # largest entry, not to their own size. An entry that is 0 in one (e.g. a ReLU
        # input column that is zero on every row) can be ~1e-17 in the other, which no
        # rtol accepts; atol = 1e-12 * max|entry| is float64 noise level (eps 2e-16
        # times the 48 summed terms, with ample room).
        for got, want in ((stats.xtx(), ref.xtx()), (stats.xty(), ref.xty())):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    # the first layer's rows are the inputs themselves; its targets the layer output
    (X, Y), = rows["0"].groups
    np.testing.assert_allclose(X, torch.cat(data).numpy())
    with torch.no_grad():
        np.testing.assert_allclose(Y, model[0](torch.cat(data)).numpy(), rtol=1e-6)


def test_row_budget_bounds_the_sample(seed):
    model = _mlp(seed)
    g = torch_generator(seed)
    data = [(torch.randn(40, 5, generator=g), torch.zeros(40)) for _ in range(5)]  # (inputs, targets) tuples
    out = capture(model, data, mode="rows", max_rows=64, layers=["3"])
    (X, Y), = out["3"].groups
    assert X.shape == (64, 7) and Y.shape == (64, 4) and out["3"].rows_seen == 200


def test_relu_detection_and_override(seed):
    model = _mlp(seed)
    assert relu_layers(model) == {"0"}
    out = capture(model, [torch.randn(4, 5, generator=torch_generator(seed))], relu={"3": True})
    assert out["0"].relu and out["3"].relu and not out["5"].relu


def test_cascade_inputs_from_one_model_targets_from_another(seed):
    dense = _mlp(seed)
    work = _mlp(seed)
    with torch.no_grad():
        work[0].weight.mul_(0.5)
    x = torch.randn(10, 5, generator=torch_generator(seed))
    out = capture(work, [x], mode="rows", layers=["3"], targets_from=dense)
    (X, Y), = out["3"].groups
    with torch.no_grad():
        np.testing.assert_allclose(X, torch.relu(work[0](x)).numpy(), rtol=1e-6)
        np.testing.assert_allclose(Y, dense[3](torch.relu(dense[0](x))).numpy(), rtol=1e-6)


def test_training_flags_are_restored(seed):
    model = _mlp(seed).train()
    capture(model, [torch.randn(4, 5, generator=torch_generator(seed))])
    assert all(m.training for m in model.modules())


def test_bad_inputs_give_clear_errors(seed):
    model = _mlp(seed)
    g = torch_generator(seed)
    with pytest.raises(EmptyDataError, match="empty"):
        capture(model, [])
    with pytest.raises(ParameterError, match="no layer named"):
        capture(model, [torch.randn(2, 5, generator=g)], layers=["7"])
    with pytest.raises(ParameterError, match="Tanh"):
        find_layers(model, ["4"])
    bad = torch.randn(3, 5, generator=g)
    bad[1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="layer '0'"):
        capture(model, [bad])
    with pytest.raises(ParameterError, match="mode"):
        capture(model, [torch.randn(2, 5, generator=g)], mode="dense")
