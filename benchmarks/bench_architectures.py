"""Prune real architectures (random init): time, peak memory and output error.

For ResNet-18 and MobileNetV2 (torchvision's layer structure, 32x32 inputs),
a ViT (transformers, 12 blocks, width 192, 32x32 images in 4x4 patches), the
same from torchvision and timm themselves (``tv_resnet18``,
``tv_mobilenet_v2``, ``timm_vit_tiny``: ViT-Tiny in 4x4 patches; not in the
default list) and
GPT-2 / Llama configurations with 4, 8 and 16 blocks (width 128, 64 tokens),
on 128 calibration samples: ``prune(method, sparsity=0.5)`` in the cascade
scheme with the block engine (``blocks=True``, the default) and, for the same
model and data in the same run, the network-level engine (``blocks=False``:
every layer captured over the whole network); with ``--engines ... before``
also an earlier cascade: commit ``--before`` (default ``959e790``, the last
commit before the block engine; ``c2e8181`` is the first release's cascade,
before any work on real architectures), checked out by ``git worktree`` into a
temporary folder and imported in place of this repository's package, after a
warm-up run on a tiny conv net that fills its compiled kernel cache. Image
batches are plain tensors, which every commit takes. Each run is a fresh
process, so its peak RSS is its own.
Printed per row: seconds, peak RSS (MiB), the relative output error
``||f_pruned(x) - f(x)|| / ||f(x)||`` on held-out inputs, and the speedups of
the block engine over the network engine and over the cascade before it;
then the exponent of time vs depth fitted on the 4/8/16-block models (1 =
linear).

Usage: ``python benchmarks/bench_architectures.py [--method iht] [--models ...] [--engines blocks network before]``
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from layertrim.bindings.torch.hf_imports import import_transformers

ROOT = Path(__file__).resolve().parent
SAMPLES, SEQ, VOCAB = 128, 64, 256
#: the last commit before the block engine, and where a run finds the checkout of ``--before``
BEFORE, BEFORE_ENV = "959e790", "LAYERTRIM_BEFORE"


def _lm(kind: str, depth: int):
    transformers = import_transformers()

    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=depth, n_embd=128, n_head=4, vocab_size=VOCAB, n_positions=SEQ,
                                         bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.LlamaConfig(num_hidden_layers=depth, hidden_size=128, intermediate_size=352,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB,
                                      max_position_embeddings=SEQ, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(config)


def _vit():
    transformers = import_transformers()

    config = transformers.ViTConfig(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=12,
                                    num_attention_heads=3, intermediate_size=768, num_labels=10)
    return transformers.ViTForImageClassification(config)


#: the same networks from torchvision and timm themselves (``pip install "layertrim[vision]"``)
LIBRARY_VISION = {
    "tv_resnet18": lambda v: v.torchvision_model("resnet18", num_classes=10),
    "tv_mobilenet_v2": lambda v: v.torchvision_model("mobilenet_v2", num_classes=10),
    "timm_vit_tiny": lambda v: v.timm_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10),
}


def _vision(name: str):
    """The vision model ``name``: a stand-in, transformers' ViT, or torchvision's / timm's own."""
    if name in LIBRARY_VISION:
        from layertrim.bindings.torch.examples import vision

        return LIBRARY_VISION[name](vision)
    sys.path.insert(0, str(ROOT))
    from _vision_models import MobileNetV2, ResNet18

    return {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2, "vit": _vit}[name]()


def build(name: str):
    """``(model, calibration batches, held-out batch)`` for a model name."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "tiny":
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
            batches = [torch.randn(16, 3, 32, 32, generator=gen) for _ in range(3)]
        elif name in ("resnet18", "mobilenet_v2", "vit", *LIBRARY_VISION):
            model = _vision(name)
            batches = [torch.randn(16, 3, 32, 32, generator=gen) for _ in range(SAMPLES // 16 + 1)]
        else:
            kind, depth = name.split("-")
            model = _lm(kind, int(depth))
            batches = [{"input_ids": torch.randint(0, VOCAB, (16, SEQ), generator=gen)}
                       for _ in range(SAMPLES // 16 + 1)]
    return model.eval(), batches[:-1], batches[-1]


def _output(model, batch):
    out = model(batch) if isinstance(batch, torch.Tensor) else model(**batch)
    return out if isinstance(out, torch.Tensor) else out.logits


def one(name: str, engine: str, method: str, refit: bool = True, threads: int = 2, damping: float = 0.0) -> dict:
    """One prune in this process (``threads`` in torch and numpy's BLAS): seconds, peak RSS,
    output error on a held-out batch, engine facts."""
    if engine == "before":
        _use_before(os.environ[BEFORE_ENV])
    from layertrim.bindings.torch import limit_threads, prune

    options = {} if engine == "before" else {"blocks": engine == "blocks", "damping": damping}
    with limit_threads(threads):
        return _one(name, engine, method, refit, prune, options)


def _one(name, engine, method, refit, prune, options) -> dict:
    model, calib, held = build(name)
    with torch.no_grad():
        dense = _output(model, held)
    start = time.perf_counter()
    report = prune(model, calib, method=method, sparsity=0.5, progress=False, refit=refit, **options)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        err = float((_output(model, held) - dense).norm() / dense.norm())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": name, "engine": engine, "seconds": seconds, "rss_mib": rss, "rel_error": err,
            "layers": len(report.layers), "skipped": len(getattr(report, "skipped", ())), **getattr(report, "engine", {})}


def _checkout_before(tmp: Path, commit: str) -> Path:
    """A package folder whose ``layertrim`` is ``commit`` (a git worktree in ``tmp``)."""
    subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "add", "--detach", "-f", str(tmp / "src"), commit],
                   check=True, capture_output=True)
    pkg = tmp / "pkg" / "layertrim"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").touch()
    for sub in ("solvers", "bindings"):
        (pkg / sub).symlink_to(tmp / "src" / sub)
    return tmp / "pkg"


def _use_before(folder: str) -> None:
    """Import ``layertrim`` from ``folder`` from now on (not the installed, editable package)."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                        and "editable" not in type(f).__module__.lower()]
    for key in [k for k in sys.modules if k == "layertrim" or k.startswith("layertrim.")]:
        del sys.modules[key]
    sys.path.insert(0, folder)


def _run(name, engine, method, timeout, refit, threads, damping):
    cmd = [sys.executable, __file__, "--one", name, "--engine", engine, "--method", method,
           "--threads", str(threads), "--damping", str(damping)] + ([] if refit else ["--no-refit"])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return {"model": name, "engine": engine, "seconds": math.inf, "note": f"over {timeout} s"}
    return json.loads(out.strip().splitlines()[-1])


def _ratio(base, row, timeout) -> str:
    """``base``'s seconds over ``row``'s ("" without a base row; a lower bound when the base timed out)."""
    if base is None:
        return ""
    if math.isfinite(base["seconds"]):
        return f"{base['seconds'] / row['seconds']:.1f}x"
    return f">{timeout / row['seconds']:.1f}x"


def _depth_exponent(rows, kind, engine):
    pts = [(int(r["model"].split("-")[1]), r["seconds"]) for r in rows
           if r["model"].startswith(kind + "-") and r["engine"] == engine and math.isfinite(r["seconds"])]
    if len(pts) < 2:
        return None
    xs, ys = [math.log(d) for d, _ in pts], [math.log(s) for _, s in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "vit", "gpt2-4", "gpt2-8",
                                                        "gpt2-16", "llama-4", "llama-8", "llama-16"])
    parser.add_argument("--engines", nargs="+", default=["blocks", "network"])
    parser.add_argument("--before", default=BEFORE, help="the commit the 'before' engine runs")
    parser.add_argument("--method", default="iht")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (slower runs are cut)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="no least-squares refit (magnitude then costs only the engine's passes)")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--damping", type=float, default=0.0,
                        help="prune(damping=): refit ridge toward the trained weights, relative to mean(diag(G))")
    parser.add_argument("--one")
    parser.add_argument("--engine", default="blocks")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.engine, args.method, args.refit, args.threads, args.damping)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if "before" in args.engines:
            os.environ[BEFORE_ENV] = str(_checkout_before(Path(tmp), args.before))
            _run("tiny", "before", args.method, args.timeout, args.refit, args.threads, args.damping)  # warm-up
        try:
            rows = [_run(m, e, args.method, args.timeout, args.refit, args.threads, args.damping)
                    for m in args.models for e in args.engines]
        finally:
            if "before" in args.engines:
                subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "remove", "--force", str(Path(tmp) / "src")],
                               check=False, capture_output=True)
    print(f"prune(method={args.method!r}, sparsity=0.5, refit={args.refit}, damping={args.damping}), cascade, "
          f"{SAMPLES} calibration samples, {args.threads} thread(s)"
          + (f", before = commit {args.before}" if "before" in args.engines else ""))
    print(f"{'model':14s} {'engine':8s} {'seconds':>9s} {'RSS MiB':>8s} {'out err':>8s} {'blocks':>6s} "
          f"{'passes':>6s} {'speedup':>8s} {'vs before':>9s}")
    by = {(r["model"], r["engine"]): r for r in rows}
    for r in rows:
        speed = [_ratio(by.get((r["model"], e)), r, args.timeout) if r["engine"] == "blocks" else ""
                 for e in ("network", "before")]
        print(f"{r['model']:14s} {r['engine']:8s} {r['seconds']:9.1f} {r.get('rss_mib', math.nan):8.0f} "
              f"{r.get('rel_error', math.nan):8.4f} {r.get('chain_blocks', 0):6d} {r.get('network_passes', 0):6d} "
              f"{speed[0]:>8s} {speed[1]:>9s}" + (f"  {r['note']}" if "note" in r else ""))
    for kind in ("gpt2", "llama"):
        for engine in args.engines:
            k = _depth_exponent(rows, kind, engine)
            if k is not None:
                print(f"time ~ depth^{k:.2f} for {kind} ({engine} engine)")


if __name__ == "__main__":
    main()
