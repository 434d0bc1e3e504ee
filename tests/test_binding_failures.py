"""Failures of the torch binding and the command line: a clear LayerTrimError (or one
line and a non-zero exit), found before any work, and nothing changed by a failed call."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from torch import nn  # noqa: E402
from torch_models import digits, loader, trained  # noqa: E402

from layertrim.bindings.torch import fine_tune, load_sparse, prune, save_sparse  # noqa: E402
from layertrim.bindings.torch.storage import SparseFileError  # noqa: E402
from layertrim.solvers import EmptyDataError, LayerTrimError, ParameterError, ShapeError  # noqa: E402


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)


@pytest.fixture(scope="module")
def calib():
    X, y, _, _ = digits()
    return loader(X[:200], y[:200])


@pytest.fixture
def pruned_file(tmp_path, calib):
    model = trained("mlp")
    prune(model, calib, method="magnitude", sparsity=0.8, progress=False)
    path = tmp_path / "m.pt"
    save_sparse(model, path)
    return path


def test_load_into_a_model_of_other_shapes_writes_nothing(pruned_file):
    # the first layer fits, a later one does not: the check must cover the whole file first
    with torch.random.fork_rng():
        torch.manual_seed(0)
        other = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 31), nn.ReLU(),
                              nn.Linear(31, 10))
    before = _state(other)
    with pytest.raises(ShapeError, match=r"3\.(weight|bias)"):
        load_sparse(pruned_file, other)
    _assert_state(other, before)


@pytest.mark.parametrize("content", [b"", b"\x80\x04 not a torch file", bytes(range(256)) * 4])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(SparseFileError, match="not a readable layertrim-sparse"):
        load_sparse(path)


def test_truncated_and_dense_files(tmp_path, pruned_file):
    data = pruned_file.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SparseFileError):
        load_sparse(tmp_path / "cut.pt")
    torch.save(trained("mlp").state_dict(), tmp_path / "dense.pt")
    with pytest.raises(SparseFileError, match="is not a layertrim-sparse file"):
        load_sparse(tmp_path / "dense.pt")


@pytest.mark.parametrize("field, value, message", [
    ("positions", torch.tensor([10**6], dtype=torch.int32), "out of range"),
    ("positions", torch.tensor([-1], dtype=torch.int32), "out of range"),
    ("values", torch.ones(3), "one per value"),
    ("shape", [4, -1], "malformed"),
    ("kind", "rle", "unknown tensor encoding"),
])
def test_forged_entries(tmp_path, field, value, message):
    W = torch.zeros(8, 8)
    W[0, 0] = 1.0
    entry = {"kind": "indices", "shape": [8, 8], "values": torch.ones(1), "positions": torch.tensor([0], dtype=torch.int32)}
    entry[field] = value
    torch.save({"format": "layertrim-sparse", "version": 1, "tensors": {"w": entry}}, tmp_path / "f.pt")
    with pytest.raises(SparseFileError, match=message):
        load_sparse(tmp_path / "f.pt")


def test_save_to_an_unwritable_place(tmp_path):
    model = trained("mlp")
    with pytest.raises(ParameterError, match="does not exist"):
        save_sparse(model, tmp_path / "no" / "such" / "m.pt")
    with pytest.raises(ParameterError, match="is a folder"):
        save_sparse(model, tmp_path)
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    save_sparse(model, target)  # replaced whole, no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    load_sparse(target, trained("mlp"))


def test_fine_tune_failures_keep_the_modes(calib):
    model = trained("mlp")
    model[1].train()  # a mixed state, restored exactly
    modes = [m.training for m in model.modules()]
    with pytest.raises(EmptyDataError, match="empty"):
        fine_tune(model, [])
    assert [m.training for m in model.modules()] == modes
    with pytest.raises(ParameterError, match=r"\(inputs, targets\) batches; got a Tensor"):
        fine_tune(model, [x for x, _ in calib])
    assert [m.training for m in model.modules()] == modes
    with pytest.raises(ParameterError, match="no trainable parameters"):
        fine_tune(nn.ReLU(), calib)


# --- command line ------------------------------------------------------------------------

def _main(args, monkeypatch, capsys, cwd):
    from layertrim.bindings.cli import main

    monkeypatch.chdir(cwd)
    code = main(list(map(str, args)))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_verify_rejects_an_npy_file(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "a.npy", np.ones((5, 3)))
    code, err = _main(["verify", "a.npy", "--method", "lasso", "--lam", "0.1"], monkeypatch, capsys, tmp_path)
    assert code == 1 and len(err) == 1 and "expected an .npz archive" in err[0]


def test_verify_nettrim_with_all_zero_targets_does_not_divide_by_zero(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cvxpy")
    X = np.random.default_rng(0).standard_normal((20, 4))
    np.savez(tmp_path / "z.npz", X=X, Y=np.zeros((20, 2)))
    code, err = _main(["verify", "z.npz", "--method", "nettrim", "--eps", "0.1"], monkeypatch, capsys, tmp_path)
    assert code in (0, 1) and not any("internal error" in line for line in err), err


FACTORY = "import torch\ndef make():\n    raise RuntimeError('my model is broken')\n"


def test_a_failing_user_factory_is_a_user_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "brokennet.py").write_text(FACTORY)
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    np.save(tmp_path / "calib.npy", np.zeros((4, 6), dtype=np.float32))
    try:
        code, err = _main(["prune", "state.pt", "--factory", "brokennet:make", "--data", "calib.npy",
                           "--method", "lasso", "--sparsity", "0.5", "--out", "p.pt"], monkeypatch, capsys, tmp_path)
    finally:
        sys.modules.pop("brokennet", None)
    assert code == 1 and len(err) == 1 and "raised RuntimeError: my model is broken" in err[0]


def test_unwritable_out_is_refused_before_the_prune_runs(tmp_path, monkeypatch, capsys):
    import layertrim.bindings.cli_prune as cli_prune

    monkeypatch.setattr(cli_prune, "load_model", lambda *a: pytest.fail("the model was loaded before --out was checked"))
    code, err = _main(["prune", "m.pt", "--data", "calib.npy", "--method", "lasso", "--sparsity", "0.5",
                       "--out", tmp_path / "missing" / "p.pt"], monkeypatch, capsys, tmp_path)
    assert code == 1 and len(err) == 1 and "does not exist" in err[0]


def _linear_model(**kw):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 5, **kw), nn.ReLU(), nn.Linear(5, 3, **kw))


def _weight_normed():
    model = _linear_model()
    nn.utils.parametrizations.weight_norm(model[0])
    return model


def _batches(dtype=torch.float32, features=6):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(16, features, generator=gen).to(dtype) for _ in range(2)]


@pytest.mark.parametrize("make, data, message", [
    (lambda: _linear_model(device="meta"), _batches(), "meta device"),
    (_weight_normed, _batches(), "parametrization"),
    (lambda: torch.compile(_linear_model()), _batches(), "torch.compile wrapper"),
    (_linear_model, _batches(features=7), r"rejects a calibration batch of \(16, 7\) float32"),
    (_linear_model, [torch.ones(4, 6, dtype=torch.int64)], r"\(4, 6\) int64"),
    (_linear_model, [], "calibration data is empty"),
    (lambda: "not a model", _batches(), "must be a torch nn.Module"),
])
def test_models_and_data_that_cannot_be_pruned(make, data, message):
    model = make()
    real = isinstance(model, nn.Module) and message != "meta device"
    before = _state(model) if real else None
    with pytest.raises(LayerTrimError, match=message):
        prune(model, data, method="magnitude", sparsity=0.5, progress=False)
    if real:
        _assert_state(model, before)


class _Locked(nn.Module):
    """The trained MLP plus an attribute that cannot be deep-copied (a lock)."""

    def __init__(self):
        super().__init__()
        import threading

        self.net = trained("mlp")
        self.lock = threading.Lock()

    def forward(self, x):
        return self.net(x)


def test_cascade_needs_no_copy_of_the_model(calib):
    model = _Locked()
    reference = trained("mlp")
    report = prune(model, calib, method="iht", sparsity=0.7, progress=False)
    expected = prune(reference, calib, method="iht", sparsity=0.7, progress=False)
    assert [r.rel_error for r in report.layers] == [r.rel_error for r in expected.layers]
    for (_, a), (_, b) in zip(model.net.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_targets_from_a_model_of_other_shapes(calib):
    from layertrim.bindings.torch import capture

    with torch.random.fork_rng():
        torch.manual_seed(0)
        other = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5))
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4))
    with pytest.raises(ShapeError, match=r"layer '3': targets_from holds weights of shape \(5, 48\)"):
        capture(model, calib, targets_from=other)
    assert not model[3]._forward_hooks and not other[3]._forward_hooks


def test_a_huge_row_budget_allocates_only_the_rows_seen(calib):
    from layertrim.bindings.torch import capture

    (X, Y), = capture(trained("mlp"), calib, layers=["3"], mode="rows", max_rows=10**10)["3"].groups
    assert X.shape == (200, 48) and Y.shape == (200, 32)


def test_ctrl_c_inside_a_kernel_exits_130(monkeypatch, capsys):
    import layertrim.bindings.cli as cli

    def interrupted_kernel(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:  # what a jitted call returning with a pending SIGINT raises
            raise SystemError("CPUDispatcher(<function admm>) returned a result with an exception set")

    monkeypatch.setattr(cli, "_run_verify", interrupted_kernel)
    monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_args",
                        lambda self, argv=None: cli.argparse.Namespace(run=interrupted_kernel, verbose=False,
                                                                       command="verify"))
    assert cli.main([]) == cli.INTERRUPTED
    assert capsys.readouterr().err.strip() == "layertrim: interrupted"
