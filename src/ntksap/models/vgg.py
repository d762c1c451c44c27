"""VGG-11/13/16/19 with BatchNorm for CIFAR (Simonyan & Zisserman 2015), reference section 5.

The conv layers of the named VGG, each followed by BatchNorm and ReLU, four max-pools, then a
2x2 average pool and a single linear layer 512 -> classes (as in the NTK-SAP / SynFlow code).
VGG-16 has 14,761,664 prunable weights for 100 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import ModelSpec

_CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class VGG(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in _CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(_CONFIGS)}; got {depth}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item),
                           nn.ReLU(inplace=True)]
                channels = item
        layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


SPECS = {f"vgg{d}": ModelSpec(lambda k, d=d: VGG(d, k), (3, 32, 32),
                              f"CIFAR VGG-{d} with BatchNorm") for d in (11, 13, 16, 19)}
