"""The MNIST LeNets and presets of the SNIP paper (Lee et al., ICLR 2019): architectures and
weight counts, presets through run configs and flags, the sweep specs, the validation
hold-out, torchvision's MNIST format and download path, and a short real-MNIST run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_archive
from torch import fx
from torch.nn import functional as F

from ntksap import Masks, build_model
from ntksap.cli import main
from ntksap.data import DatasetBundle, ImageTensors, load_dataset, torchvision_format
from ntksap.errors import ConfigError
from ntksap.experiment import identity, open_data, resolve, run_dir
from ntksap.sweep.jobs import run_config_from_dict
from ntksap.sweep.spec import expand, load_spec
from ntksap.train import PRESETS, TrainConfig
from ntksap.train.cliargs import add_dataclass_args, dataclass_from_args, dataclass_to_argv
from ntksap.train.config import MNIST_PRESETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")


# The networks ---------------------------------------------------------------------------------

def test_lenets_have_the_published_weight_counts():
    # LeNet-300-100: 784-300-100-10; LeNet-5-Caffe: conv 1->20 5x5, conv 20->50 5x5,
    # fc 50*4*4 -> 500, fc 500 -> 10. Weights only (biases are never pruned).
    lenet300, lenet5 = build_model("lenet300", 10), build_model("lenet5", 10)
    assert Masks.of(lenet300).total == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert Masks.of(lenet5).total == 25 * 20 + 25 * 20 * 50 + 800 * 500 + 500 * 10 == 430_500
    # with their biases, the SNIP paper's "267k" and "431k" parameters
    assert sum(p.numel() for p in lenet300.parameters()) == 266_610
    assert sum(p.numel() for p in lenet5.parameters()) == 431_080


def _relus(model: torch.nn.Module) -> int:
    return sum(n.target in (torch.relu, F.relu) for n in fx.symbolic_trace(model).graph.nodes)


def test_lenet_layers_as_in_the_snip_code():
    lenet300, lenet5 = build_model("lenet300", 10), build_model("lenet5", 10)
    assert [tuple(m.weight.shape) for m in (lenet300.fc1, lenet300.fc2, lenet300.fc3)] == [
        (300, 784), (100, 300), (10, 100)]
    assert _relus(lenet300) == 2
    assert (lenet5.conv1.kernel_size, lenet5.conv1.padding) == ((5, 5), (0, 0))
    assert (lenet5.conv2.in_channels, lenet5.conv2.out_channels) == (20, 50)
    assert lenet5.pool1.kernel_size == lenet5.pool2.kernel_size == 2
    assert _relus(lenet5) == 1  # Caffe's LeNet: the only ReLU follows fc 500
    x = torch.randn(3, 1, 28, 28)
    assert lenet300(x).shape == lenet5(x).shape == (3, 10)


# Presets, run configs, flags, sweep specs -------------------------------------------------------

@pytest.mark.parametrize("name", MNIST_PRESETS)
def test_mnist_presets_round_trip(name):
    preset = PRESETS[name]
    config = resolve(name, "ntksap", 0.99, seed=2)
    assert (config.dataset, config.model, config.holdout) == ("mnist", preset.model, 0.1)
    assert config.train == preset.train
    assert run_config_from_dict(identity(config)) == config  # a sweep store's record
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig, defaults=preset.train)
    assert dataclass_from_args(TrainConfig, parser.parse_args([])) == preset.train
    assert dataclass_from_args(TrainConfig, parser.parse_args(
        dataclass_to_argv(preset.train))) == preset.train


def test_holdout_is_a_run_field_with_a_checked_range():
    assert resolve("mnist-lenet300", "snip", 0.9, holdout=0.2).holdout == 0.2
    assert resolve("cifar10-resnet20", "snip", 0.9).holdout == 0.0
    no_holdout = resolve("mnist-lenet300", "snip", 0.9, holdout=0)
    assert "holdout" not in identity(no_holdout)  # names of runs without one are unchanged
    assert run_dir(no_holdout, "r") != run_dir(resolve("mnist-lenet300", "snip", 0.9), "r")
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ConfigError, match="holdout .* in \\[0, 1\\)"):
            resolve("mnist-lenet300", "snip", 0.9, holdout=bad)


def test_cli_refuses_a_bad_holdout(capsys):
    assert main(["run", "--preset", "mnist-lenet300", "--method", "snip", "--sparsity",
                 "0.9", "--holdout", "1.5"]) == 2
    assert "holdout (--holdout) is the fraction" in capsys.readouterr().err


def test_the_sweep_specs():
    table = expand(load_spec(CONFIGS / "mnist.yaml")).jobs
    assert len(table) == 2 * (8 * 6 * 3 + 3)
    assert {j.config["preset"] for j in table} == {"mnist-lenet300-short", "mnist-lenet5-short"}
    assert {j.config["method"] for j in table} == {"random", "magnitude", "snip", "iter_snip",
                                                   "grasp", "synflow", "ntksap", "force",
                                                   "dense"}
    assert {j.config["sparsity"] for j in table} == {0.0, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998}
    assert {j.config["seed"] for j in table} == {0, 1, 2}
    jobs = expand(load_spec(CONFIGS / "mnist-snip-table.yaml")).jobs
    snip = [j for j in jobs if j.config.get("init", "kaiming") == "kaiming"]
    # the SNIP paper's Table 1: LeNet-300-100 at 95 and 98 %, LeNet-5-Caffe at 98 and 99 %
    points = {(j.config["preset"], j.config["sparsity"]) for j in snip
              if j.config["method"] != "dense"}
    assert points == {("mnist-lenet300", 0.95), ("mnist-lenet300", 0.98),
                      ("mnist-lenet5", 0.98), ("mnist-lenet5", 0.99)}
    assert {j.config["method"] for j in snip} == {"snip", "ntksap", "synflow", "dense"}
    assert len(snip) == 2 * (2 * 3 * 3 + 3)
    assert all(j.config["train"]["epochs"] == 139 for j in jobs)
    # and the SNIP code's init (SNIP and dense), and its two-draw procedure (SNIP, reinit)
    code = {(j.config["method"], j.config["sparsity"], j.config["transform"]) for j in jobs
            if j.config.get("init") == "variance-scaling"}
    assert code == {("dense", 0.0, ""), ("snip", 0.95, ""), ("snip", 0.98, ""),
                    ("snip", 0.95, "reinit"), ("snip", 0.98, "reinit")}
    assert len(jobs) == len(snip) + 5 * 3


# Data: the hold-out, torchvision's files and download, the real archive ----------------------

def _numbered(n: int) -> DatasetBundle:
    """n 2x2 images whose first two pixels spell their index."""
    index = torch.arange(n)
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = index % 256, index // 256
    data = ImageTensors(x, index % 10, [str(c) for c in range(10)], (0.5,), (0.5,))
    return DatasetBundle("folder", data.classes, (1, 2, 2), (0.5,), (0.5,), data, data,
                         Path("<numbered>"))


def _ids(data: ImageTensors) -> list[int]:
    return (data.x[:, 0, 0, 0].long() + 256 * data.x[:, 0, 0, 1].long()).tolist()


def test_holdout_splits_the_training_set_once_and_for_all():
    bundle = _numbered(1000)
    split = bundle.hold_out(0.1, seed=0)
    train, val = _ids(split.train), _ids(split.val)
    assert len(val) == 100 and len(train) == 900
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(1000))
    assert split.train.y.tolist() == [i % 10 for i in train]  # labels travel with images
    assert split.test is bundle.test and bundle.val is None and len(bundle.train) == 1000
    assert _ids(bundle.hold_out(0.1, seed=0).val) == val  # seeded
    assert _ids(bundle.hold_out(0.1, seed=1).val) != val
    assert val != list(range(100)) and val != list(range(900, 1000))  # drawn, not cut
    x, _ = split.val_loader(1000).__iter__().__next__()
    assert x.shape == (100, 1, 2, 2)
    pruning, _ = split.pruning_set(per_class=5, seed=0)  # from the training images only
    pixels = torch.round(pruning * 0.5 * 255 + 0.5 * 255).long()
    assert set((pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 0, 1]).tolist()) <= set(train)


def test_a_run_of_an_mnist_preset_trains_on_90_percent(tmp_path, monkeypatch):
    _fake_download(monkeypatch)
    config = resolve("mnist-lenet300-short", "snip", 0.9)
    bundle = open_data(config, tmp_path / "data", True, False)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 5, 20)


def _idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): 0, 0, type 0x08 (uint8), number of dims, dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, train: int = 50, test: int = 20) -> None:
    """torchvision's MNIST/raw files: ``train`` and ``test`` images, labels cycling 0-9."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def _fake_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    class FakeMNIST:  # what torchvision.datasets.MNIST(root, train, download=True) leaves
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append(root)
            _write_mnist(Path(root))

    monkeypatch.setattr(torchvision_format, "_downloader", lambda form: FakeMNIST)
    return calls


def test_torchvision_mnist_files_and_download(tmp_path, monkeypatch):
    _write_mnist(tmp_path / "local", train=30, test=10)
    bundle = load_dataset("mnist", tmp_path / "local", progress=False)
    assert (len(bundle.train), len(bundle.test), bundle.input_shape) == (30, 10, (1, 28, 28))
    assert bundle.train.y.tolist() == [i % 10 for i in range(30)]
    calls = _fake_download(monkeypatch)
    fetched = load_dataset("mnist", tmp_path / "dl", download=True, progress=False)
    assert calls == [str(tmp_path / "dl")] * 2 and len(fetched.train) == 50
    assert fetched.mean == (0.1307,) and fetched.std == (0.3081,) and fetched.augment is None


def test_real_mnist_archive_normalization_and_no_augmentation(tmp_path):
    archive = shared_archive("mnist-png.tar.gz")
    bundle = load_dataset("mnist", archive.parent, cache_dir=tmp_path, limit_per_class=3,
                          progress=False)
    assert bundle.source == archive and bundle.input_shape == (1, 28, 28)
    assert bundle.mean == (0.1307,) and bundle.std == (0.3081,)  # MNIST's usual constants
    assert bundle.augment is None  # the SNIP paper augments CIFAR only


def test_short_run_on_real_mnist(capsys, tmp_path, monkeypatch):
    archive = shared_archive("mnist-png.tar.gz")
    monkeypatch.setenv("NTKSAP_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--preset", "mnist-lenet5-short", "--method", "snip", "--sparsity",
                 "0.98", "--data-dir", str(archive.parent), "--limit-per-class", "30",
                 "--epochs", "1", "--out-dir", str(tmp_path / "runs"), "--no-progress",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["holdout"] == 0.1
    # 10 % of 300 training images held out: 30, validated after the epoch and again at the end
    (record,) = [json.loads(line) for line in
                 (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert record["val_acc"] == summary["final_val_acc"]
    assert abs(30 * summary["final_val_acc"] - round(30 * summary["final_val_acc"])) < 1e-9
    assert summary["val_selected_epoch"] == 1
    assert summary["val_selected_test_acc"] == record["test_acc"]
    assert summary["remaining"] == round(0.02 * 430_500)
    assert summary["effective_sparsity"] >= 0.98
    record = json.loads((Path(summary["run_dir"]) / "config.json").read_text())["config"]
    assert record["holdout"] == 0.1 and record["train"]["lr"] == 0.01


def test_report_settings_tell_hold_outs_apart():
    from ntksap.report.records import Point, setting_of

    def point(preset: str, **config: object) -> Point:
        return Point("k", "done", "snip", 0.9, 0, {"preset": preset, **config})

    assert setting_of(point("mnist-lenet300", holdout=0.1)) == "mnist-lenet300"
    assert setting_of(point("mnist-lenet300")) == "mnist-lenet300 [holdout=0]"  # a store row
    assert setting_of(point("cifar10-resnet20")) == "cifar10-resnet20"  # runs before the field
    assert setting_of(point("cifar10-resnet20", holdout=0.2)) == "cifar10-resnet20 [holdout=0.2]"
