"""The installed distribution, imported from outside the repository."""
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_from_outside_repo(tmp_path):
    code = (
        "import layertrim.solvers as s, layertrim.solvers.reference as r, layertrim.bindings as b\n"
        "assert callable(s.lasso) and callable(s.lam_max) and callable(r.lasso) and callable(r.lasso_osqp)\n"
        "print(s.__file__); print(b.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    solvers_file, bindings_file = map(Path, out.stdout.split())
    # the package-dir mapping: layertrim.solvers lives in solvers/, bindings in bindings/
    assert solvers_file.parent.name == "solvers" and bindings_file.parent.name == "bindings"
    assert tmp_path not in solvers_file.parents


def test_console_script_declared():
    dist = metadata.distribution("layertrim")
    scripts = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["layertrim"].value == "layertrim.bindings.cli:main"
    assert callable(scripts["layertrim"].load())


def test_core_dependencies_declared():
    requires = metadata.requires("layertrim") or []
    core = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if "extra ==" not in r}
    assert {"numpy", "scipy", "numba"} <= core
    assert "torch" not in core  # the core never needs torch
