"""What a careless user does, and what they get back: each case calls the public API the
wrong way (or an odd but legal way) and checks the documented outcome -- a LayerTrimError
subclass whose message names the argument, an unchanged model / array / file, or the
correct result. Cases already pinned elsewhere (test_binding_failures, test_fuzz,
test_unfinished_solves, test_validation) are not repeated here."""
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from torch import nn  # noqa: E402
from torch_models import digits, loader, trained  # noqa: E402

from layertrim.bindings.torch import fine_tune, load_sparse, prune, save_sparse  # noqa: E402
from layertrim.solvers import (  # noqa: E402
    GramStats,
    LayerTrimError,
    ParameterError,
    ShapeError,
    backward_group_selection,
    feta,
    grda,
    grda_step,
    iht,
    lasso,
    nettrim,
    project,
    refit,
)


def _layer(seed, relu=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 8))
    Y = X @ rng.standard_normal((8, 3)) + 0.1 * rng.standard_normal((40, 3))
    return X, (np.maximum(Y, 0) if relu else Y)


def _raises(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def _same_state(model, before):
    after = model.state_dict()
    return list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _close(a, b):
    np.testing.assert_allclose(a.W, b.W, rtol=1e-9, atol=1e-12)


# --- the core solvers ------------------------------------------------------------------

def one_dimensional_targets(seed):
    X, Y = _layer(seed)
    _close(lasso(X, Y[:, 0], lam=0.05), lasso(X, Y[:, :1], lam=0.05))
    _close(nettrim(X, np.maximum(Y[:, 0], 0), eps=0.2), nettrim(X, np.maximum(Y[:, :1], 0), eps=0.2))


def integer_data_is_solved_as_float64(seed):
    X, Y = (np.round(3 * a).astype(np.int64) for a in _layer(seed))
    res = lasso(X, Y, lam=0.05)
    assert res.W.dtype == np.float64
    _close(res, lasso(X.astype(np.float64), Y.astype(np.float64), lam=0.05))


def strided_and_fortran_views_give_the_contiguous_answer(seed):
    X, Y = _layer(seed)
    wide = np.repeat(X, 2, axis=1)
    _close(lasso(wide[:, ::2], Y, lam=0.05), lasso(X, Y, lam=0.05))
    _close(iht(np.asfortranarray(X), np.asfortranarray(Y), sparsity=0.5), iht(X, Y, sparsity=0.5))


def read_only_inputs_are_accepted(seed):
    X, Y = _layer(seed, relu=True)
    for a in (X, Y):
        a.setflags(write=False)
    assert lasso(X, Y, lam=0.05).status == "optimal"
    assert nettrim(X, Y, eps=0.2).status == "optimal"
    assert np.isfinite(feta(X, Y, sparsity=0.5).W).all()


def inputs_are_never_modified(seed):
    X, Y = _layer(seed, relu=True)
    W0 = np.random.default_rng(seed + 1).standard_normal((8, 3))
    copies = [a.copy() for a in (X, Y, W0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lasso(X, Y, lam=0.05)
        nettrim(X, Y, eps=0.2, warm_start=W0)
        feta(X, Y, lam=1e-3, W0=W0, outer_iter=2)
        iht(X, Y, sparsity=0.5, W0=W0)
        grda(X, Y, lr=0.01, c=0.01, epochs=1, W0=W0)
        refit(X, Y, W0 != 0)
        with pytest.raises(LayerTrimError):  # a failed call leaves them alone too
            nettrim(X, Y, eps=0.2, V=np.zeros((2, 2)))
    for a, b in zip((X, Y, W0), copies):
        assert np.array_equal(a, b)


def a_transposed_layer_names_the_samples(seed):
    X, Y = _layer(seed)
    _raises(ShapeError, "same number of samples", iht, X.T, Y.T, sparsity=0.5)


def weights_in_the_wrong_orientation_name_the_argument(seed):
    X, Y = _layer(seed)
    _raises(ShapeError, r"W0 must have shape \(8, 3\)", iht, X, Y, sparsity=0.5, W0=np.zeros((3, 8)))
    _raises(ShapeError, r"mask must have shape \(8, 3\)", refit, X, Y, np.ones((3, 8), dtype=bool))


def patterns_that_do_not_fit_name_the_pattern(seed):
    W = np.random.default_rng(seed).standard_normal((6, 3))
    _raises(ShapeError, "pattern 2:4 needs the number of inputs", project, W, pattern="2:4")
    _raises(ParameterError, "pattern 'N:M' needs 1 <= N < M", project, W, pattern="4:2")
    _raises(ParameterError, "pattern must be one of", project, W, sparsity=0.5, pattern="unstructred")
    _raises(ParameterError, "fixes the sparsity", project, np.vstack([W, W[:2]]), sparsity=0.3, pattern="2:4")


def pre_activations_to_the_relu_program_are_refused(seed):
    X, Y = _layer(seed)  # linear outputs: about half negative
    _raises(ParameterError, "relu=True expects post-ReLU outputs", nettrim, X, Y, eps=0.2)
    assert nettrim(X, Y, eps=0.2, relu=False).status == "optimal"


def a_sparsity_of_one_is_refused(seed):
    X, Y = _layer(seed)
    _raises(ParameterError, "sparsity must be < 1.0", lasso, X, Y, sparsity=1)


def statistics_and_arrays_together_are_refused(seed):
    X, Y = _layer(seed)
    _raises(ShapeError, "either GramStats alone or arrays", lasso, GramStats.from_arrays(X, Y), Y, lam=0.1)


def group_selection_keeping_more_than_exists(seed):
    X, Y = _layer(seed)
    _raises(ParameterError, "n_keep=9 exceeds n_groups=8", backward_group_selection, X, Y, n_groups=8, n_keep=9)
    _raises(ShapeError, "cannot be split into 3 equal groups", backward_group_selection, X, Y, n_groups=3, n_keep=1)


def grda_step_on_a_transposed_view(seed):
    w = np.zeros((3, 2)).T
    _raises(ShapeError, "w must be C-contiguous", grda_step, w, w.copy(), np.ones((2, 3)), 0.1, 1, 0.0, 0.1, 0.5)


# --- the torch binding -----------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _reference_data():
    """Load the digits and train the reference MLP before the global-RNG guard looks
    (importing sklearn draws from Python's global generator)."""
    digits()
    trained("mlp")


def _calib():
    X, y, _, _ = digits()
    return loader(X[:200], y[:200])


PRUNE_MISTAKES = [
    (dict(method="magnitude", sparsity=1.5), "sparsity must be < 1.0"),
    (dict(method="magnitude", sparsity=0.5, layers=["9"]), "no layer named '9'"),
    (dict(method="magnitude", sparsity=0.5, layers=["2"]), "layer '2' is a ReLU"),
    (dict(method="magnitude", sparsity=0.5, ignore=["nope"]), "ignore selector 'nope' matches no prunable layer"),
    (dict(method="lasoo", sparsity=0.5), "method must be one of"),
    (dict(method="lasso", sparsity=0.5, scheme="parralel"), "scheme must be one of"),
    (dict(method="lasso", eps=0.1), "needs exactly one of sparsity= / lam="),
    (dict(method="nettrim", sparsity=0.5, gamma=-1), "gamma must be >= 1.0"),
]


def prune_mistakes_leave_the_model_as_it_was(seed):
    calib = _calib()
    model = trained("mlp").train()
    before = _state(model)
    for kwargs, message in PRUNE_MISTAKES:
        _raises(ParameterError, message, prune, model, calib, progress=False, **kwargs)
        assert _same_state(model, before) and model.training, kwargs


def prune_takes_one_tensor_or_a_one_pass_generator(seed):
    batches = [b for b, _ in _calib()]
    expected = prune(trained("mlp"), batches, method="iht", sparsity=0.5, progress=False)
    for data in (torch.cat(batches), (b for b in batches)):
        report = prune(trained("mlp"), data, method="iht", sparsity=0.5, progress=False)
        np.testing.assert_allclose([r.rel_error for r in report.layers], [r.rel_error for r in expected.layers],
                                   rtol=1e-6)


def fine_tune_batches_the_model_rejects(seed):
    calib = _calib()
    model = trained("mlp")
    before = _state(model)
    float_labels = [(x, t.float()) for x, t in calib]
    _raises(ParameterError, "batch 1 of the loader .* rejected by the model or loss_fn", fine_tune, model, float_labels)
    doubles = [(x.double().numpy(), t.numpy()) for x, t in calib]
    _raises(ParameterError, "batch 1 of the loader", fine_tune, model, doubles)
    _raises(ParameterError, "lr must be > 0", fine_tune, model, calib, lr=-1.0)
    assert _same_state(model, before) and not model.training


def fine_tune_takes_numpy_batches(seed):
    calib = _calib()
    a, b = trained("mlp"), trained("mlp")
    fine_tune(a, calib[:2])
    fine_tune(b, [(x.numpy(), t.numpy()) for x, t in calib[:2]])
    assert _same_state(a, _state(b))


def load_sparse_into_something_that_is_not_a_model(seed):
    buf = io.BytesIO()
    save_sparse(trained("mlp"), buf)
    data = buf.getvalue()
    _raises(ParameterError, "model must be a torch nn.Module", load_sparse, io.BytesIO(data), "model.pt")
    assert buf.getvalue() == data


# --- the command line ------------------------------------------------------------------

def _cli(argv, tmp_path, monkeypatch, capsys):
    from layertrim.bindings.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(list(map(str, argv)))
    return code, capsys.readouterr().err.strip().splitlines()


CLI_MISTAKES = [
    (["--method", "lasso", "--lam", "-1"], "lam must be >= 0"),
    (["--method", "lasso", "--lam", "0.1", "--outputs", "0"], "--outputs must be >= 1"),
    (["--method", "lasso", "--sparsity", "1.5"], "sparsity must be < 1.0"),
    (["--method", "iht"], "needs --sparsity"),
    (["--method", "feta", "--lam", "0.01"], "Y must be >= 0"),
]


def cli_mistakes_are_one_line(seed, tmp_path, monkeypatch, capsys):
    X, Y = _layer(seed)
    np.savez(tmp_path / "l.npz", X=X, Y=Y)
    np.savez(tmp_path / "short.npz", X=X, Y=Y[:-1])
    for options, message in CLI_MISTAKES + [(["--method", "lasso", "--lam", "0.1"], "same number of samples")]:
        path = "short.npz" if message == "same number of samples" else "l.npz"
        code, err = _cli(["verify", path, *options], tmp_path, monkeypatch, capsys)
        assert code in (1, 2) and len(err) == 1 and message in err[0], (options, code, err)


CASES = {f.__name__: f for f in [
    one_dimensional_targets, integer_data_is_solved_as_float64, strided_and_fortran_views_give_the_contiguous_answer,
    read_only_inputs_are_accepted, inputs_are_never_modified, a_transposed_layer_names_the_samples,
    weights_in_the_wrong_orientation_name_the_argument, patterns_that_do_not_fit_name_the_pattern,
    pre_activations_to_the_relu_program_are_refused, a_sparsity_of_one_is_refused,
    statistics_and_arrays_together_are_refused, group_selection_keeping_more_than_exists,
    grda_step_on_a_transposed_view, prune_mistakes_leave_the_model_as_it_was,
    prune_takes_one_tensor_or_a_one_pass_generator, fine_tune_batches_the_model_rejects, fine_tune_takes_numpy_batches,
    load_sparse_into_something_that_is_not_a_model, cli_mistakes_are_one_line,
]}


@pytest.mark.parametrize("case", list(CASES))
def test_careless_use(case, seed, tmp_path, monkeypatch, capsys):
    fn = CASES[case]
    if case.startswith("cli_"):
        fn(seed, tmp_path, monkeypatch, capsys)
    else:
        fn(seed)
