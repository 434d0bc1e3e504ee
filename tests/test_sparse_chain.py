"""Batch-1 fusion: a run of sparse layers and ReLUs as one compiled call computes what the modules do."""
import copy
import pickle

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import sparse_confirm  # noqa: E402
from layertrim.bindings.torch import sparse_inference as si  # noqa: E402
from layertrim.bindings.torch.sparse_chain import SparseChain, fusable_runs, fused_modules  # noqa: E402
from layertrim.bindings.torch.sparse_inference import to_sparse  # noqa: E402
from layertrim.bindings.torch.sparse_linear import SparseLinear  # noqa: E402
from layertrim.solvers import ParameterError, ShapeError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

# Against a float64 dense reference: each layer's float32 kernel result is within
# ~6e-8 relative of sum |W_ij x_j| (float64 partial sums, one rounding), and the
# roundings of three layers pass through weights of norm ~1: 1e-5 leaves two orders.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _sparse(n_out, n_in, g, dtype, density=0.3, bias=True):
    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    w[torch.rand(n_out, n_in, generator=g) >= density] = 0
    b = torch.randn(n_out, generator=g, dtype=torch.float64) if bias else None
    return SparseLinear(w.to(dtype), None if b is None else b.to(dtype), "csr"), w, b


def _dense_forward(x, layers):
    """float64 ``relu_l(W_l h + b_l)`` through ``layers`` (``(w, b, relu)``)."""
    h = x.double()
    for w, b, relu in layers:
        h = h @ w.T + (0 if b is None else b)
        h = h.clamp_min(0) if relu else h
    return h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zeros", [0.0, 0.9])  # inputs without zeros (by rows) and mostly zero (by columns)
def test_chain_equals_its_modules_one_by_one(seed, dtype, zeros):
    g = torch_generator(seed)
    a, wa, ba = _sparse(30, 41, g, dtype)
    b, wb, bb = _sparse(17, 30, g, dtype, bias=False)
    c, wc, bc = _sparse(9, 17, g, dtype)
    steps = [a, nn.ReLU(), b, nn.ReLU(), c]  # no ReLU after the last layer
    chain = SparseChain(steps)
    x = torch.randn(41, generator=g, dtype=dtype)
    x[torch.rand(41, generator=g) < zeros] = 0
    ref = _dense_forward(x, [(wa, ba, True), (wb, bb, True), (wc, bc, False)])
    with torch.no_grad():
        for shape in [(41,), (1, 41), (1, 1, 41)]:
            xs = x.reshape(shape)
            one_by_one = xs
            for step in steps:
                one_by_one = step(one_by_one)
            y = chain(xs)
            assert y.shape == shape[:-1] + (9,) and y.dtype == dtype
            assert torch.equal(y, one_by_one)  # the same kernel and roundings: bit for bit
            torch.testing.assert_close(y.reshape(-1).double(), ref, rtol=TOL[dtype], atol=TOL[dtype])
        assert chain._packed is not None  # the compiled path ran
        batch = torch.randn(5, 41, generator=g, dtype=dtype)  # a batch: the modules one by one
        torch.testing.assert_close(chain(batch).double(), _dense_forward(
            batch, [(wa, ba, True), (wb, bb, True), (wc, bc, False)]), rtol=TOL[dtype], atol=TOL[dtype])


def test_chain_follows_new_weights_copies_and_gradients(seed):
    g = torch_generator(seed)
    a, _, _ = _sparse(12, 20, g, torch.float32)
    b, _, _ = _sparse(6, 12, g, torch.float32)
    chain = SparseChain([a, nn.ReLU(), b])
    x = torch.randn(1, 20, generator=g)

    def expected(x_):
        h = (x_ @ chain.steps[0].weight.to_dense().T + chain.steps[0].bias).clamp_min(0)
        return h @ chain.steps[2].weight.to_dense().T + chain.steps[2].bias

    with torch.no_grad():
        chain(x)  # packed arrays cached here
        state = {k: v * 2 if k.endswith("weight") else v + 1 for k, v in chain.state_dict().items()}
        chain.load_state_dict(state)  # new values: the cached arrays must not be reused
        torch.testing.assert_close(chain(x), expected(x), rtol=1e-5, atol=1e-5)
        layer = chain.steps[2]  # loaded on the layer alone: the chain follows too
        layer.load_state_dict({"weight": layer.weight * 3, "bias": layer.bias - 2})
        torch.testing.assert_close(chain(x), expected(x), rtol=1e-5, atol=1e-5)
        twin, thawed = copy.deepcopy(chain), pickle.loads(pickle.dumps(chain))
        assert torch.equal(twin(x), chain(x)) and torch.equal(thawed(x), chain(x))
        chain.double()  # replaced buffers: arrays rebuilt for float64
        torch.testing.assert_close(chain(x.double()), expected(x.double()), rtol=1e-12, atol=1e-12)
    xg = x.double().requires_grad_()  # autograd: the modules one by one, through torch's CSR product
    chain(xg).sum().backward()
    assert xg.grad is not None and xg.grad.shape == xg.shape


def test_runs_are_maximal_start_with_a_layer_and_stay_in_their_sequential(seed):
    g = torch_generator(seed)

    def layer(n_out, n_in):
        return _sparse(n_out, n_in, g, torch.float32)[0]

    conv = SparseLinear(torch.eye(4), None, "csr", conv_stride=(1, 1))  # a 1x1 conv: not a one-vector layer
    inner = nn.Sequential(layer(8, 8), nn.ReLU())
    with torch_seed(seed):  # the dense layers' initial draws
        dense = [nn.Linear(8, 8), nn.Linear(5, 8)]
    model = nn.Sequential(
        nn.ReLU(), layer(8, 6), nn.ReLU(), layer(8, 8),  # the leading ReLU is not part of a run
        dense[0],  # a dense layer ends it
        layer(5, 8),  # alone: no run
        dense[1], inner,  # a run inside a nested Sequential
        layer(3, 8), layer(4, 7),  # shapes that do not chain: no run
        conv, nn.ReLU(),
    )
    assert fusable_runs(model) == [["1", "2", "3"], ["7.0", "7.1"]]

    class Residual(nn.Sequential):  # its own forward: how it calls its children is its own
        def forward(self, x):
            return x + super().forward(x)
    assert fusable_runs(Residual(layer(8, 8), nn.ReLU(), layer(8, 8))) == []
    hooked, watched = layer(8, 8), nn.ReLU()  # a fused module's hooks would not run: not fused
    hooked.register_forward_hook(lambda *a: None)
    watched.register_forward_pre_hook(lambda *a: None)
    assert fusable_runs(nn.Sequential(layer(8, 8), watched, layer(8, 8), nn.ReLU(), hooked, nn.ReLU())) == [
        ["2", "3"], ]
    with pytest.raises(ParameterError, match="SparseChain"):
        SparseChain([nn.ReLU(), layer(8, 8)])
    with pytest.raises(ShapeError, match="chain"):
        SparseChain([layer(8, 6), layer(8, 7)])
    fused = fused_modules(model, fusable_runs(model))
    assert isinstance(fused["1"], SparseChain) and isinstance(fused["7.0"], SparseChain)
    assert all(isinstance(fused[n], nn.Identity) for n in ("2", "3", "7.1"))


def _mlp(seed):
    g = torch_generator(seed)
    with torch_seed(seed):
        model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
        for m in (model[0], model[2]):
            m.weight[torch.rand(m.weight.shape, generator=g) < 0.9] = 0
    return model.eval()


def test_to_sparse_fuses_for_batch_1_and_computes_the_same(seed):
    model = _mlp(seed)
    unfused = copy.deepcopy(model)
    x = torch.randn(7, 40, generator=torch_generator(seed + 1))
    with torch.no_grad():
        ref = model(x)
    report = to_sparse(model, min_speedup=0.0, repeats=1, layouts=("csr",))
    to_sparse(unfused, min_speedup=0.0, repeats=1, layouts=("csr",), fuse=False)
    assert report.fused == [["0", "1", "2", "3"]] and any("fused for batch 1" in n for n in report.notes)
    assert isinstance(model[0], SparseChain) and all(isinstance(model[i], nn.Identity) for i in (1, 2, 3))
    assert not any(m.training for m in model.modules())  # the new modules follow the model's mode
    assert isinstance(unfused[0], SparseLinear) and isinstance(unfused[1], nn.ReLU)
    with torch.no_grad():
        for i in range(len(x)):
            assert torch.equal(model(x[i:i + 1]), unfused(x[i:i + 1]))
        torch.testing.assert_close(model(x[:1]), ref[:1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    assert to_sparse(_mlp(seed), min_speedup=0.0, repeats=1, layouts=("csr",), batch_sizes=(4,)).fused == []


def test_whole_model_check_times_the_model_fused(seed, monkeypatch):
    model = _mlp(seed)
    seen = []
    real = sparse_confirm._compare

    def spy(model_, variants, x, repeats):
        seen.append([type(v["0"]).__name__ for v in variants])
        return real(model_, variants, x, repeats)
    monkeypatch.setattr(sparse_confirm, "_compare", spy)
    report = to_sparse(model, min_speedup=1e-9, repeats=1, layouts=("csr",), batch_sizes=(1,),
                       example=torch.zeros(1, 40))
    # the variant with every kept layer is timed as it will run: fused
    assert seen and all(kinds[0] == "SparseChain" for kinds in seen)
    assert report.fused == [["0", "1", "2", "3"]] and isinstance(model[0], SparseChain)


def test_failure_of_the_fused_check_leaves_model_unchanged(seed, monkeypatch):
    model = _mlp(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model)

    def flaky(model_, variants, x, repeats):
        sparse_confirm.install_modules(model_, variants[0])  # swapped in, as the real timing does
        raise RuntimeError("boom")
    monkeypatch.setattr(sparse_confirm, "_compare", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        to_sparse(model, min_speedup=1e-9, repeats=1, layouts=("csr",), batch_sizes=(1,),
                  example=torch.zeros(1, 40))
    assert list(model) == modules  # the ReLUs, replaced by Identity in the fused variant, are back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_relu_module_used_twice_keeps_its_places(seed):
    g = torch_generator(seed)
    relu = nn.ReLU()  # one module in two places: named_children lists it once
    model = nn.Sequential(*[_sparse(12, 12, g, torch.float32)[0] if i % 2 == 0 else relu for i in range(5)])
    x = torch.randn(1, 12, generator=g)
    with torch.no_grad():
        ref = model(x)
        assert fusable_runs(model) == [["0", "1", "2", "3", "4"]]
        sparse_confirm.install_modules(model, fused_modules(model, fusable_runs(model)))
        assert isinstance(model[0], SparseChain) and len(model[0].steps) == 5
        assert torch.equal(model(x), ref)


def test_failures_around_the_fusion_leave_model_unchanged(seed, monkeypatch):
    for target, name in [(si, "fused_modules"), (si, "_dense_module")]:
        model = _mlp(seed)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modules = list(model)
        if name == "fused_modules":
            def broken(*args):
                raise RuntimeError("boom")
        else:  # the dense side of the per-layer benchmark fails: its own error, not a KeyError
            def broken(*args):
                return lambda x: (_ for _ in ()).throw(RuntimeError("boom"))
        with monkeypatch.context() as patch:
            patch.setattr(target, name, broken)
            with pytest.raises(RuntimeError, match="boom"):
                to_sparse(model, min_speedup=0.0, repeats=1, layouts=("csr",))
        assert list(model) == modules, name
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
