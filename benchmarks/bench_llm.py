"""Prune a small language model and report held-out perplexity, method against method.

The model is the byte-level Llama of
:mod:`layertrim.bindings.torch.examples.language_model` (trained here on the
standard library's source, cached). Every method prunes the same copy of it
on the same calibration set (``--samples`` windows of ``--seqlen`` bytes from
the calibration split), with the same uniform sparsity in every Linear layer
of the decoder blocks (embeddings and ``lm_head`` kept), in the cascade
scheme, without fine-tuning; perplexity on the held-out split. Baselines
written from their papers run in the same script: ``magnitude`` (no refit),
``wanda`` and ``sparsegpt``. When ``llmcompressor`` can be imported, its
``SparseGPTModifier`` and ``WandaPruningModifier`` run on the same model and
data through ``oneshot`` as an independent check of the two baselines;
otherwise the table says why not.

Usage: ``python benchmarks/bench_llm.py [--methods ...] [--patterns unstructured 2:4] [--sparsities 0.5 0.6 0.7 0.8]
[--steps 2000] [--no-peers]``
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import threading
import time
from pathlib import Path

import torch

from layertrim.bindings.torch import limit_threads, make_permanent, prune
from layertrim.bindings.torch.examples import language_model as lm
from layertrim.bindings.torch.hf_imports import import_transformers

PEERS = {"sparsegpt": "SparseGPTModifier", "wanda": "WandaPruningModifier"}
#: row label -> (method, solver options)
METHODS = {"magnitude": ("magnitude", {}), "wanda": ("wanda", {}), "sparsegpt": ("sparsegpt", {}),
           "iht": ("iht", {}), "iht+swaps": ("iht", {"swaps": True}), "l0": ("l0", {})}


class PeakRSS:
    """Peak resident memory (MiB) while the block runs, sampled every 10 ms from /proc (nan elsewhere)."""

    def __enter__(self):
        self.peak, self.stop = math.nan, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        page = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self.stop.is_set():
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * page
            except OSError:
                return
            self.peak = rss if math.isnan(self.peak) else max(self.peak, rss)
            self.stop.wait(0.01)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _ours(model, calib, label, pattern, sparsity):
    method, options = METHODS[label]
    start = time.perf_counter()
    prune(model, calib, method=method, sparsity=sparsity, pattern=pattern,
          layers="model.layers.*", refit=method != "magnitude", progress=False, **options)
    make_permanent(model)
    return time.perf_counter() - start


def _llmcompressor(model, calib, method, pattern, sparsity):
    """The same prune through llmcompressor's ``oneshot`` (raises ImportError when it is not installed)."""
    import llmcompressor
    from datasets import Dataset
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    cls = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[method]
    mask = "0:0" if pattern == "unstructured" else pattern
    recipe = cls(sparsity=sparsity, mask_structure=mask, targets=[r"re:model\.layers\.\d+\..*_proj$"],
                 ignore=["lm_head"])
    rows = torch.cat([b["input_ids"] for b in calib])
    data = Dataset.from_dict({"input_ids": rows.tolist(), "attention_mask": torch.ones_like(rows).tolist()})
    start = time.perf_counter()
    llmcompressor.oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(rows),
                          max_seq_length=rows.shape[1], processor=_byte_tokenizer())
    return time.perf_counter() - start


def _byte_tokenizer():
    """A transformers tokenizer whose ids are byte values (the model is byte level); oneshot requires one."""
    transformers = import_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=bytes_to_unicode()[0])


def _zeros(model) -> float:
    ws = [m.weight for n, m in model.named_modules() if n.startswith("model.layers.") and isinstance(m, torch.nn.Linear)]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--patterns", nargs="+", default=["unstructured", "2:4"])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8],
                        help="targets of the unstructured rows (N:M fixes its own)")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the llmcompressor rows")
    parser.add_argument("--steps", type=int, default=2000, help="training steps of the model (cached)")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=512)
    args = parser.parse_args(argv)
    limit_threads(2)
    torch.set_num_threads(2)
    start = time.perf_counter()
    dense = lm.trained_llama(steps=args.steps)
    print(f"model: byte-level Llama, {dense.config.num_hidden_layers} blocks, width {dense.config.hidden_size} "
          f"(trained or loaded in {time.perf_counter() - start:.0f} s)")
    heldout = lm.stdlib_bytes("heldout")
    ppl = lambda m: lm.perplexity(m, heldout, seq_len=args.seqlen, max_windows=args.eval_windows)  # noqa: E731
    calib = lm.calibration_batches(args.samples, args.seqlen)
    print(f"calibration: {args.samples} x {args.seqlen} bytes; perplexity on {args.eval_windows} held-out windows")
    print(f"dense perplexity {ppl(dense):.3f}")
    print(f"{'pattern':12s} {'method':22s} {'sparsity':>8s} {'perplexity':>10s} {'seconds':>8s} {'peak MiB':>8s}")
    settings = [(p, s) for p in args.patterns for s in ([None] if ":" in p else args.sparsities)]
    for pattern, sparsity in settings:
        for method in args.methods:
            model = copy.deepcopy(dense)
            with PeakRSS() as mem:
                seconds = _ours(model, calib, method, pattern, sparsity)
            print(f"{pattern:12s} {method:22s} {_zeros(model):8.3f} {ppl(model):10.3f} {seconds:8.1f} "
                  f"{mem.peak:8.0f}", flush=True)
        for method in PEERS if args.peers else ():
            model = copy.deepcopy(dense)
            try:
                with PeakRSS() as mem:
                    seconds = _llmcompressor(model, calib, method, pattern, sparsity or 0.5)
            except ImportError as exc:
                print(f"{pattern:12s} llmcompressor {method}: not run ({exc})")
                continue
            print(f"{pattern:12s} {'llmcompressor ' + method:22s} {_zeros(model):8.3f} {ppl(model):10.3f} "
                  f"{seconds:8.1f} {mem.peak:8.0f}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
