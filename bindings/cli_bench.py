"""``layertrim bench``: run the benchmark scripts of a source checkout and show their tables."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from layertrim.solvers.base.errors import ParameterError

from .cli_io import InputFileError

#: benchmarks/ sits next to bindings/ in a source checkout (editable install)
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def find_scripts(folder: Path | None = None) -> dict[str, Path]:
    """Benchmark scripts by name: ``bench_lasso.py`` is ``lasso`` (the file stem also works)."""
    folder = Path(folder) if folder is not None else DEFAULT_DIR
    if not folder.is_dir():
        raise InputFileError(
            f"no benchmarks folder at {folder}: the benchmarks ship with the source checkout, "
            "not with an installed package; install with `pip install -e .` from a clone or pass --dir"
        )
    scripts = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        scripts[path.stem.removeprefix("bench_")] = path
    if not scripts:
        raise InputFileError(f"{folder}: holds no benchmark scripts (*.py)")
    return scripts


def select(scripts: dict[str, Path], names) -> list[tuple[str, Path]]:
    """The scripts named in ``names`` (all when empty); ParameterError for an unknown name."""
    if not names:
        return list(scripts.items())
    by_stem = {path.stem: name for name, path in scripts.items()}
    chosen = []
    for name in names:
        key = name.removesuffix(".py")
        key = by_stem.get(key, key)
        if key not in scripts:
            raise ParameterError(f"unknown benchmark {name!r}; available: {', '.join(scripts)}")
        chosen.append((key, scripts[key]))
    return chosen


def has_quick_mode(path: Path) -> bool:
    """Whether the script declares a ``--quick`` option."""
    return "--quick" in path.read_text(encoding="utf-8", errors="replace")


def run(names=(), *, quick: bool = False, folder=None) -> int:
    """Run the chosen scripts one after another with this interpreter, their output shown as it comes.

    Returns the number of scripts that failed (a non-zero exit code).
    """
    chosen = select(find_scripts(folder), names)
    failed = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, path in chosen:
        cmd = [sys.executable, str(path)]
        note = ""
        if quick:
            if has_quick_mode(path):
                cmd.append("--quick")
            else:
                note = " (no quick mode: full run)"
        print(f"== {name}: {path.name}{note}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=path.parent, env=env, stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - start
        status = "ok" if proc.returncode == 0 else f"FAILED (exit code {proc.returncode})"
        print(f"== {name}: {status} in {elapsed:.1f} s\n", flush=True)
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}", file=sys.stderr)
    return len(failed)
