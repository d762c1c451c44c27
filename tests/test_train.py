"""Tests of ntksap.train: learning, schedules, config flags, masks, kill -9 resume, DDP.

Run as a script, this file is also the worker of the subprocess tests
(``resume-worker`` and ``ddp-worker``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from ntksap.errors import (
    CheckpointError,
    ConfigError,
    TrainingDivergedError,
    UnknownNameError,
)
from ntksap.masks import Masks, measured_sparsity, raw_weight
from ntksap.models import MODELS, build_model
from ntksap.train import (
    PRESETS,
    TrainConfig,
    add_dataclass_args,
    dataclass_from_args,
    dataclass_to_argv,
    get_preset,
    lr_at,
    train,
)

CLASSES = 3
TIMING = ("seconds", "images_per_s", "train_seconds", "run_dir")


# Synthetic data and loaders -----------------------------------------------------------------

def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy 3-class task: class k has its channel k brightened."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 1.0
    return x, y


class Loader:
    """Batches of (x, y); order from ``set_epoch`` only; noise from the global torch, Python
    and NumPy RNGs (so a resume must restore them); optional shard and self-kill."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool,
                 rank: int = 0, world: int = 1, kill_at: tuple[int, int] | None = None):
        self.x, self.y, self.batch_size, self.train = x, y, batch_size, train
        self.rank, self.world, self.kill_at, self.epoch = rank, world, kill_at, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.y)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(100 + self.epoch))
                 if self.train else torch.arange(n))
        return order[self.rank::self.world]

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        for b, start in enumerate(range(0, len(idx), self.batch_size)):
            if self.kill_at == (self.epoch, b):
                os.kill(os.getpid(), signal.SIGKILL)
            sel = idx[start:start + self.batch_size]
            x = self.x[sel]
            if self.train:
                x = x + 0.1 * torch.randn_like(x) * float(np.random.rand())
                if random.random() < 0.5:
                    x = x.flip(3)
            yield x, self.y[sel]


def loaders(n_train: int = 192, n_test: int = 96, batch: int = 32, **kw: object
            ) -> tuple[Loader, Loader]:
    kill_at = kw.pop("kill_at", None)
    return (Loader(*make_data(n_train, 0), batch, train=True, kill_at=kill_at, **kw),
            Loader(*make_data(n_test, 1), 64, train=False, **kw))


def random_masks(model: nn.Module, density: float, seed: int) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({name: torch.rand(m.shape, generator=g) < density
                  for name, m in Masks.of(model).items()})


def small_config(**changes: object) -> TrainConfig:
    base = dict(epochs=4, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
                milestones=(2,), gamma=0.1)
    return TrainConfig(**{**base, **changes})


def without(record: dict, keys: tuple[str, ...] = TIMING) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


# Learning, metrics, schedules -----------------------------------------------------------------

def test_training_learns_and_records_metrics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    config = small_config(epochs=5, milestones=(3,))
    result = train(model, *loaders(), config, tmp_path, device="cpu", progress=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 6))
    assert records[-1]["loss"] < records[0]["loss"]
    assert result["final_test_acc"] == records[-1]["test_acc"] > 1 / CLASSES + 0.3
    best = max(records, key=lambda r: r["test_acc"])
    assert (result["best_test_acc"], result["best_epoch"]) == (best["test_acc"], best["epoch"])
    assert [r["lr"] for r in records] == pytest.approx([lr_at(config, e) for e in range(5)])
    # images_per_s counts the epoch's 192 training images over the training pass alone, and
    # seconds also includes the test pass: so images_per_s * seconds >= 192
    assert all(r["seconds"] > 0 and r["images_per_s"] * r["seconds"] >= 192 * (1 - 1e-9)
               for r in records)
    assert result["train_seconds"] == pytest.approx(sum(r["seconds"] for r in records))
    assert json.loads((tmp_path / "done.json").read_text())["result"] == result


def test_lr_schedules_match_torch_schedulers() -> None:
    param = [nn.Parameter(torch.zeros(1))]
    multi = TrainConfig(epochs=9, lr=0.2, milestones=(3, 7), gamma=0.5)
    cosine = TrainConfig(epochs=9, lr=0.2, schedule="cosine")
    for config, make in ((multi, lambda o: torch.optim.lr_scheduler.MultiStepLR(
            o, list(multi.milestones), multi.gamma)),
            (cosine, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, cosine.epochs))):
        opt = torch.optim.SGD(param, lr=config.lr)
        sched = make(opt)
        for epoch in range(config.epochs):
            assert lr_at(config, epoch) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
            opt.step()
            sched.step()
    warm = TrainConfig(epochs=10, lr=0.4, schedule="cosine", warmup_epochs=4)
    assert [lr_at(warm, e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    after = [lr_at(warm, e) for e in range(4, 10)]
    assert after[0] == pytest.approx(0.4) and after == sorted(after, reverse=True)
    assert lr_at(warm, 7) == pytest.approx(0.4 * (1 + math.cos(math.pi * 3 / 6)) / 2)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="milestones"):
        TrainConfig(milestones=(5, 2))


# Presets and flags ----------------------------------------------------------------------------

def test_presets_name_models_and_unknown_preset_lists_known() -> None:
    for name, preset in PRESETS.items():
        assert get_preset(name) is preset
        assert preset.model in MODELS or (name == "custom" and not preset.model)
        assert preset.prune_rounds >= 1 and preset.prune_repeats >= 1
    assert get_preset("cifar100-vgg16").train.nesterov
    with pytest.raises(UnknownNameError, match="cifar10-resnet20"):
        get_preset("mnist-lenet")


@dataclasses.dataclass(frozen=True)
class OtherConfig:
    """A config of another shape: required, optional, literal, path and float-tuple fields."""

    steps: int
    seed: int | None = None
    mode: Literal["a", "b"] = "a"
    out: Path = Path("x")
    scales: tuple[float, ...] = (0.5,)
    verbose: bool = True


@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(amp=True, channels_last=True, nesterov=True, schedule="cosine", lr=0.0123,
                milestones=(), optimizer="adamw", label_smoothing=0.1, warmup_epochs=2),
    get_preset("tinyimagenet-resnet18").train,
    OtherConfig(steps=3, seed=7, mode="b", out=Path("/tmp/y"), scales=(0.1, 1e-7),
                verbose=False),
    OtherConfig(steps=0),
])
def test_config_argparse_round_trip(config: object) -> None:
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, type(config), prefix="x-")
    assert dataclass_from_args(type(config), parser.parse_args(dataclass_to_argv(
        config, prefix="x-")), prefix="x-") == config
    bools = [a for a in parser._actions if a.dest in {"x_amp", "x_verbose", "x_nesterov"}]
    assert bools and all(isinstance(a, argparse.BooleanOptionalAction) for a in bools)


def test_preset_defaults_and_boolean_flags() -> None:
    preset = get_preset("cifar100-vgg16").train
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig, defaults=preset)
    assert dataclass_from_args(TrainConfig, parser.parse_args([])) == preset
    changed = dataclass_from_args(TrainConfig, parser.parse_args(["--no-nesterov", "--amp"]))
    assert changed == dataclasses.replace(preset, nesterov=False, amp=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--amp", "false"])


# Masks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,pre_applied", [
    (dict(optimizer="sgd", momentum=0.9, weight_decay=5e-3), True),
    (dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-3,
          channels_last=True), False),
    (dict(optimizer="adamw", lr=3e-3, weight_decay=0.1, schedule="cosine"), False),
])
def test_pruned_weights_stay_exactly_zero(tmp_path: Path, changes: dict, pre_applied: bool
                                          ) -> None:
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    masks = random_masks(model, density=0.3, seed=1)
    if pre_applied:
        masks.apply(model)
    with torch.no_grad():  # make pruned stored weights non-zero: apply must zero them
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                raw_weight(module).add_(1.0)
    modules = dict(model.named_modules())
    before = {name: raw_weight(modules[name]).clone() for name in masks}
    result = train(model, *loaders(), small_config(epochs=2, **changes), tmp_path, device="cpu",
                   masks=None if pre_applied else masks, progress=False)
    if pre_applied:
        masks.apply(model)  # idempotent: must not change a trained, masked model
    for name, mask in masks.items():
        raw, eff = raw_weight(modules[name]), modules[name].weight
        assert torch.equal(raw[~mask], torch.zeros_like(raw[~mask]))
        assert torch.equal(eff[~mask], torch.zeros_like(eff[~mask]))
        assert not torch.equal(raw[mask], before[name][mask])  # the kept weights trained
    zeros = measured_sparsity(model) * masks.total  # pruned weights, and no others, are 0
    assert round(zeros) == masks.total - masks.remaining and abs(zeros - round(zeros)) < 1e-6
    assert result["measured_sparsity"] == pytest.approx(masks.sparsity, abs=1e-12)


# Resume, finished runs, corrupt checkpoints --------------------------------------------------

def _worker_resume(run_dir: str, mode: str) -> None:
    """Train the reference 4-epoch run; ``mode`` = none | mid (kill -9 inside epoch 3) |
    after (kill -9 right after epoch 2's checkpoint). Prints each epoch trained."""
    torch.set_num_threads(1)
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    masks = random_masks(model, density=0.5, seed=2)

    def hook(record: dict) -> None:
        print(f"epoch {record['epoch']}", flush=True)
        if mode == "after" and record["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    train(model, *loaders(kill_at=(2, 3) if mode == "mid" else None),
          small_config(nesterov=True), run_dir, device="cpu", masks=masks, progress=False,
          on_epoch_end=hook)


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def test_kill9_and_resume_is_bitwise_identical(tmp_path: Path) -> None:
    dirs = {mode: tmp_path / mode for mode in ("none", "mid", "after")}
    first = {mode: _spawn("resume-worker", str(d), mode) for mode, d in dirs.items()}
    codes = {mode: _finish(p) for mode, p in first.items()}
    assert codes["none"][0] == 0, codes["none"][1]
    assert codes["mid"][0] == codes["after"][0] == -signal.SIGKILL
    assert not (dirs["mid"] / "done.json").exists()
    with open(dirs["after"] / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "torn line')  # as if killed while writing: must not survive
    second = {mode: _spawn("resume-worker", str(dirs[mode]), "none") for mode in ("mid", "after")}
    for proc in second.values():
        code, out = _finish(proc)
        assert code == 0, out
        assert out.split() == ["epoch", "3", "epoch", "4"]  # resumed, not restarted
    ref = torch.load(dirs["none"] / "checkpoint.pt", weights_only=True)
    ref_metrics = (dirs["none"] / "metrics.jsonl").read_text().splitlines()
    for mode in ("mid", "after"):
        got = torch.load(dirs[mode] / "checkpoint.pt", weights_only=True)
        assert got["model"].keys() == ref["model"].keys()
        assert all(torch.equal(got["model"][k], ref["model"][k]) for k in ref["model"])
        assert str(got["optimizer"]) == str(ref["optimizer"])
        lines = (dirs[mode] / "metrics.jsonl").read_text().splitlines()
        assert [without(json.loads(a)) for a in lines] == \
            [without(json.loads(b)) for b in ref_metrics]
        done = json.loads((dirs[mode] / "done.json").read_text())["result"]
        assert without(done) == without(json.loads(
            (dirs["none"] / "done.json").read_text())["result"])


def test_finished_run_is_not_trained_again(tmp_path: Path) -> None:
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    config = small_config(epochs=2)
    result = train(model, *loaders(), config, tmp_path, device="cpu", progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    fresh = build_model("convnet", num_classes=CLASSES, seed=5)

    def fail(record: dict) -> None:
        raise AssertionError("a finished run was trained again")

    again = train(fresh, *loaders(), config, tmp_path, device="cpu", progress=False,
                  on_epoch_end=fail)
    assert again == result
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamp
    trained, loaded = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    with pytest.raises(CheckpointError, match="another training config"):
        train(fresh, *loaders(), small_config(epochs=3), tmp_path, device="cpu", progress=False)


class PoisonedLoader(Loader):
    """Training batches whose inputs are infinite in one (0-based) epoch."""

    def __init__(self, *args: object, poison_epoch: int, **kw: object) -> None:
        super().__init__(*args, **kw)
        self.poison_epoch = poison_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in super().__iter__():
            yield (x * math.inf if self.epoch == self.poison_epoch else x), y


def test_a_diverged_run_stops_at_that_epoch_and_says_so_again_on_rerun(tmp_path: Path) -> None:
    """Epoch 2's inputs are infinite, so its loss is not finite: training stops after that
    epoch's record and checkpoint (no epoch 3, no done.json), with an error naming epoch 2
    and the fix; running it again raises the same without training an epoch."""
    config = small_config(epochs=4)
    train_loader = PoisonedLoader(*make_data(192, 0), 32, train=True, poison_epoch=1)
    test_loader = loaders()[1]
    seen: list[int] = []
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"not finite in epoch 2.*--lr"):
        train(model, train_loader, test_loader, config, tmp_path, device="cpu", progress=False,
              on_epoch_end=lambda record: seen.append(record["epoch"]))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == seen == [1, 2]
    assert math.isfinite(records[0]["loss"]) and not math.isfinite(records[1]["loss"])
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "done.json").exists()

    def fail(record: dict) -> None:
        raise AssertionError("a diverged run was trained again")

    again = build_model("convnet", num_classes=CLASSES, seed=0)
    with pytest.raises(TrainingDivergedError, match="epoch 2"):
        train(again, *loaders(), config, tmp_path, device="cpu", progress=False,
              on_epoch_end=fail)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_raises_and_is_kept(tmp_path: Path, damage: str) -> None:
    model = build_model("convnet", num_classes=CLASSES, seed=0)
    path = tmp_path / "checkpoint.pt"
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    else:
        train(model, *loaders(), small_config(epochs=1), tmp_path, device="cpu", progress=False)
        (tmp_path / "done.json").unlink()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    content = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        train(model, *loaders(), small_config(epochs=2), tmp_path, device="cpu",
              progress=False)
    assert str(path) in str(info.value) and "move it away" in str(info.value)
    assert path.read_bytes() == content and not (tmp_path / "done.json").exists()


# Distributed ----------------------------------------------------------------------------------

def _worker_ddp(rank: int, world: int, port: int, out_dir: str) -> None:
    """One gloo rank: different initial weights per rank, the same masks, sharded data."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        model = build_model("convnet", num_classes=CLASSES, seed=rank)
        masks = random_masks(build_model("convnet", num_classes=CLASSES), 0.4, seed=3)
        result = train(model, *loaders(batch=16, rank=rank, world=world),
                       small_config(epochs=2, nesterov=True), Path(out_dir) / "run",
                       device="cpu", masks=masks, progress=False, distributed=True)
        torch.save({"state": model.state_dict(), "masks": dict(Masks.of(model)),
                    "expected_masks": dict(masks), "result": result},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_agree(tmp_path: Path) -> None:
    port = str(_free_port())
    procs = [_spawn("ddp-worker", str(r), "2", port, str(tmp_path)) for r in range(2)]
    for proc in procs:
        code, out = _finish(proc)
        assert code == 0, out
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["state"].keys() == r1["state"].keys()
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    for name, mask in r0["expected_masks"].items():
        assert torch.equal(r0["masks"][name], mask) and torch.equal(r1["masks"][name], mask)
        weight = r0["state"][f"{name}.parametrizations.weight.original"]
        assert torch.equal(weight[~mask], torch.zeros_like(weight[~mask]))
    assert without(r0["result"]) == without(r1["result"])
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2  # written once, by rank 0
    n_test = 96
    for line in metrics:
        acc = json.loads(line)["test_acc"]  # summed over both ranks' shards
        assert abs(acc * n_test - round(acc * n_test)) < 1e-9


if __name__ == "__main__":
    if sys.argv[1] == "resume-worker":
        _worker_resume(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "ddp-worker":
        _worker_ddp(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
