"""Masks on any model: they survive training, deepcopy, save/load and export."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import ConvBN
from torch.nn import functional as F

import ntksap
from ntksap.errors import MaskMismatchError

SHAPE = (2, 6, 6)


def _masked(seed: int = 0):
    torch.manual_seed(seed)
    model = ConvBN()
    masks = ntksap.prune(model, "random", 0.7, input_shape=SHAPE, seed=seed)
    return masks.apply(model), masks


def _pruned_weights_are_zero(model, masks) -> bool:
    return all((model.get_submodule(n).weight[~m] == 0).all() for n, m in masks.items())


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer):
    model, masks = _masked()
    opt = optimizer(model.parameters())
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 3, (16,))
    start = F.cross_entropy(model(x), y).item()
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < start  # it did train
    assert _pruned_weights_are_zero(model, masks)
    for n, m in masks.items():  # the stored parameters too, not only the effective weights
        assert (model.get_submodule(n).parametrizations.weight.original[~m] == 0).all()
    assert ntksap.measured_sparsity(model) == pytest.approx(masks.sparsity)


def test_deepcopy_keeps_masks_independent():
    model, masks = _masked()
    twin = copy.deepcopy(model)
    assert _pruned_weights_are_zero(twin, masks)
    torch.testing.assert_close(twin(torch.ones(2, *SHAPE)), model(torch.ones(2, *SHAPE)))
    twin.conv1.parametrizations.weight[0].mask.fill_(1)
    assert not (model.conv1.parametrizations.weight[0].mask == 1).all()


def test_save_load_round_trip_and_metadata(tmp_path):
    model, masks = _masked()
    masks.meta["model"] = "convbn"
    path = tmp_path / "m.pt"
    masks.save(path)
    loaded = ntksap.Masks.load(path, ConvBN())
    assert list(loaded) == list(masks)
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    assert loaded.meta["method"] == "random" and loaded.meta["sparsity"] == 0.7
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_loading_masks_for_another_model_is_an_error(tmp_path):
    _, masks = _masked()
    masks.meta["model"] = "convbn"
    masks.save(tmp_path / "m.pt")
    with pytest.raises(MaskMismatchError, match="made for model 'convbn'"):
        ntksap.Masks.load(tmp_path / "m.pt", ntksap.build_model("resnet20"))
    (tmp_path / "bad.pt").write_bytes(b"not a mask file")
    with pytest.raises(Exception, match="bad.pt"):
        ntksap.Masks.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ntksap.Masks.load(tmp_path / "missing.pt")


def test_model_state_dict_round_trip_keeps_masks():
    model, masks = _masked()
    other = masks.apply(ConvBN())
    other.load_state_dict(model.state_dict())
    x = torch.randn(3, *SHAPE)
    model.eval(), other.eval()
    torch.testing.assert_close(other(x), model(x))


def test_export_bakes_masks_into_a_plain_state_dict():
    model, masks = _masked()
    state = ntksap.Masks.export_state_dict(model)
    plain = ConvBN()
    plain.load_state_dict(state)  # strict: the original definition's keys exactly
    model.eval(), plain.eval()
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(plain(x), model(x))
    assert ntksap.measured_sparsity(plain) == pytest.approx(masks.sparsity)
    assert ntksap.Masks.remove(model) is model and not hasattr(model.conv1, "parametrizations")


def test_works_on_torchvision_models_unmodified():
    model = torchvision.models.resnet18(num_classes=10)
    masks = ntksap.prune(model, "magnitude", 0.9, input_shape=(3, 32, 32))
    masks.apply(model)
    assert "fc" in masks and "layer2.0.downsample.0" in masks
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert ntksap.measured_sparsity(model) == pytest.approx(0.9, abs=1e-6)


def test_density_report_and_table():
    _, masks = _masked()
    rows = masks.layers()
    assert [r["name"] for r in rows] == ["conv1", "conv2", "short", "fc"]
    assert sum(r["remaining"] for r in rows) == masks.remaining
    assert masks.table().splitlines()[-1].split()[0] == "total"
    shuffled = masks.shuffled(torch.Generator().manual_seed(0))
    assert [r["remaining"] for r in shuffled.layers()] == [r["remaining"] for r in rows]


def test_pruning_or_checking_a_masked_model_leaves_it_working():
    """Scoring copies a masked model and removes the copy's parametrizations: the original
    must keep its masks and its ``weight`` (a deep copy shares the parametrized class)."""
    from ntksap.report.collapse import path_check

    torch.manual_seed(0)
    model = ConvBN()
    first = ntksap.prune(model, "magnitude", 0.5)
    first.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 2, 8, 8)
    out = model.eval()(x)
    second = ntksap.prune(model, "snip", 0.8, data=(x, torch.tensor([0, 1, 2, 0])))
    path_check(model, dict(second.items()), (2, 8, 8))
    assert torch.equal(model.eval()(x), out)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(ntksap.Masks.of(model)["conv1"], first["conv1"])
    plain = ntksap.Masks.plain_copy(model)
    assert not list(plain.parametrizations.keys() if hasattr(plain, "parametrizations") else [])
    assert torch.equal(plain.conv1.weight, model.conv1.weight)
