"""A small ResNet for 1-channel MNIST-sized images, the network that
three-dimensional pruning is demonstrated on.

Stem 3x3 conv + BatchNorm + ReLU, then stages of :class:`BasicBlock` (two
3x3 convs with BatchNorm; identity shortcut, or a 1x1 conv + BatchNorm
projection in the first block of a stage that changes width or stride),
global average pooling and a linear classifier. Every block whose shortcut
is the identity can be removed whole (depth pruning); the models remember
their unpruned sizes so that surgery can prune to ratios of the original.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from layertrim.solvers.validation import check_scalar
from .mnist import cache_dir, load_mnist, train


class BasicBlock(nn.Module):
    """``relu2(F(x) + s(x))`` with ``F = bn2 . conv2 . relu1 . bn1 . conv1`` (3x3 convs).

    ``s`` is the identity (``shortcut is None``) or a 1x1 conv + BatchNorm.
    ``base_mid`` records the unpruned number of inner channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mid_channels: int | None = None):
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        self.conv1 = nn.Conv2d(in_channels, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.base_mid = mid

    @property
    def removable(self) -> bool:
        """True when the shortcut is the identity, so the block can be dropped."""
        return self.shortcut is None

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``F(x)``."""
        return self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(self.residual(x) + skip)


class ResNet(nn.Module):
    """``fc . avgpool . stages . stem`` for ``(batch, in_channels, H, W)`` images.

    Parameters
    ----------
    depths : blocks per stage
    widths : channels per stage; stages after the first halve the resolution
    num_classes, in_channels : int

    Attributes ``base_depths``, ``base_widths`` and ``base_removable`` (blocks
    with identity shortcuts) keep the unpruned sizes.
    """

    def __init__(self, depths=(2, 2, 2), widths=(8, 16, 32), num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        if len(depths) != len(widths) or not depths:
            raise ValueError("depths and widths must be non-empty and of equal length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages = []
        prev = widths[0]
        for s, (n, c) in enumerate(zip(depths, widths)):
            blocks = [BasicBlock(prev if i == 0 else c, c, 2 if (i == 0 and s > 0) else 1) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            prev = c
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.base_depths = tuple(int(n) for n in depths)
        self.base_widths = tuple(int(c) for c in widths)
        self.base_removable = sum(b.removable for b in self.blocks())

    def blocks(self):
        """All residual blocks, stage by stage."""
        return [b for stage in self.stages for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def mnist_images(seed: int = 0, size: int = 28):
    """The reference MNIST subset as images: ``(X_train, y_train, X_test, y_test)``,
    ``X`` of shape ``(n, 1, size, size)`` float32 (see :func:`layertrim.bindings.torch.mnist.load_mnist`).

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
    ``shift`` pixels) are passed to :func:`layertrim.bindings.torch.mnist.train`;
    ``image_size`` is the resolution of the training images (:func:`mnist_images`).
    """
    recipe = "" if (lr, cosine, shift) == (1e-3, False, 0) else f"_lr{lr:g}_cos{int(cosine)}_shift{shift}"
    recipe += "" if image_size == 28 else f"_px{image_size}"
    tag = (f"resnet_d{'-'.join(map(str, depths))}_w{'-'.join(map(str, widths))}_seed{seed}_ep{epochs}_n{n_train}"
           f"{recipe}.pt")
    path = cache_dir() / tag
    torch.manual_seed(seed)
    model = ResNet(depths, widths)
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    X, y, _, _ = mnist_images(seed, image_size)
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    train(model, X, y, epochs=epochs, lr=lr, seed=seed, cosine=cosine, shift=shift)
    if cache:
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model.eval()
