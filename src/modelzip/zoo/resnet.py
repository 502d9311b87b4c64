"""A small ResNet-style CNN (BatchNorm, residual additions) for 28x28 or 8x8 images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import check_positive, tag_arch


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with a skip (1x1 conv+BN when the shape changes), as in ResNet."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Stem conv, one stage per entry of ``channels`` (stride 2 after the first), global
    average pooling and a Linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 channels: tuple[int, ...] = (16, 32, 64), blocks: int = 1,
                 stem_stride: int = 1):
        super().__init__()
        check_positive(in_channels=in_channels, num_classes=num_classes, blocks=blocks,
                       stem_stride=stem_stride, **{f"c{i}": c for i, c in enumerate(channels)})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels[0], 3, stem_stride, 1,
                                            bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())
        stages, cin = [], channels[0]
        for i, c in enumerate(channels):
            for j in range(blocks):
                stages.append(BasicBlock(cin, c, 2 if (i > 0 and j == 0) else 1))
                cin = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet_small(in_channels: int = 1, num_classes: int = 10,
                 channels: tuple[int, ...] = (16, 32, 64), blocks: int = 1,
                 stem_stride: int = 1) -> ResNetSmall:
    """ResNet-style CNN: ~78K parameters with the defaults (Fashion-MNIST sized);
    ``stem_stride=2`` halves the resolution up front (4x fewer MACs)."""
    model = ResNetSmall(in_channels, num_classes, tuple(channels), blocks, stem_stride)
    return tag_arch(model, "resnet_small", in_channels=in_channels, num_classes=num_classes,
                    channels=list(channels), blocks=blocks, stem_stride=stem_stride)
