"""``layertrim prune`` on a Hugging Face causal language model folder.

The model folder is what ``save_pretrained`` wrote (``config.json`` plus
weights). Calibration is ``--nsamples`` windows of ``--seqlen`` tokens,
drawn (seeded) from a text file (tokenized with the folder's tokenizer, or
read as bytes when the folder has none and the vocabulary holds 256 byte
values) or from a ``.npy`` file of token ids (a 1-D stream or rows of
sequences). The pruned model is written with ``save_pretrained`` to the
``--out`` folder (masks folded into plain weights, config unchanged), the
report beside it as ``layertrim_report.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from layertrim.solvers.base.errors import ParameterError

from .cli_io import InputFileError, existing_file, first_line

REPORT_NAME = "layertrim_report.json"


def is_model_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_causal_lm(path):
    from .torch.hf_imports import import_transformers

    transformers = import_transformers()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"{path}: not a loadable Hugging Face causal LM folder ({first_line(exc)})") from None


def _token_stream(model_dir, path: Path, vocab: int) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputFileError(f"{path}: not a readable .npy file ({first_line(exc)})") from None
        if ids.dtype.kind not in "iu":
            raise InputFileError(f"{path}: token ids must be integers, got dtype {ids.dtype}")
        return ids.reshape(-1)
    text = path.read_bytes()
    if (Path(model_dir) / "tokenizer_config.json").is_file():
        from .torch.hf_imports import import_transformers

        transformers = import_transformers()
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        return np.asarray(tokenizer(text.decode("utf-8", errors="replace"))["input_ids"])
    if vocab < 256:
        raise ParameterError(f"{model_dir} has no tokenizer and a vocabulary of {vocab} < 256: "
                             "pass token ids as a .npy file")
    return np.frombuffer(text, dtype=np.uint8).astype(np.int64)


def calibration(model_dir, data, vocab: int, nsamples: int, seqlen: int, batch_size: int, seed: int = 0) -> list:
    """``nsamples`` seeded windows of ``seqlen`` tokens as ``{"input_ids": ...}`` batches."""
    import torch

    if nsamples < 1 or seqlen < 2:
        raise ParameterError(f"--nsamples must be >= 1 and --seqlen >= 2, got {nsamples} and {seqlen}")
    ids = _token_stream(model_dir, existing_file(data), vocab)
    if len(ids) <= seqlen:
        raise InputFileError(f"{data}: {len(ids)} tokens, fewer than --seqlen {seqlen} + 1")
    if ids.min() < 0 or ids.max() >= vocab:
        raise InputFileError(f"{data}: token ids outside the model's vocabulary [0, {vocab})")
    starts = np.random.default_rng(seed).integers(0, len(ids) - seqlen, nsamples)
    rows = torch.from_numpy(np.stack([ids[s: s + seqlen] for s in starts]).astype(np.int64))
    return [{"input_ids": chunk} for chunk in rows.split(batch_size)]


def main(args) -> dict:
    """Prune the model folder ``args.model``; write the pruned folder and its report."""
    from .torch import make_permanent, prune

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputFileError(f"--out {out}: must be a new or empty folder for a Hugging Face model")
    model = load_causal_lm(args.model)
    batches = calibration(args.model, args.data, model.config.vocab_size, args.nsamples, args.seqlen,
                          args.batch_size)
    sparsity = None if ":" in args.pattern and args.sparsity is None else args.sparsity
    report = prune(model, batches, method=args.method, sparsity=sparsity, scheme=args.scheme, pattern=args.pattern,
                   layers=args.layers, ignore=args.ignore, progress=True)
    print(report)
    make_permanent(model)
    model.save_pretrained(out)
    summary = {"model": str(args.model), "data": str(args.data), "method": args.method,
               "target_sparsity": sparsity, "pattern": args.pattern,
               "calibration": {"samples": args.nsamples, "seqlen": args.seqlen}, "output": str(out),
               "report": report.to_dict()}
    (out / REPORT_NAME).write_text(json.dumps(summary, indent=2))
    print(f"pruned model: {out} (load with from_pretrained); report: {out / REPORT_NAME}")
    return summary
