"""ResNet building blocks shared by MSPN and the RetinaNet backbone.

Attribute names follow MegEngine's official models so that state-dict keys match the
official weight files (reference §1.1, §7.2).
"""

from __future__ import annotations

from typing import List

from mspn_cli._mge import import_megengine

# Bound once here for every network module (mspn.py and retinanet.py import them).
mge = import_megengine()
F = mge.functional
M = mge.module


class Bottleneck(M.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv; expansion 4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = M.Conv2d(in_channels, channels, 1, 1, 0, bias=False)
        self.bn1 = M.BatchNorm2d(channels)
        self.conv2 = M.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = M.BatchNorm2d(channels)
        self.conv3 = M.Conv2d(channels, out_channels, 1, 1, 0, bias=False)
        self.bn3 = M.BatchNorm2d(out_channels)
        if in_channels != out_channels or stride != 1:
            self.downsample = M.Sequential(
                M.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                M.BatchNorm2d(out_channels),
            )
        else:
            self.downsample = M.Identity()

    def forward(self, x):
        identity = self.downsample(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return F.relu(x + identity)


def make_layer(in_channels: int, channels: int, blocks: int, stride: int) -> M.Sequential:
    """`blocks` bottlenecks; only the first one changes stride or width."""
    layers: List[M.Module] = [Bottleneck(in_channels, channels, stride)]
    out_channels = channels * Bottleneck.expansion
    layers.extend(Bottleneck(out_channels, channels, 1) for _ in range(blocks - 1))
    return M.Sequential(*layers)


class ResNetBody(M.Module):
    """Four bottleneck stages (layer1..layer4) without a stem; returns C2..C5."""

    def __init__(self, in_channels: int, widths, blocks, strides=(1, 2, 2, 2)):
        super().__init__()
        channels = in_channels
        for index, (width, count, stride) in enumerate(zip(widths, blocks, strides), start=1):
            setattr(self, f"layer{index}", make_layer(channels, width, count, stride))
            channels = width * Bottleneck.expansion

    def forward(self, x):
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5
