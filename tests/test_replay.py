"""Work the block engine skips: solved layers replayed on its pruned stream (the same weights as
computing them again, each layer computed once there, in-place changes and second calls
computed), and the blocks skipped while the first block's inputs are recorded."""
import copy
import importlib

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import prune  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

cascade = importlib.import_module("layertrim.bindings.torch.cascade")
WIDTH, BATCHES = 8, 3


class Counted(nn.Linear):
    """A Linear that counts how often it is computed (a replayed call does not reach it)."""

    computed = 0

    def forward(self, x):
        self.computed += 1
        return super().forward(x)


class Block(nn.Module):
    """Attention-like q/k/v/o, an MLP whose hidden layer is changed in place, and a layer called twice."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (Counted(WIDTH, WIDTH) for _ in range(4))
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)
        self.mix = nn.Linear(WIDTH, WIDTH)

    def forward(self, h):
        scores = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / WIDTH**0.5, dim=-1)
        h = h + self.o(scores @ self.v(h))
        z = self.up(h)
        z.mul_(2.0)  # the recorded output changes in place: replaying it would be wrong
        h = h + self.down(torch.relu(z))
        return self.mix(h + self.mix(h))  # the second call reads the first


def _model(seed):
    with torch_seed(seed):
        return nn.Sequential(Block(), Block(), Block()).eval()


def _data(seed):
    gen = torch_generator(seed)
    return [torch.randn(4, 6, WIDTH, generator=gen) for _ in range(BATCHES)]


def _pruned(seed, replay_bytes, monkeypatch):
    monkeypatch.setattr(cascade, "REPLAY_BYTES", replay_bytes)
    model = _model(seed)
    report = prune(model, _data(seed), method="magnitude", sparsity=0.5, progress=False)
    assert report.engine["chain_blocks"] == 3
    return model, report


@pytest.mark.parametrize("replay_bytes", [1 << 30, 3 * 4 * 6 * WIDTH * 4])
def test_replayed_layers_give_the_weights_of_computed_ones(seed, monkeypatch, replay_bytes):
    # the second size holds three of a block's outputs: the rest are computed as usual
    a, ra = _pruned(seed, replay_bytes, monkeypatch)
    b, rb = _pruned(seed, 0, monkeypatch)
    assert 0 < ra.engine["replay_bytes"] <= replay_bytes and rb.engine["replay_bytes"] == 0
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # and the network-level engine, which replays nothing: the same float32 operations
    # (atol covers a reordered reduction)
    c = _model(seed)
    prune(c, _data(seed), method="magnitude", sparsity=0.5, progress=False, blocks=False)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        torch.testing.assert_close(va, vc, rtol=1e-5, atol=1e-6, msg=k)


def test_each_solved_layer_is_computed_once_on_the_pruned_stream(seed, monkeypatch):
    a, _ = _pruned(seed, 1 << 30, monkeypatch)
    b, _ = _pruned(seed, 0, monkeypatch)
    # groups of a block: (q, k, v), o, up, down, mix; q is computed for its own capture,
    # then by each later group's pass (o, up, down, mix) and the advance to the next block.
    # Replayed, only the first of those five passes computes it: four per batch fewer.
    first = a[0], b[0]
    assert first[1].q.computed - first[0].q.computed == 4 * BATCHES
    assert first[1].v.computed - first[0].v.computed == 4 * BATCHES
    # o: three later passes (up, down, mix) and the advance, computed in the first only
    assert first[1].o.computed - first[0].o.computed == 3 * BATCHES
    # the last block has no advance: one pass fewer to save
    assert b[2].q.computed - a[2].q.computed == 3 * BATCHES


def test_replay_leaves_no_patched_forward(seed, monkeypatch):
    model, _ = _pruned(seed, 1 << 30, monkeypatch)
    assert all("forward" not in m.__dict__ for m in model.modules())


class Residual(nn.Module):
    """A chain of blocks, then code that needs the batch's own shapes (the input added back)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()) for _ in range(3)))

    def forward(self, x):
        return self.blocks(x) + x


def test_recording_falls_back_to_whole_passes_where_skipped_blocks_do_not_fit(seed):
    # the skipped blocks return the traced batch's outputs (4 samples); the last batch holds 3,
    # so adding the input back fails and that batch is recorded by a whole pass
    gen = torch_generator(seed)
    data = [torch.randn(4, WIDTH, generator=gen), torch.randn(4, WIDTH, generator=gen),
            torch.randn(3, WIDTH, generator=gen)]
    with torch_seed(seed):
        a = Residual().eval()
    b = copy.deepcopy(a)
    ra = prune(a, data, method="magnitude", sparsity=0.5, progress=False)
    prune(b, data, method="magnitude", sparsity=0.5, progress=False, blocks=False)
    assert ra.engine["chain_blocks"] >= 3
    assert all("forward" not in m.__dict__ for m in a.modules())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        # the same float32 operations in both engines; atol covers a reordered reduction
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)
