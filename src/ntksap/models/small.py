"""Small networks for tests and quick real-data checks."""

from __future__ import annotations

import math

import torch
from torch import nn

from .spec import ModelSpec


class MLP(nn.Module):
    """Fully connected ReLU network (default: LeNet-300-100 of the lottery-ticket paper)."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28),
                 hidden: tuple[int, ...] = (300, 100)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    """Two conv + BatchNorm + ReLU blocks, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


SPECS = {
    "mlp": ModelSpec(lambda k: MLP(k), (1, 28, 28), "LeNet-300-100 MLP"),
    "convnet": ModelSpec(lambda k: ConvNet(k), (3, 32, 32), "small conv net for tests"),
}
