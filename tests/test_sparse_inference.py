"""Sparse inference: converted layers compute what the dense pruned layers compute."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402

from layertrim.bindings.torch import sparse_confirm  # noqa: E402
from layertrim.bindings.torch import sparse_inference as si  # noqa: E402
from layertrim.bindings.torch.csr_kernel import kernel_arrays, sparse_matvec  # noqa: E402
from layertrim.bindings.torch.sparse_inference import to_sparse  # noqa: E402
from layertrim.bindings.torch.sparse_linear import SparseLinear  # noqa: E402
from layertrim.solvers import LayerTrimError, ParameterError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

# float32 products of the same terms summed in another order (CSR rows vs BLAS
# blocks): differences are a few ulps of the partial sums, ~1e-7 relative to
# |W||x| ~ O(1) here; rtol 1e-5 plus atol 1e-5 leaves two orders of margin.
RTOL, ATOL = 1e-5, 1e-5


def _mlp(seed, sparsity=0.9):
    with torch_seed(seed):
        model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    g = torch_generator(seed + 1)
    for layer in (model[0], model[2]):
        mask = (torch.rand(layer.weight.shape, generator=g) >= sparsity).float()
        torch_prune.custom_from_mask(layer, "weight", mask)
    return model.eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_converted_mlp_equals_dense_pruned(seed):
    model = _mlp(seed)
    x = torch.randn(7, 40, generator=torch_generator(seed + 2))
    with torch.no_grad():
        ref = model(x)
    report = to_sparse(model, min_speedup=0.0, repeats=1, layouts=("csr",), fuse=False)
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)
    assert isinstance(model[4], nn.Linear)  # dense weight: never a candidate
    assert [d.decision for d in report.layers] == ["csr", "csr"]
    assert set(model[0].timings) == {1, 64} and "dense" in model[0].timings[1]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(model(x[:1]), ref[:1], rtol=RTOL, atol=ATOL)  # the matrix-vector path
    assert "csr" in str(report)
    twin = copy.deepcopy(model)  # a CSR weight's storage cannot be deep-copied by torch itself
    assert twin[0].weight.layout == torch.sparse_csr and twin[0].weight is not model[0].weight
    assert twin[0].timings == model[0].timings and twin[0].decision == "csr"
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))


def test_bsr_and_strided_1x1_conv(seed):
    with torch_seed(seed):
        conv = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2), nn.ReLU())
    g = torch_generator(seed + 1)
    conv[0].weight.data[torch.rand(conv[0].weight.shape, generator=g) < 0.8] = 0
    x = torch.randn(3, 16, 9, 9, generator=g)
    with torch.no_grad():
        ref = conv(x)
        report = to_sparse(conv, min_speedup=0.0, repeats=1, layouts=("bsr",), example=x)
        assert report.layers[0].decision == "bsr"
        torch.testing.assert_close(conv(x), ref, rtol=RTOL, atol=ATOL)


def test_slower_layers_stay_dense_and_2_4_is_a_message(seed):
    model = _mlp(seed)
    before = _state(model)
    report = to_sparse(model, min_speedup=1e9, repeats=1)
    assert all(d.decision == "dense" for d in report.layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any("2:4" in n and "CUDA" in n for n in report.notes) or torch.cuda.is_available()


def test_failure_leaves_model_unchanged(seed, monkeypatch):
    model = _mlp(seed)
    before, kinds = _state(model), [type(m) for m in model]
    calls = []

    def flaky(name, *args):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(name, *args)

    real = si._decide
    monkeypatch.setattr(si, "_decide", flaky)
    with pytest.raises(RuntimeError):
        to_sparse(model, min_speedup=0.0, repeats=1)
    assert [type(m) for m in model] == kinds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, name", [
    ({"min_speedup": -1.0}, "min_speedup"), ({"batch_sizes": ()}, "batch_sizes"),
    ({"batch_sizes": 4}, "batch_sizes"), ({"repeats": 0}, "repeats"), ({"layouts": ("coo",)}, "layouts"),
    ({"example": [[0.0] * 40]}, "example"), ({"example": torch.zeros(0, 40)}, "example"),
    ({"fuse": "yes"}, "fuse"),
])
def test_bad_arguments_are_named(seed, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        to_sparse(_mlp(seed), **kwargs)


def test_not_a_module():
    with pytest.raises(LayerTrimError, match="model"):
        to_sparse("model.pt")


# The one-sample kernel sums float products in float64 partial sums; torch sums in
# the weight's dtype. Against a float64 reference the float32 error is the rounding
# of each product and of the result, ~6e-8 relative to sum |W_ij x_j| ~ O(1) here:
# rtol/atol 1e-6 leave an order of magnitude. float64: ~1e-16, hence 1e-12.
KERNEL_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_one_sample_kernel_equals_the_float64_product(seed, dtype, with_bias):
    g = torch_generator(seed)
    weight = torch.randn(23, 37, generator=g, dtype=torch.float64)
    counts = torch.arange(23) % 9  # rows with 0..8 nonzeros: every remainder of the 4-way unrolling
    order = torch.rand(23, 37, generator=g).argsort(1)
    weight[order >= counts[:, None]] = 0
    bias = torch.randn(23, generator=g, dtype=torch.float64) if with_bias else None
    layer = SparseLinear(weight.to(dtype), None if bias is None else bias.to(dtype), "csr")
    x = torch.randn(37, generator=g, dtype=torch.float64)
    ref = weight @ x + (0 if bias is None else bias)
    tol = KERNEL_TOL[dtype]
    for shape in [(37,), (1, 37), (1, 1, 37)]:
        with torch.no_grad():
            y = layer(x.to(dtype).reshape(shape))
        assert y.shape == shape[:-1] + (23,) and y.dtype == dtype
        torch.testing.assert_close(y.reshape(-1).double(), ref, rtol=tol, atol=tol)
    assert layer._arrays is not None  # the compiled kernel ran


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonzero_inputs", [0, 1, 18, 37])
def test_one_sample_kernel_skips_zero_inputs_by_columns(seed, dtype, nonzero_inputs):
    g = torch_generator(seed)
    weight = torch.randn(23, 37, generator=g, dtype=torch.float64)
    weight[torch.rand(23, 37, generator=g) < 0.7] = 0
    bias = torch.randn(23, generator=g, dtype=torch.float64)
    x = torch.randn(37, generator=g, dtype=torch.float64)
    x[torch.randperm(37, generator=g)[nonzero_inputs:]] = 0
    layer = SparseLinear(weight.to(dtype), bias.to(dtype), "csr")
    arrays = kernel_arrays(layer.weight, layer.bias)
    out = np.empty(23, dtype=arrays.data.dtype)
    by_columns = sparse_matvec(*arrays[:6], x.to(dtype).numpy(), arrays.bias, out)
    touched = int((weight[:, x != 0] != 0).sum())  # stored weights in the columns of nonzero inputs
    assert by_columns == (3 * touched < 2 * int((weight != 0).sum()))
    if nonzero_inputs <= 1:  # one column holds at most 23 of the ~256 stored weights
        assert by_columns
    tol = KERNEL_TOL[dtype]
    torch.testing.assert_close(torch.from_numpy(out).double(), weight @ x + bias, rtol=tol, atol=tol)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.to(dtype)[None]).double()[0], weight @ x + bias, rtol=tol, atol=tol)


def test_one_sample_kernel_follows_new_weights_and_leaves_gradients_to_torch(seed):
    model = _mlp(seed)
    to_sparse(model, min_speedup=0.0, repeats=1, layouts=("csr",), fuse=False)
    layer = model[0]
    x = torch.randn(1, 40, generator=torch_generator(seed + 2))
    with torch.no_grad():
        layer(x)  # the arrays of the first weight are cached here
    state = {"weight": layer.weight * 2, "bias": layer.bias + 1}  # torch copies CSR values in place
    layer.load_state_dict(state)  # new values: the cached arrays must not be reused
    expected = x @ state["weight"].to_dense().T + state["bias"]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=RTOL, atol=ATOL)
    layer.double()  # a replaced buffer: arrays rebuilt for float64
    with torch.no_grad():
        torch.testing.assert_close(layer(x.double()), expected.double(), rtol=RTOL, atol=ATOL)
    xg = x.double().requires_grad_()  # autograd: torch's CSR product, which has a gradient
    layer(xg).sum().backward()
    dense = layer.weight.to_dense()
    torch.testing.assert_close(xg.grad, dense.sum(0, keepdim=True), rtol=1e-12, atol=1e-12)


def _layer_times(fns, repeats):
    """Fake micro-benchmark: every layer's dense call 2 s, every sparse candidate 1 s (alone)."""
    return {name: 2.0 if name == "dense" else 1.0 for name in fns}


def test_whole_model_check_drops_a_layer_that_slows_the_model(seed, monkeypatch):
    model = _mlp(seed)
    x = torch.randn(1, 40, generator=torch_generator(seed + 2))
    monkeypatch.setattr(si, "_median_times", _layer_times)

    def model_time(model_, variants, x_, repeats):
        # in the model: the sparse first layer saves 10%, the sparse second layer costs 50%
        return [1.0 - 0.1 * isinstance(v["0"], SparseLinear) + 0.5 * isinstance(v["2"], SparseLinear)
                for v in variants]
    monkeypatch.setattr(sparse_confirm, "_compare", model_time)
    report = to_sparse(model, repeats=1, layouts=("csr",), batch_sizes=(1,), example=x, fuse=False)
    assert [d.decision for d in report.layers] == ["csr", "dense"]
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], nn.Linear)
    assert any("2: csr dropped" in n for n in report.notes)


def test_whole_model_check_failure_leaves_model_unchanged(seed, monkeypatch):
    model = _mlp(seed)
    before, modules = _state(model), list(model)
    monkeypatch.setattr(si, "_median_times", _layer_times)
    calls = []

    def flaky(model_, variants, x_, repeats):
        calls.append(1)
        sparse_confirm.install_modules(model_, variants[0])  # swapped in, as the real timing does
        raise RuntimeError("boom")
    monkeypatch.setattr(sparse_confirm, "_compare", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        to_sparse(model, repeats=1, layouts=("csr",), example=torch.zeros(1, 40))
    assert calls and list(model) == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_whole_model_check_runs_the_model_at_each_batch_size(seed, monkeypatch):
    model = _mlp(seed)
    x = torch.randn(5, 40, generator=torch_generator(seed + 2))
    with torch.no_grad():
        ref = model(x)
    monkeypatch.setattr(si, "_median_times", _layer_times)
    seen = []
    real = sparse_confirm._compare
    monkeypatch.setattr(sparse_confirm, "_compare",
                        lambda m, variants, xb, r: seen.append(tuple(xb.shape)) or real(m, variants, xb, r))
    report = to_sparse(model, repeats=2, layouts=("csr",), batch_sizes=(1, 3), example=x, min_speedup=1e-9)
    assert [d.decision for d in report.layers] == ["csr", "csr"]  # any measured ratio exceeds 1e-9
    assert sorted(set(seen)) == [(1, 40), (3, 40)]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=RTOL, atol=ATOL)


def test_whole_model_check_leaves_batchnorm_statistics_and_modes_alone(seed, monkeypatch):
    model = _mlp(seed)
    model.insert(1, nn.BatchNorm1d(32))
    model.train()
    before = _state(model)
    monkeypatch.setattr(si, "_median_times", _layer_times)
    to_sparse(model, repeats=2, layouts=("csr",), batch_sizes=(4,), min_speedup=1e-9,
              example=torch.randn(1, 40, generator=torch_generator(seed + 2)))
    assert all(m.training for m in model.modules())
    state = model.state_dict()
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(state[k], before[k]), k
