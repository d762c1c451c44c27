"""ResNet-18/50 from torchvision, for ImageNet and Tiny-ImageNet.

``tiny_resnet18`` is the ImageNet-style ResNet-18 (7x7 stride-2 stem + max-pool) that the
NTK-SAP code trains on 64x64 Tiny-ImageNet. ``tiny_resnet18_cifar_stem`` replaces the stem by a
3x3 stride-1 conv without max-pool: a different network with higher accuracy, only ever used
when asked for by that name.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from .spec import ModelSpec


def resnet18(num_classes: int = 1000) -> nn.Module:
    return models.resnet18(weights=None, num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> nn.Module:
    return models.resnet50(weights=None, num_classes=num_classes)


def resnet18_cifar_stem(num_classes: int = 200) -> nn.Module:
    model = models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


SPECS = {
    "tiny_resnet18": ModelSpec(resnet18, (3, 64, 64),
                               "ResNet-18, ImageNet stem (paper's Tiny-ImageNet network)"),
    "tiny_resnet18_cifar_stem": ModelSpec(resnet18_cifar_stem, (3, 64, 64),
                                          "ResNet-18, 3x3 stride-1 stem, no max-pool"),
    "resnet18": ModelSpec(resnet18, (3, 224, 224), "torchvision ResNet-18"),
    "resnet50": ModelSpec(resnet50, (3, 224, 224), "torchvision ResNet-50"),
}
