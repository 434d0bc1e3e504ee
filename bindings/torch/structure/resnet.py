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

import torch
from torch import nn


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
