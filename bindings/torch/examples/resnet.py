"""The ResNet of three-dimensional pruning trained on the reference MNIST
images (cached on disk like the reference MLP)."""
from __future__ import annotations

import os

import torch

from layertrim.solvers.base.validation import check_scalar

from ..structure.resnet import ResNet
from ..training import train
from .mnist import cache_dir, load_mnist


def mnist_images(seed: int = 0, size: int = 28):
    """The reference MNIST subset as images: ``(X_train, y_train, X_test, y_test)``,
    ``X`` of shape ``(n, 1, size, size)`` float32 (see :func:`layertrim.bindings.torch.examples.mnist.load_mnist`).

    ``size < 28`` downsamples the 28 x 28 digits (bilinear with antialiasing):
    a smaller native resolution for experiments where the input should not
    carry much more detail than the network needs.
    """
    size = check_scalar(size, "size", low=1, high=28, integer=True)
    X_tr, y_tr, X_te, y_te = load_mnist(seed)

    def images(X):
        X = torch.from_numpy(X.reshape(-1, 1, 28, 28))
        if size == 28:
            return X
        return torch.nn.functional.interpolate(X, size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False).contiguous()

    return images(X_tr), torch.from_numpy(y_tr), images(X_te), torch.from_numpy(y_te)


def trained_resnet(
    seed: int = 0, *, depths=(2, 2, 2), widths=(8, 16, 32), epochs: int = 4, n_train: int | None = None,
    lr: float = 1e-3, cosine: bool = False, shift: int = 0, image_size: int = 28, cache: bool = True
) -> ResNet:
    """A :class:`ResNet` trained with Adam on the reference MNIST training images, cached on disk.

    ``n_train`` limits the training images to the first ``n_train`` (all 4,000 by default);
    ``lr``, ``cosine`` (cosine decay to 0) and ``shift`` (random translations of up to
    ``shift`` pixels) are passed to :func:`layertrim.bindings.torch.training.train`;
    ``image_size`` is the resolution of the training images (:func:`mnist_images`).
    """
    recipe = "" if (lr, cosine, shift) == (1e-3, False, 0) else f"_lr{lr:g}_cos{int(cosine)}_shift{shift}"
    recipe += "" if image_size == 28 else f"_px{image_size}"
    tag = (f"resnet_d{'-'.join(map(str, depths))}_w{'-'.join(map(str, widths))}_seed{seed}_ep{epochs}_n{n_train}"
           f"{recipe}.pt")
    path = cache_dir() / tag
    with torch.random.fork_rng(devices=[]):  # a seeded initialization; the caller's generator is left alone
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are not forked
        model = ResNet(depths, widths)
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    X, y, _, _ = mnist_images(seed, image_size)
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    train(model, X, y, epochs=epochs, lr=lr, seed=seed, cosine=cosine, shift=shift)
    if cache:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: parallel test workers
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model.eval()
