"""Real architectures: GPT-2 (transformers Conv1D), Llama, nn.TransformerEncoder
(MultiheadAttention), HF batches with padding, half precision, multi-argument
forwards, layer selection, N:M misfits, and the block-by-block cascade
(same result as the network-level one, forwards linear in depth)."""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch import nn  # noqa: E402

from layertrim.bindings.torch import capture, prune  # noqa: E402
from layertrim.bindings.torch.batches import model_batches  # noqa: E402
from layertrim.bindings.torch.blocks import trace_calls  # noqa: E402
from layertrim.solvers import LayerTrimError, ParameterError, ShapeError  # noqa: E402
from seeding import torch_generator, torch_seed  # noqa: E402

layer_solve = importlib.import_module("layertrim.bindings.torch.layer_solve")
cascade = importlib.import_module("layertrim.bindings.torch.cascade")
VOCAB = 64


def gpt2(seed, n_layer=2):
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    with torch_seed(seed):
        return transformers.GPT2LMHeadModel(config).eval()


def llama(seed, n_layer=2, dtype=torch.float32):
    config = transformers.LlamaConfig(num_hidden_layers=n_layer, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=2, num_key_value_heads=2, vocab_size=VOCAB,
                                      max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                      tie_word_embeddings=True)
    with torch_seed(seed):
        return transformers.LlamaForCausalLM(config).to(dtype).eval()


def token_batches(seed, n=2, batch=4, length=12):
    gen = torch_generator(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (batch, length), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return out


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model, before):
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("make", [gpt2, llama])
@pytest.mark.parametrize("method, pattern", [("magnitude", "unstructured"), ("iht", "2:4")])
def test_language_models_reach_sparsity_and_keep_the_tied_embedding(make, method, pattern, seed):
    model = make(seed)
    embedding = model.get_input_embeddings().weight.detach().clone()
    report = prune(model, token_batches(seed), method=method, sparsity=0.5, pattern=pattern, progress=False)
    names = [r.name for r in report.layers]
    assert names and not any("lm_head" in n or "wte" in n or "embed" in n for n in names)
    blocks = "transformer.h." if make is gpt2 else "model.layers."
    assert all(n.startswith(blocks) for n in names)
    assert len(names) == (8 if make is gpt2 else 14)  # 4 (Conv1D) / 7 (Linear) layers per block
    for r in report.layers:
        assert r.zeros == r.total // 2, r.name  # 50% exactly (2:4 and even counts)
    assert torch.equal(model.get_input_embeddings().weight, embedding)
    assert report.engine["chain_blocks"] >= 2 and report.engine["network_passes"] == 0


def test_tied_head_named_explicitly_is_skipped_and_untouched(seed):
    model = llama(seed)
    embedding = model.get_input_embeddings().weight.detach().clone()
    report = prune(model, token_batches(seed), method="magnitude", sparsity=0.5, layers=["lm_head", "re:.*down_proj"],
                   progress=False)
    assert "lm_head" in report.skipped and "tied" in report.skipped["lm_head"]
    assert [r.name for r in report.layers] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert torch.equal(model.get_input_embeddings().weight, embedding)


def _gram(model, batches, layer):
    (ld,) = capture(model, batches, layers=[layer]).values()
    return ld.groups[0]


def test_padded_positions_are_left_out_of_every_statistic(seed):
    """Right padding under causal attention leaves the real tokens' states unchanged, so the
    statistics of a padded batch with its mask equal those of the sequences run one by one."""
    model = llama(seed)
    gen = torch_generator(seed)
    lengths = [12, 7, 3]
    seqs = [torch.randint(1, VOCAB, (n,), generator=gen) for n in lengths]
    ids = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    padded = [{"input_ids": ids, "attention_mask": mask}]
    single = [{"input_ids": s[None], "attention_mask": torch.ones(1, len(s), dtype=torch.long)} for s in seqs]
    for layer in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        a, b = _gram(model, padded, layer), _gram(model, single, layer)
        assert a.n_samples == b.n_samples == sum(lengths)
        # float32 forwards of the same tokens in different batch shapes: ~1e-6 relative noise per entry
        scale = np.abs(b.xtx()).max()
        np.testing.assert_allclose(a.xtx(), b.xtx(), rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(a.xty(), b.xty(), rtol=1e-4, atol=1e-5 * np.abs(b.xty()).max())


def test_captured_statistics_equal_a_direct_computation(seed):
    """GPT-2's Conv1D stores W as (in, out); the Gram of its input rows is computed here by hand."""
    model = gpt2(seed)
    batches = token_batches(seed)
    layer = "transformer.h.1.mlp.c_proj"
    rows = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, o: rows.append((a[0].reshape(-1, a[0].shape[-1]),
                                                                       o.reshape(-1, o.shape[-1]))))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    handle.remove()
    X = torch.cat([r[0] for r in rows]).double().numpy()
    Y = torch.cat([r[1] for r in rows]).double().numpy()
    stats = _gram(model, batches, layer)
    # float32 rows accumulated in float64 by both sides: agreement to ~1e-7 relative, 1e-5 leaves room
    np.testing.assert_allclose(stats.xtx(), X.T @ X, rtol=1e-5, atol=1e-6 * np.abs(X.T @ X).max())
    np.testing.assert_allclose(stats.xty(), X.T @ Y, rtol=1e-5, atol=1e-6 * np.abs(X.T @ Y).max())


def test_dict_and_batch_encoding_batches_give_the_same_prune(seed):
    batches = token_batches(seed)
    encoded = [transformers.BatchEncoding({k: v for k, v in b.items() if k != "labels"}) for b in batches]
    a, b = llama(seed), llama(seed)
    prune(a, batches, method="iht", sparsity=0.5, progress=False)
    prune(b, encoded, method="iht", sparsity=0.5, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def _encoder(seed, n_layer=2):
    with torch_seed(seed):
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        return nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False).eval()


def test_multihead_attention_out_projection_is_captured_and_pruned(seed):
    model = _encoder(seed)
    gen = torch_generator(seed)
    data = [torch.randn(4, 6, 16, generator=gen) for _ in range(2)]
    layer = "layers.0.self_attn.out_proj"
    outputs = []
    attn = model.layers[0].self_attn
    handle = attn.register_forward_hook(lambda m, a, o: outputs.append(o[0].reshape(-1, 16)))
    (ld,) = capture(model, data, layers=[layer], mode="rows").values()
    handle.remove()
    X, Y = ld.groups[0]
    # Y is the projection of the recovered attention output; it must be what the fused path returned
    np.testing.assert_allclose(Y, torch.cat(outputs).numpy(), rtol=1e-5, atol=1e-5)
    W, b = attn.out_proj.weight.detach().numpy(), attn.out_proj.bias.detach().numpy()
    np.testing.assert_allclose(X @ W.T + b, Y, rtol=1e-5, atol=1e-5)
    report = prune(model, data, method="iht", sparsity=0.5, progress=False)
    assert {f"layers.{i}.{n}" for i in range(2) for n in ("self_attn.out_proj", "linear1", "linear2")} == \
        {r.name for r in report.layers}
    assert all(r.zeros == r.total // 2 for r in report.layers)


def test_block_cascade_equals_the_network_cascade(seed):
    batches = token_batches(seed)
    a, b = llama(seed), llama(seed)
    ra = prune(a, batches, method="iht", sparsity=0.5, progress=False)
    rb = prune(b, batches, method="iht", sparsity=0.5, progress=False, blocks=False)
    assert ra.engine["chain_blocks"] == 2 and rb.engine["network_passes"] == len(rb.layers)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        # identical float32 operations in both engines; atol covers a reordered reduction
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)


def test_kept_and_recomputed_block_targets_give_the_same_weights(seed, monkeypatch):
    # one dense pass per block keeps every layer's targets; over TARGET_BYTES each group
    # runs the dense block again (solved layers swapped back): the same float32 outputs
    batches = token_batches(seed)
    a, b = llama(seed), llama(seed)
    ra = prune(a, batches, method="iht", sparsity=0.5, progress=False)
    monkeypatch.setattr(cascade, "TARGET_BYTES", 0)
    rb = prune(b, batches, method="iht", sparsity=0.5, progress=False)
    assert ra.engine["target_bytes"] > 0 and rb.engine["target_bytes"] == 0
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_layers_fed_one_tensor_share_their_statistics(seed, monkeypatch):
    # q/k/v and gate/up of each block are captured as one problem: the weights of layers
    # captured one by one, up to the order of float64 sums (reordered reduction: atol)
    batches = token_batches(seed)
    shared_input = importlib.import_module("layertrim.bindings.torch.shared_input")
    groups = []
    results = shared_input.SharedCollector.results
    monkeypatch.setattr(shared_input.SharedCollector, "results",
                        lambda self, relu_of: groups.append(self.names) or results(self, relu_of))
    a, b = llama(seed), llama(seed)
    prune(a, batches, method="magnitude", sparsity=0.5, progress=False)
    assert groups == [[f"model.layers.{i}.{n}" for n in names] for i in range(2)
                      for names in (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                    ["mlp.gate_proj", "mlp.up_proj"])]
    monkeypatch.setattr(cascade, "shares_input", lambda modules, modes: False)
    prune(b, batches, method="magnitude", sparsity=0.5, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)


def _block_forwards(n_layer, seed, blocks):
    model = llama(seed, n_layer)
    calls = {"n": 0}
    for layer in model.model.layers:
        layer.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))
    prune(model, token_batches(seed, n=1), method="magnitude", sparsity=0.5, progress=False, blocks=blocks)
    return calls["n"]


def test_block_forwards_grow_linearly_with_depth(seed):
    ratio = _block_forwards(8, seed, True) / _block_forwards(4, seed, True)
    assert ratio <= 2.2
    # the network-level cascade re-runs every block for every layer: quadratic
    assert _block_forwards(8, seed, False) / _block_forwards(4, seed, False) > 3.5


def _down_proj_calls(seed, n_batches):
    model = llama(seed)
    calls = {"n": 0}
    for layer in model.model.layers:
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))
    prune(model, token_batches(seed, n=n_batches), method="magnitude", sparsity=0.5, progress=False)
    return calls["n"]


def test_group_captures_stop_once_the_group_has_been_called(seed):
    # down_proj ends a Llama block. From the second batch on, the captures of the
    # groups before it (q/k/v, o, gate/up) stop before reaching it, so each further
    # batch calls it, per block: once in the dense pass that gives every layer's
    # targets (and advances the dense stream), once for its own group's inputs, and
    # once advancing the pruned stream past every block but the last; recording the
    # first block's inputs skips the blocks: 3 + 2 = 5 calls per batch (6 when each
    # group ran the dense block for its own targets, 17 if every capture also ran
    # whole blocks, 7 if recording the inputs ran them: blocks that return more than a tensor,
    # as transformers' decoder layers did before 4.54, are not skipped)
    first = next(iter(model_batches(llama(seed), token_batches(seed, n=1), torch.device("cpu"))))
    skipped = next(c for c in trace_calls(llama(seed), first) if c.name == "model.layers.0").plain
    assert _down_proj_calls(seed, 3) - _down_proj_calls(seed, 1) == 2 * (5 if skipped else 7)


def test_failure_half_way_leaves_the_model_bit_identical(seed, monkeypatch):
    model = llama(seed)
    before = _state(model)
    real, calls = layer_solve.solve_group, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("solver crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_solve, "solve_group", flaky)
    with pytest.raises(RuntimeError, match="solver crashed"):
        prune(model, token_batches(seed), method="iht", sparsity=0.5, progress=False)
    _assert_same(model, before)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_bfloat16_in_bfloat16_out(seed):
    model = llama(seed, dtype=torch.bfloat16)
    report = prune(model, token_batches(seed), method="magnitude", sparsity=0.5, progress=False)
    for r in report.layers:
        module = dict(model.named_modules())[r.name]
        assert module.weight.dtype == torch.bfloat16
        assert int((module.weight == 0).sum()) == r.zeros == r.total // 2


def test_layer_selection_by_glob_regex_and_ignore(seed):
    model = llama(seed)
    batches = token_batches(seed)
    report = prune(model, batches, method="magnitude", sparsity=0.5, layers="model.layers.*.mlp.*",
                   ignore="re:.*\\.1\\..*", progress=False)
    assert [r.name for r in report.layers] == [f"model.layers.0.mlp.{n}" for n in ("gate_proj", "up_proj",
                                                                                    "down_proj")]
    with pytest.raises(ParameterError, match="matches no prunable layer; prunable layers are"):
        prune(model, batches, method="magnitude", sparsity=0.5, layers="*.mlp.nothing", progress=False)
    with pytest.raises(ParameterError, match="no layer is left to prune"):
        prune(model, batches, method="magnitude", sparsity=0.5, ignore="*", progress=False)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, y):
        return self.head(torch.relu(self.a(x) + self.b(y)))


def test_model_with_several_positional_inputs(seed):
    with torch_seed(seed):
        model = _TwoInputs()
    gen = torch_generator(seed)
    data = [((torch.randn(16, 6, generator=gen), torch.randn(16, 4, generator=gen)), torch.zeros(16))
            for _ in range(2)]
    report = prune(model, data, method="iht", sparsity=0.5, progress=False)
    assert {r.name for r in report.layers} == {"a", "b", "head"}
    assert all(r.zeros == r.total // 2 for r in report.layers)


def test_layers_that_cannot_hold_two_four_are_left_dense_or_refused(seed):
    with torch_seed(seed):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(),
                              nn.Conv2d(8, 4, 1))
    data = [torch.randn(2, 3, 9, 9, generator=torch_generator(seed))]
    before = _state(model)
    with pytest.raises(ShapeError, match=r"layer '0'.*multiple of 4"):
        prune(model, data, method="magnitude", pattern="2:4", strict=True, progress=False)
    _assert_same(model, before)
    report = prune(model, data, method="magnitude", pattern="2:4", progress=False)
    assert set(report.skipped) == {"0", "2"}  # 27 and 9 inputs per output
    assert "left dense" in report.skipped["0"] and "(27)" in report.skipped["0"]
    assert [r.name for r in report.layers] == ["4"]
    # 2:4 along the 8 inputs: at most 2 nonzeros per group of 4 (the refit may zero more: dead ReLU inputs)
    groups = model[4].weight.detach().reshape(4, 2, 4)
    assert int((groups != 0).sum(-1).max()) <= 2
    assert torch.equal(model[0].weight, before["0.weight"])


def test_batches_the_model_cannot_take_are_a_clear_error(seed):
    model = llama(seed)
    with pytest.raises(LayerTrimError, match="no model input among its keys"):
        prune(model, [{"labels": torch.zeros(2, 4, dtype=torch.long)}], method="magnitude", sparsity=0.5,
              progress=False)


def test_num_samples_takes_the_first_samples_and_cuts_the_last_batch(seed):
    batches = token_batches(seed, n=3, batch=4)
    a, b = llama(seed), llama(seed)
    ra = prune(a, batches, method="magnitude", sparsity=0.5, num_samples=6, progress=False)
    cut = [batches[0], {k: v[:2] for k, v in batches[1].items()}]
    rb = prune(b, cut, method="magnitude", sparsity=0.5, progress=False)
    assert ra.layers[0].info["rows_seen"] == 6 * 12 == rb.layers[0].info["rows_seen"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(ParameterError, match="num_samples"):
        prune(a, batches, method="magnitude", sparsity=0.5, num_samples=0, progress=False)


def test_max_tokens_counts_the_real_tokens_and_keeps_whole_samples(seed):
    batches = token_batches(seed, n=2, batch=4)
    batches[0]["attention_mask"][:, 8:] = 0  # 8 real tokens in each sample of the first batch
    a, b = llama(seed), llama(seed)
    ra = prune(a, batches, method="magnitude", sparsity=0.5, max_tokens=8 * 4 + 12 * 2 + 5, progress=False)
    cut = [batches[0], {k: v[:2] for k, v in batches[1].items()}]  # 32 + 24 tokens; a third sample would cross
    rb = prune(b, cut, method="magnitude", sparsity=0.5, progress=False)
    assert ra.layers[0].info["rows_seen"] == 8 * 4 + 12 * 2 == rb.layers[0].info["rows_seen"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(LayerTrimError, match="max_tokens=5 holds no whole sample"):
        prune(a, batches, method="magnitude", sparsity=0.5, max_tokens=5, progress=False)


def test_per_block_type_sparsity_by_glob(seed):
    model = llama(seed)
    report = prune(model, token_batches(seed), method="magnitude", refit=False, progress=False,
                   sparsity={"*.mlp.*": 0.75, "*.self_attn.*": 0.25, "model.layers.1.mlp.down_proj": 0.5})
    for r in report.layers:
        want = 0.5 if r.name == "model.layers.1.mlp.down_proj" else (0.75 if ".mlp." in r.name else 0.25)
        assert r.zeros == int(want * r.total), r.name
    with pytest.raises(ParameterError, match=r"sparsity names layers \['\*.nothing'\]"):
        prune(model, token_batches(seed), method="magnitude", sparsity={"*.nothing": 0.5}, progress=False)
