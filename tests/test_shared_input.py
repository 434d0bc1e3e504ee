"""Layers fed one tensor (q/k/v, gate/up) captured as one problem with their outputs side by side:
each layer's statistics equal those captured on its own, and ``X^T X`` is one array for all."""
import dataclasses
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch.capture import Collector  # noqa: E402
from layertrim.bindings.torch.shared_input import SharedCollector, shares_input  # noqa: E402
from layertrim.bindings.torch.layers import output_rows  # noqa: E402
from layertrim.solvers import ParameterError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402


def _layers(seed):
    with torch_seed(seed):
        return {"q": nn.Linear(12, 12), "k": nn.Linear(12, 4), "v": nn.Linear(12, 12, bias=False)}


def _feed(cols, layers, xs):
    for x in xs:
        for name, layer in layers.items():
            cols[name].add_output(name, output_rows(layer, layer(x)))
            cols[name].add_input(name, layer, x)
        for col in {id(c): c for c in cols.values()}.values():
            col.flush()


def test_shared_statistics_equal_each_layers_own(seed):
    layers = _layers(seed)
    gen = torch_generator(seed)
    xs = [torch.randn(3, 40, 12, generator=gen) + 2.0 for _ in range(4)]  # non-zero means: centring matters
    shared = SharedCollector(list(layers), list(layers.values()), "gram", 100, 0)
    alone = {n: Collector(n, m, "gram", 100, 0) for n, m in layers.items()}
    with torch.no_grad():
        _feed({n: shared for n in layers}, layers, xs)
        _feed(alone, layers, xs)
    got = shared.results(lambda n: n == "k")
    assert list(got) == list(layers) and [got[n].relu for n in layers] == [False, True, False]
    for name, col in alone.items():
        a, b = got[name].groups[0], col.result(False).groups[0]
        assert a.n_samples == b.n_samples == 480 and got[name].rows_seen == 480
        # the same rows X through the same operations: X^T X and the means agree exactly
        np.testing.assert_array_equal(a.Sxx, b.Sxx)
        np.testing.assert_array_equal(a.x_mean, b.x_mean)
        # X^T Y of a wider Y may be summed in another order: float64 rounding of 480-term sums
        for u, v in ((a.Sxy, b.Sxy), (a.syy, b.syy), (a.y_mean, b.y_mean)):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12 * np.abs(v).max())
    assert got["q"].groups[0].Sxx is got["v"].groups[0].Sxx  # formed once, shared


def test_another_input_is_refused(seed):
    layers = _layers(seed)
    gen = torch_generator(seed)
    shared = SharedCollector(list(layers), list(layers.values()), "gram", 100, 0)
    x, other = torch.randn(5, 12, generator=gen), torch.randn(5, 12, generator=gen)
    shared.add_input("q", layers["q"], x)
    shared.add_input("k", layers["k"], x.clone())  # equal values are the same rows
    with pytest.raises(ParameterError, match="call 1 of 'v' read other values"):
        shared.add_input("v", layers["v"], other)
    shared = SharedCollector(list(layers), list(layers.values()), "gram", 100, 0)
    shared.add_input("q", layers["q"], x)
    x.mul_(2.0)  # the same tensor, changed in place since the first layer read it
    with pytest.raises(ParameterError, match="call 1 of 'k' read other values"):
        shared.add_input("k", layers["k"], x)


def test_which_layers_share_their_rows(seed):
    with torch_seed(seed):
        a, b, wide = nn.Linear(8, 4), nn.Linear(8, 6), nn.Linear(9, 4)
        conv3, conv1 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 1)
        twin = nn.Conv2d(8, 4, 3, padding=1)
        depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert shares_input([a, b], ["gram", "gram"])
    assert shares_input([conv3, twin], ["gram", "gram"])
    assert not shares_input([a], ["gram"])  # one layer: nothing to share
    assert not shares_input([a, wide], ["gram", "gram"])
    assert not shares_input([a, b], ["gram", "rows"])  # a row sample keeps its own rows
    assert not shares_input([conv3, conv1], ["gram", "gram"])  # a ResNet block's conv1 and downsample
    assert not shares_input([depthwise, depthwise], ["gram", "gram"])
    assert not shares_input([a, conv1], ["gram", "gram"])


def test_a_registered_kind_leaves_the_built_in_ones_recognised(seed, monkeypatch):
    # register_kind puts a new kind first: the built-in kinds must not be found by position
    layers_module = importlib.import_module("layertrim.bindings.torch.layers")
    monkeypatch.setattr(layers_module, "KINDS", list(layers_module.KINDS))
    scaled = dataclasses.replace(layers_module.LINEAR, name="Scaled", matches=lambda m: isinstance(m, Scaled))
    layers_module.register_kind(scaled)
    with torch_seed(seed):
        a, b, c, d = nn.Linear(8, 4), nn.Linear(8, 6), Scaled(8, 4), Scaled(8, 6)
        conv, twin = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
    assert shares_input([a, b], ["gram", "gram"])
    assert shares_input([conv, twin], ["gram", "gram"])
    assert not shares_input([c, d], ["gram", "gram"])  # its rows are its own business


class Scaled(nn.Linear):
    """A Linear subclass a user gave its own kind."""
