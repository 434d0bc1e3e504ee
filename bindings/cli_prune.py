"""``layertrim prune``: load a saved torch model and calibration inputs, prune
the model layer by layer, write it in sparse form plus a JSON report.

Model files are read with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers; a pickled full model (whose loading
runs code from the file) needs the explicit ``--unsafe-load``.
"""
from __future__ import annotations

import importlib
import json
import pickle
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from layertrim.solvers.base.errors import ParameterError, ShapeError

from .cli_io import InputFileError, first_line, existing_file, load_inputs

UNSAFE_WARNING = (
    "layertrim prune: warning: --unsafe-load unpickles {path} with weights_only=False, which runs "
    "code stored in the file; use it only for files you trust"
)


def build_from_factory(spec: str) -> nn.Module:
    """Call the function named by ``"module:function"`` (the current folder is importable)."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ParameterError(f"--factory must look like module:function, got {spec!r}")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ParameterError(f"--factory {spec}: cannot import {module_name!r} ({exc})") from exc
    finally:
        if added:
            sys.path.remove(cwd)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ParameterError(f"--factory {spec}: {module_name} has no function {func_name!r}")
    try:
        model = func()
    except Exception as exc:  # the user's code failed: a user error, not a defect of layertrim
        raise ParameterError(f"--factory {spec} raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ParameterError(f"--factory {spec} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _torch_load(p: Path, unsafe: bool):
    if unsafe:
        print(UNSAFE_WARNING.format(path=p), file=sys.stderr)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of damaged files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(p, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as exc:
        if not unsafe and "Unsupported global" in str(exc):
            raise InputFileError(
                f"{p}: holds pickled objects (a full model?) that load only with --unsafe-load, which runs "
                "code from the file; for files you do not fully trust save model.state_dict() instead "
                "and pass --factory module:function"
            ) from exc
        raise InputFileError(f"{p}: not a readable torch file ({first_line(exc)})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ModuleNotFoundError) as exc:
        raise InputFileError(f"{p}: not a readable torch file ({first_line(exc)})") from exc


def load_model(path, factory: str | None = None, unsafe: bool = False) -> nn.Module:
    """A model from a full-model file, or from a state dict (plain or sparse) plus a factory."""
    from .torch import load_sparse
    from .torch.storage import FORMAT

    p = existing_file(path)
    obj = _torch_load(p, unsafe)
    if isinstance(obj, nn.Module):
        if factory is not None:
            raise ParameterError(f"{p} holds a full model; --factory is only for state-dict files")
        return obj
    if not isinstance(obj, dict):
        raise InputFileError(f"{p}: expected a model or a state dict, found {type(obj).__name__}")
    if factory is None:
        raise ParameterError(f"{p} holds a state dict: pass --factory module:function that builds the model")
    model = build_from_factory(factory)
    if obj.get("format") == FORMAT:
        load_sparse(p, model)
        return model
    try:
        model.load_state_dict(obj)
    except RuntimeError as exc:
        raise ShapeError(f"the state dict in {p} does not fit the model from {factory}: "
                         f"{' '.join(str(exc).split())}") from exc
    return model


def calibration_batches(model: nn.Module, path, key=None, batch_size: int = 256) -> list:
    """Calibration inputs as a list of tensors in the model's dtype, checked by one forward pass."""
    X = load_inputs(path, key)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be at least 1, got {batch_size}")
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    X = torch.from_numpy(X).to(dtype)
    model.eval()
    try:
        with torch.no_grad():
            model(X[:2])
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ShapeError(f"the model rejects calibration inputs of shape {tuple(X.shape[1:])} per sample: "
                         f"{first_line(exc)}") from exc
    return list(X.split(batch_size))


def report_path(out: Path) -> Path:
    """Where the JSON report of a model written to ``out`` goes: ``out`` with suffix ``.json``."""
    path = out.with_suffix(".json")
    if path == out:
        raise ParameterError(f"--out {out}: name the model file with another suffix than .json (e.g. .pt)")
    return path


def main(args) -> dict:
    """Run ``layertrim prune`` with parsed ``args``; return the JSON report as a dict."""
    from .torch import prune, save_sparse
    from .torch.storage import check_writable

    out = Path(args.out)
    json_path = report_path(out)
    for path in (out, json_path):  # before the prune runs: its result must not be lost
        try:
            check_writable(path)
        except ParameterError as exc:
            raise InputFileError(f"--out: {exc}") from None
    model = load_model(args.model, args.factory, args.unsafe_load)
    batches = calibration_batches(model, args.data, args.data_key, args.batch_size)
    report = prune(model, batches, method=args.method, sparsity=args.sparsity, scheme=args.scheme,
                   pattern=args.pattern, layers=args.layers, ignore=args.ignore, progress=True)
    print(report)
    save_sparse(model, out)
    summary = {
        "model": str(args.model),
        "data": str(args.data),
        "method": args.method,
        "target_sparsity": args.sparsity,
        "calibration_samples": sum(len(b) for b in batches),
        "output": str(out),
        "report": report.to_dict(),
    }
    json_path.write_text(json.dumps(summary, indent=2))
    print(f"pruned model: {out} ({out.stat().st_size:,} bytes; load with "
          "layertrim.bindings.torch.load_sparse(path, model))")
    print(f"report: {json_path}")
    return summary
