"""The ``layertrim`` command line, exercised through subprocesses as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(sys.executable).with_name("layertrim")
BASE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "layertrim.bindings.cli"]


def cli(*args, cwd=None, timeout=300):
    """Run ``layertrim ARGS``; return the completed process (text output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*BASE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def assert_user_error(proc, *fragments, code=1):
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


# --- command structure -----------------------------------------------------------------

@pytest.mark.parametrize("command", ["", "demo", "prune", "bench", "verify"])
def test_help(command):
    proc = cli(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: layertrim {command}".rstrip() in proc.stdout


def test_no_command_is_a_usage_error():
    assert_user_error(cli(), "required", code=2)


def test_unknown_method_is_one_line():
    assert_user_error(cli("verify", "x.npz", "--method", "lassso", "--lam", "0.1"), "lassso", code=2)
    assert_user_error(cli("prune", "m.pt", "--data", "d.npy", "--method", "sgd", "--sparsity", "0.5",
                          "--out", "o.pt"), "sgd", code=2)


# --- verify: error paths ---------------------------------------------------------------

@pytest.fixture
def problem(tmp_path, rng):
    """A small linear layer problem ``Y = X W* + noise`` with a sparse ``W*``."""
    X = rng.standard_normal((60, 8))
    W = rng.standard_normal((8, 3)) * (rng.random((8, 3)) < 0.5)
    Y = X @ W + 0.1 * rng.standard_normal((60, 3))
    path = tmp_path / "layer.npz"
    np.savez(path, X=X, Y=Y)
    return path


def test_verify_missing_file(tmp_path):
    assert_user_error(cli("verify", tmp_path / "absent.npz", "--method", "lasso", "--lam", "0.1"),
                      "absent.npz", "no such file")


def test_verify_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert_user_error(cli("verify", path, "--method", "lasso", "--lam", "0.1"), "corrupt.npz", "not a readable")


def test_verify_missing_array(tmp_path):
    path = tmp_path / "onlyx.npz"
    np.savez(path, X=np.ones((4, 2)))
    assert_user_error(cli("verify", path, "--method", "lasso", "--lam", "0.1"), "missing Y")


def test_verify_nan_data(tmp_path, rng):
    X = rng.standard_normal((10, 3))
    X[2, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, X=X, Y=rng.standard_normal((10, 2)))
    assert_user_error(cli("verify", path, "--method", "lasso", "--lam", "0.1"), "X contains 1 NaN")


def test_verify_conflicting_parameters(problem):
    assert_user_error(cli("verify", problem, "--method", "lasso", "--lam", "0.1", "--sparsity", "0.5"),
                      "exactly one of lam")
    assert_user_error(cli("verify", problem, "--method", "lasso", "--eps", "0.1"), "does not take --eps")


def test_verbose_shows_traceback(tmp_path):
    proc = cli("verify", tmp_path / "absent.npz", "--method", "lasso", "--lam", "0.1", "--verbose")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "no such file" in proc.stderr.strip().splitlines()[-1]


# --- bench -----------------------------------------------------------------------------

TABLE_SCRIPT = """
import sys
quick = "--quick" in sys.argv
print("method  time")
print(f"ours    {0.1 if quick else 1.0}")
"""


def test_bench_runs_scripts_and_passes_quick(tmp_path):
    (tmp_path / "bench_alpha.py").write_text(TABLE_SCRIPT)
    (tmp_path / "bench_beta.py").write_text("print('beta table')\n")
    (tmp_path / "_helper.py").write_text("raise SystemExit(9)\n")
    listing = cli("bench", "--list", "--dir", tmp_path)
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == ["alpha", "beta"]
    proc = cli("bench", "alpha", "bench_beta", "--quick", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ours    0.1" in proc.stdout
    assert "beta table" in proc.stdout and "no quick mode" in proc.stdout
    proc = cli("bench", "alpha", "--dir", tmp_path)
    assert "ours    1.0" in proc.stdout


def test_bench_failures_and_bad_names(tmp_path):
    (tmp_path / "bench_broken.py").write_text("raise SystemExit(4)\n")
    proc = cli("bench", "--dir", tmp_path)
    assert proc.returncode == 1
    assert "FAILED (exit code 4)" in proc.stdout and "broken" in proc.stderr
    assert_user_error(cli("bench", "nosuch", "--dir", tmp_path), "unknown benchmark 'nosuch'", "broken")
    assert_user_error(cli("bench", "--dir", tmp_path / "absent"), "no benchmarks folder")


# --- verify: happy paths ---------------------------------------------------------------

@pytest.fixture
def relu_problem(tmp_path, rng):
    """A small ReLU layer problem: post-activation targets ``Y = relu(X W* + b*)``."""
    X = rng.standard_normal((60, 8))
    Y = np.maximum(X @ rng.standard_normal((8, 3)) + 0.3, 0)
    path = tmp_path / "relu.npz"
    np.savez(path, X=X, Y=Y)
    return path


@pytest.mark.parametrize("method, options, which", [
    ("lasso", ["--lam", "0.1"], "linear"),
    ("lasso", ["--sparsity", "0.5", "--no-intercept"], "linear"),
    ("nettrim", ["--eps", "0.1"], "relu"),
    ("nettrim", ["--sparsity", "0.5", "--linear"], "linear"),
    ("feta", ["--lam", "0.01"], "relu"),
    ("iht", ["--sparsity", "0.5"], "linear"),
])
def test_verify_agrees_with_cvxpy(method, options, which, problem, relu_problem):
    path = problem if which == "linear" else relu_problem
    proc = cli("verify", path, "--method", method, *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agree: objective within 0.001 relative" in proc.stdout
    gap_line = next(line for line in proc.stdout.splitlines() if "gap" in line)
    # the printed gap is the same quantity the tolerance check used: it must be small
    assert abs(float(gap_line.split()[-1])) <= 1e-3


def test_verify_reports_disagreement(problem):
    # an impossible tolerance: a real disagreement beyond it exits 1 with one line naming it
    proc = cli("verify", problem, "--method", "nettrim", "--eps", "0.2", "--linear", "--rtol", "0")
    assert_user_error(proc, "relative objective gap")
    assert "objective" in proc.stdout


@pytest.mark.parametrize("dtype, options", [("float64", []), ("float32", ["--no-intercept"])])
def test_verify_nettrim_with_all_zero_targets_agrees(tmp_path, rng, dtype, options):
    # W = 0 is optimal; cvxpy returns ~1e-11 entries: a relative gap would be -1 (noise over 0)
    path = tmp_path / "zero.npz"
    np.savez(path, X=rng.standard_normal((30, 5)).astype(dtype), Y=np.zeros((30, 3), dtype=dtype))
    proc = cli("verify", path, "--method", "nettrim", "--eps", "0.1", *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gap_line = next(line for line in proc.stdout.splitlines() if "absolute objective gap" in line)
    assert abs(float(gap_line.split()[-1])) <= np.sqrt(np.finfo(dtype).eps)


def test_objective_gap_near_zero_is_absolute_at_the_dtype_noise():
    from layertrim.bindings.cli_verify import Comparison, _gap_rows

    for fast, ref, dtype, fails in [(0.0, 1e-9, np.float64, False), (1e-6, 0.0, np.float64, True),
                                    (1e-6, 0.0, np.float32, False), (1e-3, 0.0, np.float32, True),
                                    (1.0 + 1e-4, 1.0, np.float64, False), (1.01, 1.0, np.float64, True)]:
        cmp = Comparison("p")
        _gap_rows(cmp, "objective gap", fast, ref, 1e-3, dtype)
        assert bool(cmp.failures) == fails, (fast, ref, dtype, cmp.failures)


# --- prune -----------------------------------------------------------------------------

FACTORY = """
import torch
from torch import nn

def make():
    with torch.random.fork_rng():  # seeded init that leaves the caller's global generator alone
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
"""


@pytest.fixture
def saved_model(tmp_path, seed):
    """A tiny MLP saved as a state dict (with its factory module) and as a pickled full model."""
    torch = pytest.importorskip("torch")
    (tmp_path / "tinynet.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        import tinynet

        model = tinynet.make()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tinynet", None)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(model, tmp_path / "full.pt")
    X = np.random.default_rng(seed + 1).standard_normal((200, 6)).astype(np.float32)
    np.save(tmp_path / "calib.npy", X)
    return tmp_path


def test_prune_state_dict_with_factory(saved_model):
    torch = pytest.importorskip("torch")
    from layertrim.bindings.torch import load_sparse, sparsity

    proc = cli("prune", "state.pt", "--factory", "tinynet:make", "--data", "calib.npy",
               "--method", "lasso", "--sparsity", "0.5", "--out", "pruned.pt", cwd=saved_model)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((saved_model / "pruned.json").read_text())
    assert report["method"] == "lasso" and report["calibration_samples"] == 200
    assert [layer["name"] for layer in report["report"]["layers"]] == ["0", "2"]
    sys.path.insert(0, str(saved_model))
    try:
        import tinynet

        model = load_sparse(saved_model / "pruned.pt", tinynet.make())
    finally:
        sys.path.remove(str(saved_model))
        sys.modules.pop("tinynet", None)
    # the file holds what the report says: each layer at least half zeros
    counts = sparsity(model)
    assert all(c.sparsity >= 0.5 for c in counts.layers.values())
    assert counts.zeros == report["report"]["zeros"]
    assert torch.isfinite(model(torch.zeros(1, 6))).all()


def test_prune_full_model_needs_unsafe_load(saved_model):
    args = ["--data", "calib.npy", "--method", "lasso", "--sparsity", "0.5", "--out", "p.pt"]
    assert_user_error(cli("prune", "full.pt", *args, cwd=saved_model), "--unsafe-load")
    proc = cli("prune", "full.pt", *args, "--unsafe-load", cwd=saved_model)
    assert proc.returncode == 0, proc.stderr
    assert "warning: --unsafe-load" in proc.stderr
    assert (saved_model / "p.pt").exists() and (saved_model / "p.json").exists()


def test_prune_error_paths(saved_model):
    # through a subprocess: what a user sees (the other error cases run in process, below)
    proc = cli("prune", "absent.pt", "--data", "calib.npy", "--method", "lasso", "--sparsity", "0.5",
               "--out", "p.pt", cwd=saved_model)
    assert_user_error(proc, "absent.pt", "no such file")


@pytest.mark.parametrize("model, args, fragments", [
    ("corrupt.pt", ["--data", "calib.npy"], ["corrupt.pt", "not a readable"]),
    ("state.pt", ["--data", "calib.npy"], ["--factory"]),
    ("state.pt", ["--factory", "nosuchmodule:make", "--data", "calib.npy"], ["nosuchmodule"]),
    ("state.pt", ["--factory", "tinynet:make", "--data", "inf.npy"], ["NaN or infinite"]),
    ("state.pt", ["--factory", "tinynet:make", "--data", "wide.npy"], ["rejects calibration"]),
    ("state.pt", ["--factory", "tinynet:make", "--data", "absent.npy"], ["absent.npy", "no such file"]),
    ("state.pt", ["--factory", "tinynet:make", "--data", "calib.npy", "--sparsity", "1.5"], ["sparsity"]),
])
def test_prune_user_errors_in_process(saved_model, monkeypatch, capsys, model, args, fragments):
    # the console script's own entry point, called in this process (no interpreter start-up per case)
    from layertrim.bindings.cli import main

    (saved_model / "corrupt.pt").write_bytes(b"\x80\x04 not a torch file")
    bad = np.ones((10, 6), dtype=np.float32)
    bad[3, 2] = np.inf
    np.save(saved_model / "inf.npy", bad)
    np.save(saved_model / "wide.npy", np.ones((10, 7), dtype=np.float32))
    monkeypatch.chdir(saved_model)
    rest = ["--method", "lasso", "--out", "p.pt"] + ([] if "--sparsity" in args else ["--sparsity", "0.5"])
    try:
        code = main(["prune", model, *args, *rest])
    finally:
        sys.modules.pop("tinynet", None)
    captured = capsys.readouterr()
    assert_user_error(subprocess.CompletedProcess(args, code, captured.out, captured.err), *fragments)
    assert not (saved_model / "p.pt").exists()


# --- demo ------------------------------------------------------------------------------

def test_demo_defaults():
    from layertrim.bindings.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert args.out == "demo_out" and args.methods is None and args.sparsities is None and args.progress


def test_demo_layer_settings_follow_the_solver_of_each_layer(seed):
    pytest.importorskip("torch")
    from layertrim.bindings.torch.examples import demo, mnist
    from seeding import torch_seed

    budget = demo.Budget("test", n_calib=10, max_rows=10,
                         options={"feta": {"polish_iter": 3}, "lasso": {"tol": 1e-3}, "nettrim": {"max_iter": 7}})
    with torch_seed(seed):  # module init draws from torch's global generator
        model = mnist.mlp()  # Linear layers "0", "2" (followed by ReLU) and "4" (the output layer)
    # FeTa's layer without ReLU is solved as a lasso by the binding: it gets the lasso options
    assert demo.layer_settings(model, "feta", budget) == {
        "0": {"method": "feta", "polish_iter": 3},
        "2": {"method": "feta", "polish_iter": 3},
        "4": {"method": "feta", "tol": 1e-3},
    }
    assert all(s == {"method": "nettrim", "max_iter": 7} for s in demo.layer_settings(model, "nettrim", budget).values())
    assert demo.layer_settings(model, "magnitude", budget)["2"] == {"method": "magnitude"}
    assert "feta polish_iter=3; lasso tol=0.001; nettrim max_iter=7" in budget.describe()


def test_demo_quick_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mlxtend")
    # two fast methods: the CLI, table, plot and results file end to end (the methods themselves,
    # the quick run's l0 and nettrim included, are tested on this network elsewhere)
    methods = ["magnitude", "iht"]
    proc = cli("demo", "--quick", "--no-progress", "--methods", *methods, "--out", tmp_path / "out", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["method"] for row in results["rows"]] == methods
    lines = proc.stdout.splitlines()
    for row in results["rows"]:
        assert row["target"] == 0.9 and row["sparsity"] >= 0.9 - 1e-3
        # pruning at 90% costs accuracy but keeps a working classifier (10 classes: chance is ~10%)
        assert 0.5 < row["acc_finetuned"] <= 1.0
        # the table shows every run with its accuracy after fine-tuning
        assert any(line.startswith(row["method"]) and f"{row['acc_finetuned']:.1%}" in line for line in lines)
    # the footer names the budget the solvers ran under
    assert results["settings"].startswith("quick run: 500 calibration images")
    assert " ".join(proc.stdout.split()).count(results["settings"]) == 1
    assert 0.5 < results["dense_accuracy"] <= 1.0
    png = tmp_path / "out" / "accuracy_vs_sparsity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
