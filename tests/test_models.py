"""The model registry: architectures and prunable-weight counts of the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntksap
from ntksap.models import MODELS, model_spec


def _prunable(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in ntksap.prunable_layers(model).values())


def test_reference_counts():
    assert _prunable(ntksap.build_model("resnet20", 10)) == 270_896
    assert _prunable(ntksap.build_model("vgg16", 100)) == 14_761_664


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("resnet50", "vgg19")])
def test_every_model_takes_its_input_shape(name):
    model = ntksap.build_model(name, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *model_spec(name).input_shape))
    assert out.shape == (2, 7)


def test_tiny_imagenet_resnet18_stems_are_distinct():
    paper = ntksap.build_model("tiny_resnet18", 200)
    cifar = ntksap.build_model("tiny_resnet18_cifar_stem", 200)
    assert paper.conv1.kernel_size == (7, 7) and paper.conv1.stride == (2, 2)
    assert isinstance(paper.maxpool, nn.MaxPool2d)
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, nn.Identity)


def test_kaiming_normal_fan_in_initialization():
    model = ntksap.build_model("resnet56", seed=0)
    w = model.layer3[0].conv2.weight
    assert w.std().item() == pytest.approx((2 / w[0].numel()) ** 0.5, rel=0.05)
    assert (model.layer1[0].bn1.weight == 1).all() and (model.layer1[0].bn1.bias == 0).all()
    same = ntksap.build_model("resnet56", seed=0)
    assert torch.equal(same.layer3[0].conv2.weight, w)


def test_resnet_depth_must_be_6n_plus_2():
    from ntksap.models.cifar_resnet import resnet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet(21)
