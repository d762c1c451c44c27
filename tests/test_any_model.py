"""Every registered method on models the project did not write: torchvision's ResNet-18, a
timm ResNet and a timm vision transformer (no pretrained weights, small inputs).

For each: exactly round(sparsity x N) weights removed, N counted here from the model's own
Conv/Linear layers; every prunable layer gets a mask of its weight's shape; the model's
weights, BatchNorm buffers and train/eval flag are untouched; the masked copy still runs.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
import torchvision
from torch import nn

import ntksap
from ntksap.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 32, 32)
CLASSES = 3  # few logits: NTT builds Jacobians of (inputs x logits) rows
SPARSITY = 0.8

# tiny budgets for the expensive methods; options a method does not have are left out
FAST = {
    "ntksap": dict(repeats=1, samples=4, batch_size=4),
    "prospr": dict(steps=1, batch_size=4),
    "ntt": dict(steps=1, batch_size=4, ntk_inputs=2, progress=False, progress_bar=False,
                start_from="initial"),  # its default writes the transferred weights
}


def _torchvision_resnet18() -> nn.Module:
    return torchvision.models.resnet18(num_classes=CLASSES)


def _timm_resnet() -> nn.Module:  # timm's ResNet-18 layout at 1/8 of the width
    return timm.create_model("resnet18", pretrained=False, num_classes=CLASSES,
                             channels=(8, 16, 32, 64), stem_width=8)


def _timm_vit() -> nn.Module:  # a two-block ViT on 32 x 32 images, 16 x 16 patches
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=CLASSES,
                             img_size=32, patch_size=16, depth=2, embed_dim=48, num_heads=3)


BUILDERS = {"torchvision-resnet18": _torchvision_resnet18, "timm-resnet": _timm_resnet,
            "timm-vit": _timm_vit}
CASES = [(method, {}) for method in METHODS] + [
    ("ntksap", dict(pair_vmap=True, draws_per_pass=2))]  # NTK-SAP's GPU paths, on CPU


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Each model built once, its BatchNorm statistics moved off their initial values."""
    built = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        model = build()
        model.train()
        with torch.no_grad():
            model(torch.randn(4, *SHAPE))
        built[name] = model
    return built


def _options(method: str, extra: dict) -> dict:
    fields = {f.name for f in dataclasses.fields(METHODS[method]) if f.init}
    options = {k: v for k, v in FAST.get(method, {}).items() if k in fields}
    if METHODS[method].needs_data:
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, *SHAPE, generator=g), torch.randint(0, CLASSES, (8,), generator=g)
        options["data"] = [(x[:4], y[:4]), (x[4:], y[4:])]  # two batches
    return {**options, **extra}


def _prunable_sizes(model: nn.Module) -> dict[str, torch.Size]:
    return {name: m.weight.shape for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)}


@pytest.mark.parametrize("model_name", list(BUILDERS))
@pytest.mark.parametrize(("method", "extra"), CASES,
                         ids=[m + ("-gpu-paths" if e else "") for m, e in CASES])
def test_every_method_prunes_any_model_exactly_and_leaves_it_alone(models, model_name, method,
                                                                   extra):
    model = models[model_name]
    model.eval()  # not the scoring mode of most methods: it must come back as it was
    before = copy.deepcopy(model.state_dict())
    masks = ntksap.prune(model, method, SPARSITY, rounds=2, input_shape=SHAPE, seed=0,
                         **_options(method, extra))

    sizes = _prunable_sizes(model)
    assert {n: masks[n].shape for n in masks} == sizes
    total = sum(s.numel() for s in sizes.values())
    removed = sum(int((~masks[n]).sum()) for n in masks)
    assert removed == round(SPARSITY * total)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{method} changed {key}"
    pruned = masks.apply(copy.deepcopy(model))
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.randn(2, *SHAPE))).all()


@pytest.mark.parametrize("model_name", list(BUILDERS))
def test_ntt_writes_its_transferred_weights_into_any_model(models, model_name):
    """NTT's default start (the paper's): every parameter the student learned lands in the
    user's model under its own name (attention's packed projections and BatchNorm's affine
    parameters too); buffers stay."""
    model = copy.deepcopy(models[model_name])
    before = copy.deepcopy(model.state_dict())
    options = {**_options("ntt", {}), "start_from": "transferred", "lr": 1e-2}
    masks = ntksap.prune(model, "ntt", SPARSITY, input_shape=SHAPE, seed=0, **options)
    assert masks.meta["start_weights"] == "method"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    weights = [n for n in changed if n.endswith("weight") and n[:-len(".weight")] in masks]
    assert weights and len(changed) > len(weights)  # prunable weights and others too
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_the_vit_tokens_no_method_prunes_are_named_and_counted(models):
    """A ViT's class token (1 x 1 x 48) and position embedding (1 x 5 x 48: 2 x 2 patches and
    the class token) are parameters of no Conv/Linear layer: left dense, said in one warning
    (48 + 240 weights)."""
    with pytest.warns(UserWarning, match=r"2 weight tensor\(s\).*\(288 weights;.*cls_token, "
                                         r"pos_embed"):
        masks = ntksap.prune(copy.deepcopy(models["timm-vit"]), "random", SPARSITY, seed=0)
    assert masks.meta["dense_weights"] == {"cls_token": [1, 1, 48], "pos_embed": [1, 5, 48]}
