"""The fused in-projection of nn.MultiheadAttention (``<attention>.in_proj``) as a prunable layer:
sparsity reached, captured statistics and solutions against direct computations from the query seen
by an independent hook, the model's output against a hand-written forward, bfloat16, cross-attention
and separate q/k/v weights left dense and reported, atomic failure, selection and mask life cycle."""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from layertrim.bindings.torch import capture, fine_tune, load_sparse, make_permanent, prune, save_sparse  # noqa: E402
from layertrim.solvers import GramStats, ParameterError  # noqa: E402
from layertrim.solvers.threshold.iht import iht  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

layer_solve = importlib.import_module("layertrim.bindings.torch.layer_solve")
prune_module = importlib.import_module("layertrim.bindings.torch.prune")
E, HEADS, T, B = 16, 2, 6, 4
IN_PROJ = [f"layers.{i}.self_attn.in_proj" for i in range(2)]


def _encoder(seed, batch_first=True, d_model=E):
    with torch_seed(seed):
        layer = nn.TransformerEncoderLayer(d_model, HEADS, 2 * d_model, dropout=0.0, batch_first=batch_first)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def _data(seed, batch_first=True, n=2, d_model=E):
    gen = torch_generator(seed)
    shape = (B, T, d_model) if batch_first else (T, B, d_model)
    return [torch.randn(*shape, generator=gen) for _ in range(n)]


def _queries(model, data, index):
    """Rows of the query each self-attention call gets, from a pre-hook (tokens as rows, (B, T) order)."""
    attn = model.layers[index].self_attn
    seen = []

    def grab(m, args, kwargs):
        q = args[0]
        seen.append((q if m.batch_first else q.transpose(0, 1)).reshape(-1, q.shape[-1]).clone())

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        for x in data:
            model(x)
    handle.remove()
    return torch.cat(seen).double().numpy()


def _effective_in_proj(attn):
    """The written in-projection weight: ``orig * mask`` under the pruning reparametrization."""
    return (attn.in_proj_weight_orig * attn.in_proj_weight_mask).detach()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("method, pattern", [("magnitude", "unstructured"), ("iht", "unstructured"),
                                             ("lasso", "unstructured"), ("magnitude", "2:4"), ("iht", "2:4")])
def test_in_projection_reaches_the_target_sparsity(method, pattern, batch_first, seed):
    model = _encoder(seed, batch_first)
    sparsity = None if pattern == "2:4" else 0.5
    report = prune(model, _data(seed, batch_first), method=method, sparsity=sparsity, pattern=pattern,
                   layers="*.in_proj", progress=False)
    assert [r.name for r in report.layers] == IN_PROJ
    for i, r in enumerate(report.layers):
        w = _effective_in_proj(model.layers[i].self_attn)
        assert r.shape == (3 * E, E) and r.zeros == int((w == 0).sum())
        if method == "lasso":  # the lam path stops at the first lam reaching the target, not on the count
            assert r.sparsity >= 0.5, r.sparsity
        else:
            assert r.zeros == r.total // 2
        if pattern == "2:4":
            assert bool(((w.reshape(3 * E, E // 4, 4) != 0).sum(-1) == 2).all())


@pytest.mark.parametrize("batch_first", [True, False])
def test_captured_statistics_equal_the_query_rows(batch_first, seed):
    model = _encoder(seed, batch_first)
    data = _data(seed, batch_first)
    captured = capture(model, data, layers=IN_PROJ, mode="gram")
    for i, name in enumerate(IN_PROJ):
        attn = model.layers[i].self_attn
        X = _queries(model, data, i)
        Y = X @ attn.in_proj_weight.detach().double().numpy().T + attn.in_proj_bias.detach().double().numpy()
        stats = captured[name].groups[0]
        # float32 rows accumulated in float64 by the capture, float64 here: agreement to ~1e-7 relative
        assert stats.n_samples == B * T * len(data)
        np.testing.assert_allclose(stats.xtx(), X.T @ X, rtol=1e-5, atol=1e-6 * np.abs(X.T @ X).max())
        np.testing.assert_allclose(stats.xty(), X.T @ Y, rtol=1e-5, atol=1e-6 * np.abs(X.T @ Y).max())
        np.testing.assert_allclose(stats.yty_diag(), (Y**2).sum(0), rtol=1e-5, atol=1e-6 * (Y**2).sum(0).max())


@pytest.mark.parametrize("batch_first", [True, False])
def test_iht_solution_equals_a_direct_solve(batch_first, seed):
    model = _encoder(seed, batch_first)
    data = _data(seed, batch_first)
    attn = model.layers[0].self_attn
    W0, b0 = attn.in_proj_weight.detach().double().numpy(), attn.in_proj_bias.detach().double().numpy()
    X = _queries(model, data, 0)
    prune(model, data, method="iht", pattern="2:4", scheme="parallel", layers=IN_PROJ[:1], progress=False)
    direct = iht(GramStats.from_arrays(X, X @ W0.T + b0), pattern="2:4", W0=W0.T, refit=True)
    written = _effective_in_proj(attn).double().numpy()
    assert np.array_equal(written != 0, direct.W.T != 0)
    # both refit the same support by least squares on statistics equal to ~1e-7; float32 write-back
    np.testing.assert_allclose(written, direct.W.T, rtol=1e-4, atol=1e-5 * np.abs(direct.W).max())
    np.testing.assert_allclose(attn.in_proj_bias.detach().double().numpy(), direct.b, rtol=1e-4,
                               atol=1e-5 * np.abs(direct.b).max())


def test_magnitude_solution_is_the_largest_weights_refit_by_least_squares(seed):
    model = _encoder(seed)
    data = _data(seed)
    attn = model.layers[0].self_attn
    W0, b0 = attn.in_proj_weight.detach().double().numpy(), attn.in_proj_bias.detach().double().numpy()
    X = _queries(model, data, 0)
    Y = X @ W0.T + b0
    prune(model, data, method="magnitude", sparsity=0.5, scheme="parallel", layers=IN_PROJ[:1], progress=False)
    written = _effective_in_proj(attn).double().numpy()
    order = np.argsort(np.abs(W0), axis=None)
    assert np.array_equal(np.sort(np.flatnonzero(written == 0)), np.sort(order[: W0.size // 2]))
    A = np.hstack([X, np.ones((len(X), 1))])
    for j in range(W0.shape[0]):  # per output: least squares on its kept inputs plus an intercept
        keep = written[j] != 0
        coef = np.linalg.lstsq(A[:, np.r_[keep, True]], Y[:, j], rcond=None)[0]
        scale = np.abs(coef).max()
        np.testing.assert_allclose(written[j, keep], coef[:-1], rtol=1e-3, atol=1e-4 * scale)
        np.testing.assert_allclose(float(attn.in_proj_bias[j]), coef[-1], rtol=1e-3, atol=1e-4 * scale)


def _manual_encoder(model, x):
    """nn.TransformerEncoder (post-norm, ReLU) written out with the model's effective weights."""
    first = model.layers[0].self_attn.batch_first
    h = (x if first else x.transpose(0, 1)).double()
    for layer in model.layers:
        attn = layer.self_attn
        w = _effective_in_proj(attn) if hasattr(attn, "in_proj_weight_mask") else attn.in_proj_weight
        q, k, v = (h @ w.double().T + attn.in_proj_bias.double()).chunk(3, dim=-1)
        heads = [t.reshape(h.shape[0], h.shape[1], HEADS, -1).transpose(1, 2) for t in (q, k, v)]
        scores = heads[0] @ heads[1].transpose(-1, -2) / np.sqrt(E // HEADS)
        z = (scores.softmax(-1) @ heads[2]).transpose(1, 2).reshape(h.shape)
        out = attn.out_proj
        h = F.layer_norm(h + z @ out.weight.double().T + out.bias.double(), (E,), layer.norm1.weight.double(),
                         layer.norm1.bias.double(), layer.norm1.eps)
        ff = F.relu(h @ layer.linear1.weight.double().T + layer.linear1.bias.double())
        h = F.layer_norm(h + ff @ layer.linear2.weight.double().T + layer.linear2.bias.double(), (E,),
                         layer.norm2.weight.double(), layer.norm2.bias.double(), layer.norm2.eps)
    return h if first else h.transpose(0, 1)


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_model_computes_with_the_written_weights(batch_first, seed):
    model = _encoder(seed, batch_first)
    data = _data(seed, batch_first)
    prune(model, data, method="iht", sparsity=0.5, layers=["*.in_proj", "*.out_proj"], progress=False)
    with torch.no_grad():
        for x in data:
            # float32 model against a float64 hand-written forward: float32 noise of a few layers
            torch.testing.assert_close(model(x).double(), _manual_encoder(model, x), rtol=1e-4, atol=1e-5)


def test_bfloat16_in_bfloat16_out(seed):
    model = _encoder(seed).to(torch.bfloat16)
    data = [x.to(torch.bfloat16) for x in _data(seed)]
    report = prune(model, data, method="magnitude", sparsity=0.5, layers="*.in_proj", progress=False)
    for i, r in enumerate(report.layers):
        attn = model.layers[i].self_attn
        assert attn.in_proj_weight.dtype == attn.in_proj_weight_orig.dtype == torch.bfloat16
        assert attn.in_proj_bias.dtype == torch.bfloat16
        assert int((attn.in_proj_weight == 0).sum()) == r.zeros == r.total // 2
    with torch.no_grad():
        assert model(data[0]).dtype == torch.bfloat16


class _Decoder(nn.Module):
    """Self-attention, cross-attention on a memory, and an attention with separate q/k/v weights."""

    def __init__(self):
        super().__init__()
        self.memory = nn.Linear(E, E)
        self.layer = nn.TransformerDecoderLayer(E, HEADS, 2 * E, dropout=0.0, batch_first=True)
        self.side = nn.MultiheadAttention(E, HEADS, kdim=8, vdim=8, batch_first=True)

    def forward(self, x):
        y = self.layer(x, self.memory(x))
        return y + self.side(y, x[..., :8], x[..., :8], need_weights=False)[0]


def test_cross_attention_and_separate_weights_are_left_dense_and_reported(seed):
    with torch_seed(seed):
        model = _Decoder().eval()
    data = _data(seed)
    cross = model.layer.multihead_attn.in_proj_weight.detach().clone()
    report = prune(model, data, method="iht", sparsity=0.5, layers="*.in_proj", progress=False)
    assert [r.name for r in report.layers] == ["layer.self_attn.in_proj"]
    assert set(report.skipped) == {"layer.multihead_attn.in_proj", "side.in_proj"}
    assert "cross-attention" in report.skipped["layer.multihead_attn.in_proj"]
    assert "separate q/k/v" in report.skipped["side.in_proj"]
    assert "skipped layer.multihead_attn.in_proj: cross-attention" in str(report)
    assert torch.equal(model.layer.multihead_attn.in_proj_weight, cross)
    assert not hasattr(model.layer.multihead_attn, "in_proj_weight_mask")
    with pytest.raises(ParameterError, match="cross-attention"):
        capture(model, data, layers=["layer.multihead_attn.in_proj"])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("where", ["solve", "write"])
def test_failure_half_way_leaves_the_model_bit_identical(where, seed, monkeypatch):
    model = _encoder(seed)
    before, params = _state(model), [a.self_attn.in_proj_weight for a in model.layers]
    target = (layer_solve, "solve_group") if where == "solve" else (prune_module.torch_prune, "custom_from_mask")
    real, calls = getattr(*target), {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the first in-projection and out-projection went through
            raise RuntimeError("crashed half-way")
        return real(*args, **kwargs)

    monkeypatch.setattr(*target, flaky)
    with pytest.raises(RuntimeError, match="crashed half-way"):
        prune(model, _data(seed), method="iht", sparsity=0.5, layers=["*.in_proj", "*.out_proj"], progress=False)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    for attn, p in zip((a.self_attn for a in model.layers), params):
        assert attn.in_proj_weight is p and not hasattr(attn, "in_proj_weight_mask")


def test_selection_by_name_glob_and_regex(seed):
    model = _encoder(seed)
    data = _data(seed)
    default = prune(_encoder(seed), data, method="magnitude", sparsity=0.5, progress=False)
    assert not any(r.name.endswith(".in_proj") for r in default.layers)  # opt-in: named or matched only
    for selector in ("*.in_proj", "re:.*\\.in_proj", IN_PROJ):
        report = prune(_encoder(seed), data, method="magnitude", sparsity=0.5, layers=selector, progress=False)
        assert [r.name for r in report.layers] == IN_PROJ
    report = prune(model, data, method="magnitude", layers="*", ignore="*.linear*", progress=False,
                   sparsity={"*.in_proj": 0.75, "*.out_proj": 0.25})
    assert [r.name for r in report.layers] == [n for i in range(2) for n in (
        f"layers.{i}.self_attn.in_proj", f"layers.{i}.self_attn.out_proj")]
    assert all(r.zeros == int((0.75 if r.name.endswith("in_proj") else 0.25) * r.total) for r in report.layers)


def test_masks_hold_through_fine_tune_and_fold_on_make_permanent(seed, tmp_path):
    model = _encoder(seed).train()
    data = _data(seed)
    prune(model, data, method="magnitude", sparsity=0.5, layers="*.in_proj", progress=False)
    zeros = [_effective_in_proj(a.self_attn) == 0 for a in model.layers]
    fine_tune(model, [(x, torch.zeros_like(x)) for x in data], lr=1e-2, loss_fn=lambda o, t: ((o - t) ** 2).mean())
    for attn, z in zip((a.self_attn for a in model.layers), zeros):
        assert bool((_effective_in_proj(attn)[z] == 0).all())
    save_sparse(model, tmp_path / "m.pt")
    fresh = load_sparse(tmp_path / "m.pt", _encoder(seed + 1))
    make_permanent(model)
    for attn, fresh_attn, z in zip((a.self_attn for a in model.layers), (a.self_attn for a in fresh.layers), zeros):
        assert isinstance(attn.in_proj_weight, nn.Parameter) and bool((attn.in_proj_weight[z] == 0).all())
        assert torch.equal(fresh_attn.in_proj_weight, attn.in_proj_weight)


def test_sparsity_counts_the_in_projection_and_fine_tune_holds_its_zeros_after_make_permanent(seed):
    from layertrim.bindings.torch import sparsity

    model = _encoder(seed).train()
    data = _data(seed)
    prune(model, data, method="magnitude", sparsity=0.5, layers="*.in_proj", progress=False)
    counts = sparsity(model)
    for i, name in enumerate(IN_PROJ):
        w = _effective_in_proj(model.layers[i].self_attn)
        assert counts.layers[name].zeros == int((w == 0).sum()) == w.numel() // 2
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert set(counts.layers) == set(linears) | set(IN_PROJ)
    make_permanent(model)
    zeros = [model.layers[i].self_attn.in_proj_weight == 0 for i in range(2)]
    fine_tune(model, [(x, torch.zeros_like(x)) for x in data], lr=1e-2, loss_fn=lambda o, t: ((o - t) ** 2).mean())
    for i, z in enumerate(zeros):
        w = model.layers[i].self_attn.in_proj_weight
        assert bool((w[z] == 0).all()) and bool((w[~z] != 0).all())


@pytest.mark.parametrize("batch_first", [True, False])
def test_key_padding_mask_drops_the_padded_tokens_of_every_layer(batch_first, seed):
    """Right-padded sequences with ``src_key_padding_mask``: the statistics of the in- and
    out-projections and of the feed-forward layers equal those of every sequence run alone at
    its own length (no padding, no mask)."""
    model = _encoder(seed, batch_first)
    gen = torch_generator(seed)
    lengths = [T, T - 2, 1, T - 3]
    x = torch.randn(*((B, T, E) if batch_first else (T, B, E)), generator=gen)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T), True at padding
    alone = [x[i : i + 1, :n] if batch_first else x[:n, i : i + 1] for i, n in enumerate(lengths)]
    layers = IN_PROJ + [f"layers.{i}.{n}" for i in range(2) for n in ("self_attn.out_proj", "linear1", "linear2")]
    masked = capture(model, [{"src": x, "src_key_padding_mask": pad}], layers=layers, mode="gram")
    reference = capture(model, alone, layers=layers, mode="gram")
    for name in layers:
        got, want = masked[name].groups[0], reference[name].groups[0]
        assert got.n_samples == want.n_samples == sum(lengths), name
        # float32 forwards of differently shaped batches: sums agree to float32 rounding (~1e-6 relative)
        for a, b in ((got.xtx(), want.xtx()), (got.xty(), want.xty()), (got.yty_diag(), want.yty_diag())):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=name)


def test_a_masked_out_projection_trains_under_its_mask_through_fine_tune(seed):
    """The attention module reads ``out_proj.weight`` without calling ``out_proj``: fine_tune
    recomputes ``weight_orig * weight_mask`` before every call, so the kept weights learn, the
    pruned ones stay zero, and the weight read afterwards is the trained one."""
    model = _encoder(seed).train()
    data = _data(seed)
    prune(model, data, method="magnitude", sparsity=0.5, layers="*.out_proj", progress=False)
    projs = [a.self_attn.out_proj for a in model.layers]
    before = [p.weight_orig.detach().clone() for p in projs]
    fine_tune(model, [(x, torch.zeros_like(x)) for x in data], epochs=2, lr=1e-2,
              loss_fn=lambda o, t: ((o - t) ** 2).mean())
    for p, w0 in zip(projs, before):
        keep = p.weight_mask.bool()
        assert torch.equal(p.weight, p.weight_orig * p.weight_mask) and p.weight.grad_fn is None
        assert bool((p.weight[~keep] == 0).all()) and int((~keep).sum()) == keep.numel() // 2
        assert bool((p.weight_orig[keep] != w0[keep]).all())  # every kept weight got an Adam step
    with torch.no_grad():
        out = [model(x) for x in data]
    make_permanent(model)
    with torch.no_grad():
        for x, o in zip(data, out):
            torch.testing.assert_close(model(x), o, rtol=0, atol=0)
