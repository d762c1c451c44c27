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


@pytest.mark.parametrize(("holdout", "lr"), [(0.2, 0.5), (0.0, 1.0)])
def test_the_selected_epochs_weights_are_kept_and_load_with_their_masks(tmp_path, holdout, lr):
    """best.pt holds the model (masks included) at the validation-selected epoch, or, with
    no hold-out, at the best test epoch (named "test"); loaded into a fresh model it scores
    that epoch's recorded test accuracy. A constant, large learning rate makes an earlier
    epoch than the last the selected one (epoch 2 of 5 with the hold-out, 1 without)."""
    from ntksap.data import load_dataset
    from ntksap.epochs import val_selected
    from ntksap.runs import resolve, run_experiment
    from ntksap.train.loop import evaluate

    config = resolve("cifar10-resnet20", "magnitude", 0.5, dataset="synthetic",
                     model="convnet", limit_per_class=20, holdout=holdout, seed=1,
                     train_overrides={"epochs": 5, "batch_size": 20, "lr": lr,
                                      "schedule": "multistep", "milestones": ()})
    summary = run_experiment(config, out_dir=tmp_path, progress=False)
    directory = tmp_path / "cifar10-resnet20" / summary["run_dir"].rsplit("/", 1)[-1]
    metrics = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    if holdout:
        assert summary["selected_on"] == "validation"
        assert summary["selected_epoch"] == val_selected(metrics)[0]
    else:
        assert summary["selected_on"] == "test"
        assert summary["selected_epoch"] == summary["best_epoch"]
    assert summary["best_checkpoint"] == "best.pt" and summary["selected_epoch"] < 5
    fresh = build_model("convnet", 10, seed=5)
    masks = ntksap.load_pruned(fresh, torch.load(directory / "best.pt", weights_only=True))
    assert masks.sparsity == pytest.approx(0.5, abs=1e-3)
    test = load_dataset("synthetic", limit_per_class=20, like="cifar10").test_loader(256)
    _, correct, count = evaluate(fresh, test, config.train, torch.device("cpu"))
    chosen = next(r for r in metrics if r["epoch"] == summary["selected_epoch"])
    assert correct / count == pytest.approx(chosen["test_acc"], abs=1e-9)


def test_shell_completion_completes_commands_and_flags(tmp_path):
    """argcomplete's protocol, as bash drives it: the command line so far in COMP_LINE, the
    completions written to the file it names."""
    import os
    import subprocess
    import sys

    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n",
               "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
        done = subprocess.run([sys.executable, "-m", "ntksap"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return [c.strip() for c in out.read_text().split("\n") if c.strip()]

    assert complete("ntksap ex") == ["export"]
    assert complete("ntksap run --meth") == ["--method"]
