"""A small byte-level Llama trained on the Python standard library's source.

No weights can be downloaded here, so the language model of the benchmarks and
the demo is trained on the fly: a ``transformers`` Llama (RMSNorm, RoPE, SwiGLU
MLP) over bytes (vocabulary 256) on the standard library's top-level ``*.py``
files (about 4.7 MB). The files, sorted by name, are split by index:
``i % 10 == 0`` held out (perplexity), ``i % 10 == 1`` calibration, the rest
training. The trained model is cached as a ``save_pretrained`` folder
(``$LAYERTRIM_CACHE`` or ``~/.cache/layertrim``).

Perplexity is ``exp(mean NLL)`` of next-byte prediction over non-overlapping
windows of ``seq_len`` bytes of the held-out text (the first byte of each
window is only context).
"""
from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import numpy as np
import torch

from ..hf_imports import import_transformers
from .mnist import cache_dir

VOCAB = 256
SPLITS = ("train", "calibration", "heldout")


def stdlib_bytes(split: str) -> np.ndarray:
    """The bytes of one split of the standard library's top-level sources, as uint8."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    wanted = {"heldout": 0, "calibration": 1}.get(split)
    chosen = [f for i, f in enumerate(files) if (i % 10 == wanted if wanted is not None else i % 10 > 1)]
    return np.frombuffer(b"\n".join(f.read_bytes() for f in chosen), dtype=np.uint8).copy()


def windows(data: np.ndarray, n: int, seq_len: int, seed: int) -> torch.Tensor:
    """``n`` random windows of ``seq_len`` bytes, as a ``(n, seq_len)`` long tensor (seeded)."""
    starts = np.random.default_rng(seed).integers(0, len(data) - seq_len, n)
    return torch.from_numpy(np.stack([data[s: s + seq_len] for s in starts]).astype(np.int64))


def calibration_batches(num_samples: int = 128, seq_len: int = 64, batch_size: int = 16, seed: int = 0) -> list:
    """Calibration data as users have it: dicts of ``input_ids`` windows from the calibration split."""
    ids = windows(stdlib_bytes("calibration"), num_samples, seq_len, seed)
    return [{"input_ids": chunk} for chunk in ids.split(batch_size)]


def llama_config(blocks: int = 4, hidden: int = 128, seq_len: int = 64):
    transformers = import_transformers()

    return transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=int(8 * hidden / 3 + 7) // 8 * 8,
        num_hidden_layers=blocks, num_attention_heads=max(hidden // 32, 1), num_key_value_heads=max(hidden // 32, 1),
        max_position_embeddings=seq_len, bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
    )


def train_llama(config, *, steps: int, seed: int = 0, batch_size: int = 16, lr: float = 3e-3):
    """Train a fresh Llama on the training split (AdamW, cosine schedule); seeded, global RNGs untouched."""
    transformers = import_transformers()

    data = stdlib_bytes("train")
    seq = config.max_position_embeddings
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        ids = windows(data, batch_size, seq, seed * 1_000_003 + step)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def trained_llama(seed: int = 0, *, blocks: int = 4, hidden: int = 128, seq_len: int = 64, steps: int = 2000,
                  batch_size: int = 16, cache: bool = True):
    """The benchmark language model, trained once per setting and cached as a Hugging Face folder."""
    transformers = import_transformers()

    path = cache_dir() / f"llama_stdlib_b{blocks}_h{hidden}_s{seq_len}_st{steps}x{batch_size}_seed{seed}"
    if cache and (path / "config.json").exists():
        return transformers.LlamaForCausalLM.from_pretrained(path).eval()
    model = train_llama(llama_config(blocks, hidden, seq_len), steps=steps, seed=seed, batch_size=batch_size)
    if cache:
        model.save_pretrained(path)
    return model


def perplexity(model, data: np.ndarray, seq_len: int = 64, batch_size: int = 16, max_windows: int | None = None):
    """``exp`` of the mean next-byte NLL over non-overlapping windows of ``data``."""
    n = (len(data) // seq_len) if max_windows is None else min(len(data) // seq_len, max_windows)
    ids = torch.from_numpy(data[: n * seq_len].astype(np.int64)).reshape(n, seq_len)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for chunk in ids.split(batch_size):
            logits = model(input_ids=chunk).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                                    reduction="sum")
            total, count = total + float(nll), count + chunk[:, 1:].numel()
    return math.exp(total / count)
