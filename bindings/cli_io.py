"""Reading the command line's input files: layer problems (``.npz``) and
arrays of calibration data (``.npy``, ``.npz``, ``.pt``), with one clear error
for a missing, unreadable or malformed file."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from layertrim.solvers.base.errors import LayerTrimError
from layertrim.solvers.base.validation import check_array, check_xy


class InputFileError(LayerTrimError, OSError):
    """A file named on the command line is missing, unreadable or not in the expected format."""


def existing_file(path) -> Path:
    """``path`` as a Path, or InputFileError when it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if not p.is_file():
        raise InputFileError(f"{p}: not a file")
    return p


def load_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` archive (no pickled objects allowed)."""
    p = existing_file(path)
    try:
        data = np.load(p, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputFileError(f"{p}: expected an .npz archive (np.savez(path, X=..., Y=...)), found a single array")
        with data:
            return {key: data[key] for key in data.files}
    except InputFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{p}: not a readable .npz archive ({exc})") from exc


def load_layer_problem(path):
    """``(X, Y, extras)`` from an ``.npz`` holding ``X (P, N)`` and ``Y (P, M)``.

    ``extras`` holds the archive's other arrays (e.g. ``V`` for Net-Trim's
    cascade bound). ``X`` and ``Y`` go through :func:`check_xy` (shapes, NaN/Inf).
    """
    arrays = load_npz(path)
    missing = [k for k in ("X", "Y") if k not in arrays]
    if missing:
        raise InputFileError(
            f"{path}: the archive must hold arrays named X and Y; missing {', '.join(missing)} "
            f"(found: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    X, Y = check_xy(arrays.pop("X"), arrays.pop("Y"))
    return X, Y, arrays


def load_inputs(path, key: str | None = None) -> np.ndarray:
    """Calibration inputs from ``.npy``, ``.npz`` (array ``key``, else ``X``, else the only one) or ``.pt``.

    A ``.pt`` file may hold a tensor, or a tuple/list whose first item is the
    inputs (as ``(inputs, targets)``), or a dict with key ``key`` / ``"X"``; it is
    read with ``torch.load(weights_only=True)``. The first axis indexes samples.
    Returns a float32 array (float64 data stays float64) without NaN/Inf.
    """
    p = existing_file(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        arrays = load_npz(p)
        arr = _pick(arrays, key, p)
    elif suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputFileError(f"{p}: not a readable .npy array ({exc})") from exc
    elif suffix in (".pt", ".pth"):
        arr = _load_pt_inputs(p, key)
    else:
        raise InputFileError(f"{p}: unsupported calibration file type {suffix!r} (use .npy, .npz or .pt)")
    arr = np.asarray(arr)
    if arr.ndim < 2:
        raise InputFileError(f"{p}: calibration inputs need a sample axis and feature axes, got shape {arr.shape}")
    flat = check_array(arr.reshape(arr.shape[0], -1), f"calibration inputs in {p.name}")
    return flat.reshape(arr.shape)


def _pick(arrays: dict, key: str | None, p: Path) -> np.ndarray:
    if key is not None:
        if key not in arrays:
            raise InputFileError(f"{p}: no array named {key!r} (found: {', '.join(sorted(arrays))})")
        return arrays[key]
    if "X" in arrays:
        return arrays["X"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise InputFileError(
        f"{p}: holds several arrays ({', '.join(sorted(arrays))}); name the inputs X or pass --data-key"
    )


def _load_pt_inputs(p: Path, key: str | None) -> np.ndarray:
    import pickle

    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputFileError(f"{p}: not a readable torch file of tensors ({first_line(exc)})") from exc
    if isinstance(obj, (tuple, list)) and obj:
        obj = obj[0]
    elif isinstance(obj, dict):
        obj = _pick(obj, key, p)
    if not isinstance(obj, torch.Tensor):
        raise InputFileError(f"{p}: expected a tensor of inputs, found {type(obj).__name__}")
    return obj.detach().cpu().numpy()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
