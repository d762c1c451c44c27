"""Model registry: ``build_model(name, num_classes)`` and each model's natural input shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnknownNameError
from ..init import KAIMING, initialize_, kaiming_init_
from . import cifar_resnet, imagenet_resnet, lenet, small, vgg


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[[int], nn.Module]
    input_shape: tuple[int, ...]
    description: str


MODELS: dict[str, ModelSpec] = {
    **{f"resnet{d}": ModelSpec(lambda k, d=d: cifar_resnet.resnet(d, k), (3, 32, 32),
                               f"CIFAR ResNet-{d}") for d in (20, 32, 44, 56)},
    **{f"vgg{d}": ModelSpec(lambda k, d=d: vgg.VGG(d, k), (3, 32, 32),
                            f"CIFAR VGG-{d} with BatchNorm") for d in (11, 13, 16, 19)},
    "tiny_resnet18": ModelSpec(imagenet_resnet.resnet18, (3, 64, 64),
                               "ResNet-18, ImageNet stem (paper's Tiny-ImageNet network)"),
    "tiny_resnet18_cifar_stem": ModelSpec(imagenet_resnet.resnet18_cifar_stem, (3, 64, 64),
                                          "ResNet-18, 3x3 stride-1 stem, no max-pool"),
    "resnet18": ModelSpec(imagenet_resnet.resnet18, (3, 224, 224), "torchvision ResNet-18"),
    "resnet50": ModelSpec(imagenet_resnet.resnet50, (3, 224, 224), "torchvision ResNet-50"),
    "lenet300": ModelSpec(lenet.LeNet300100, (1, 28, 28),
                          "LeNet-300-100 (SNIP paper's MNIST MLP, 266,200 weights)"),
    "lenet5": ModelSpec(lenet.LeNet5Caffe, (1, 28, 28),
                        "LeNet-5-Caffe (SNIP paper's MNIST conv net, 430,500 weights)"),
    "mlp": ModelSpec(lambda k: small.MLP(k), (1, 28, 28), "LeNet-300-100 MLP"),
    "convnet": ModelSpec(lambda k: small.ConvNet(k), (3, 32, 32), "small conv net for tests"),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownNameError("model", name, MODELS)
    return MODELS[name]


def build_model(name: str, num_classes: int = 10, seed: int | None = None,
                init: str = KAIMING) -> nn.Module:
    """Build a registered model, initialized by the scheme ``init`` (default Kaiming-normal,
    reference section 3, step 1; see :mod:`ntksap.init`).

    With ``seed`` the initialization is reproducible; without it the global RNG is used.
    """
    model = model_spec(name).factory(num_classes)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return initialize_(model, init, generator)


__all__ = ["MODELS", "ModelSpec", "build_model", "kaiming_init_", "model_spec"]
