"""The ways out of ntksap and back in: a pruned model's state dict loaded into a fresh model
(masked and baked), masks refused on another architecture, torch.nn.utils.prune both ways,
``ntksap --version`` and ``ntksap report --json``."""

from __future__ import annotations

import io
import json
from importlib import metadata

import pytest
import torch
import torchvision
from torch.nn.utils import prune as torch_prune

import ntksap
from ntksap.cli import main
from ntksap.errors import MaskMismatchError, NtksapError
from ntksap.models import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _saved(state: dict) -> dict:
    """``state`` through torch.save / torch.load, as a user would keep it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_pruned_resnet20_state_dict_loads_into_a_fresh_one_masked_and_baked():
    model = build_model("resnet20", 10, seed=0)
    masks = ntksap.prune(model, "magnitude", 0.9)
    masks.apply(model)
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = model(x)
    for state in (model.state_dict(), ntksap.Masks.export_state_dict(model)):
        fresh = build_model("resnet20", 10, seed=7)  # other weights: all must come from state
        loaded = ntksap.load_pruned(fresh, _saved(state))
        fresh.eval()
        assert torch.allclose(fresh(x), expected, atol=1e-6)
        assert set(loaded) == set(masks)
        assert all(torch.equal(loaded[n], masks[n]) for n in masks)
        assert ntksap.measured_sparsity(fresh) == pytest.approx(0.9, abs=1e-4)


def test_a_state_dict_of_another_model_is_refused_naming_it():
    state = build_model("resnet20", 10, seed=0).state_dict()
    with pytest.raises(MaskMismatchError, match="does not fit CifarResNet.*size mismatch"):
        ntksap.load_pruned(build_model("resnet20", 100, seed=0), state)


def test_resnet18_masks_are_refused_on_a_resnet34_with_the_layer_named():
    masks = ntksap.prune(torchvision.models.resnet18(num_classes=10), "random", 0.9)
    with pytest.raises(MaskMismatchError, match=r"prunable layer 'layer1\.2\.conv1'"):
        masks.apply(torchvision.models.resnet34(num_classes=10))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_prune_round_trip_is_the_identity_on_masks(name):
    model = build_model(name, 10, seed=0)
    masks = ntksap.prune(model, "random", 0.8, seed=3)
    ntksap.to_torch_prune(model, masks)
    assert torch_prune.is_pruned(model)
    back = ntksap.from_torch_prune(model)
    assert set(back) == set(masks) and all(torch.equal(back[n], masks[n]) for n in masks)
    with pytest.raises(NtksapError, match="pruned with torch.nn.utils.prune"):
        ntksap.prune(model, "random", 0.9)


def test_version_and_report_json(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ntksap {metadata.version('ntksap')}"
    assert ntksap.__version__ == metadata.version("ntksap")
    common = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model", "convnet",
              "--limit-per-class", "10", "--epochs", "1", "--batch-size", "20", "--device",
              "cpu", "--no-progress", "--out-dir", str(tmp_path / "runs")]
    for method in ("magnitude", "random"):
        assert main(["run", *common, "--method", method, "--sparsity", "0.5"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    report = json.loads(out)
    assert sorted(r["method"] for r in report["rows"]) == ["magnitude", "random"]
    assert all(r["sparsity"] == 50.0 and r["n"] == 1 for r in report["rows"])
    assert report["runs"] == {"done": 2} and report["figures"]
