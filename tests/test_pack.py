"""Packs: M runs trained as one fused model give what M separate runs give, and leave the same
records. The oracle is each run trained on its own by `run_experiment` (the ordinary loop)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ntksap.errors import TrainingDivergedError
from ntksap.experiment import resolve, run_experiment
from ntksap.models import build_model
from ntksap.pack import UnfusableModelError, fuse, run_pack
from ntksap.pack import train as pack_train
from ntksap.pack.fuse import check_fused, split_logits, split_state, stack_inputs

COMMON = dict(dataset="synthetic", model="convnet", limit_per_class=20,
              train_overrides={"epochs": 2, "batch_size": 16})
TIMING = ("seconds", "images_per_s", "pack_seconds", "pack_size")


def _configs(**overrides):
    common = {**COMMON, **overrides}
    return [resolve("cifar10-resnet20", "snip", 0.8, seed=0, **common),
            resolve("cifar10-resnet20", "random", 0.95, seed=1, **common),
            resolve("cifar10-resnet20", "dense", 0.0, seed=2, **common)]


def _checkpoint(summary: dict) -> dict:
    return torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)


def _metrics(summary: dict) -> list[dict]:
    lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _assert_close_states(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert torch.allclose(a[key].double(), b[key].double(), rtol=0, atol=tol), key


@pytest.mark.parametrize("gathered", [True, False])
def test_a_pack_trains_each_network_as_its_separate_run(tmp_path, double_precision, one_thread,
                                                        monkeypatch, gathered):
    """Different methods, sparsities, seeds (so masks, theta_0, data order and augmentation),
    one dense: weights, BatchNorm running statistics, momentum, per-epoch losses and accuracies
    equal the separate runs' to 1e-10 in float64; pruned weights stay exactly zero; the run
    directories hold the same files. Both data paths: the gathered stream (in-memory data)
    and the networks' loaders zipped (data streamed from disk)."""
    import ntksap.pack.data as pack_data

    if not gathered:
        monkeypatch.setattr(pack_data, "can_gather", lambda loaders: False)
    configs = _configs()
    separate = [run_experiment(c, out_dir=tmp_path / "separate", progress=False)
                for c in configs]
    packed = run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    assert not any(r.failed for r in packed)
    for alone, member in zip(separate, packed, strict=True):
        got = member.summary
        a, b = _checkpoint(alone), _checkpoint(got)
        _assert_close_states(a["model"], b["model"], 1e-10)
        assert any("running_var" in k for k in b["model"])
        for index, entry in a["optimizer"]["state"].items():
            assert torch.allclose(entry["momentum_buffer"],
                                  b["optimizer"]["state"][index]["momentum_buffer"],
                                  rtol=0, atol=1e-10)
        for x, y in zip(_metrics(alone), _metrics(got), strict=True):
            assert x.keys() == y.keys()
            assert abs(x["loss"] - y["loss"]) < 1e-10 and x["test_acc"] == y["test_acc"]
            assert x["train_acc"] == y["train_acc"] and x["lr"] == y["lr"]
        for key in ("final_test_acc", "best_test_acc", "best_epoch", "measured_sparsity",
                    "remaining", "total", "effective_sparsity"):
            assert got[key] == alone[key], key
        names = {p.name for p in Path(alone["run_dir"]).iterdir()}
        assert {p.name for p in Path(got["run_dir"]).iterdir()} == names
        assert Path(got["run_dir"]).name == Path(alone["run_dir"]).name
        masks_file = Path(got["run_dir"]) / "masks.pt"
        if masks_file.exists():
            masks = torch.load(masks_file, weights_only=True)["masks"]
            for name, mask in masks.items():
                weight = b["model"][f"{name}.parametrizations.weight.original"]
                assert (weight[~mask] == 0).all()
    assert not (tmp_path / "pack" / "packs").exists()  # the pack's checkpoint is gone


def test_a_pack_of_one_equals_ntksap_run(tmp_path, double_precision, one_thread):
    config = _configs()[0]
    alone = run_experiment(config, out_dir=tmp_path / "a", progress=False)
    [member] = run_pack([config], out_dir=tmp_path / "b", progress=False)
    _assert_close_states(_checkpoint(alone)["model"], _checkpoint(member.summary)["model"],
                         1e-10)
    assert _metrics(alone)[-1]["test_acc"] == _metrics(member.summary)[-1]["test_acc"]


def test_finished_runs_are_found_both_ways(tmp_path, one_thread):
    """A network a pack finished is finished for `ntksap run` (and the reverse): neither
    trains again."""
    configs = _configs()[:2]
    alone = run_experiment(configs[0], out_dir=tmp_path, progress=False)
    packed = run_pack(configs, out_dir=tmp_path, progress=False)
    assert packed[0].summary.get("already_done") and packed[0].summary["run_dir"] == \
        alone["run_dir"]
    again = run_experiment(configs[1], out_dir=tmp_path, progress=False)
    assert again.get("already_done")
    assert again["final_test_acc"] == packed[1].summary["final_test_acc"]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_diverging_network_fails_alone(tmp_path, double_precision, one_thread, monkeypatch,
                                         optimizer):
    """Network 1's weights are made NaN before training: it is stopped and failed with its
    epoch; networks 0 and 2 train exactly as their separate runs (SGD and AdamW states)."""
    configs = _configs(train_overrides={"epochs": 2, "batch_size": 16, "optimizer": optimizer})
    fused_model = pack_train._fused_model

    def poisoned(members, device, config):
        model = fused_model(members, device, config)
        with torch.no_grad():
            weight = model.features[0].parametrizations.weight.original
            weight.view(len(members), -1)[1] = float("nan")
        return model

    monkeypatch.setattr(pack_train, "_fused_model", poisoned)
    packed = run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    assert packed[1].failed and "epoch 1" in packed[1].error
    preset_dir = Path(packed[0].summary["run_dir"]).parent
    assert len(list(preset_dir.glob("random-sp0.95-seed1-*/metrics.jsonl"))) == 1
    assert not any(preset_dir.glob("random-sp0.95-seed1-*/done.json"))
    (diverged,) = preset_dir.glob("random-sp0.95-seed1-*")
    metrics = (diverged / "metrics.jsonl").read_text()
    with pytest.raises(TrainingDivergedError, match="not finite in epoch 1"):
        run_experiment(configs[1], out_dir=tmp_path / "pack", progress=False)
    assert (diverged / "metrics.jsonl").read_text() == metrics  # reported, not trained again
    for i in (0, 2):
        alone = run_experiment(configs[i], out_dir=tmp_path / "separate", progress=False)
        _assert_close_states(_checkpoint(alone)["model"],
                             _checkpoint(packed[i].summary)["model"], 1e-10)


def test_a_pack_shares_its_time_among_its_networks_and_scopes_cudnn_autotuning(
        tmp_path, one_thread, monkeypatch):
    """Each network records its share of the pack's time (seconds = pack_seconds / M) beside
    the pack's own, per epoch and in its summary; cuDNN autotuning is on while the pack
    trains and the process's setting is back afterwards."""
    seen = []
    fit = pack_train._fit

    def spying(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return fit(*args, **kwargs)

    monkeypatch.setattr(pack_train, "_fit", spying)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    packed = run_pack(_configs()[:2], out_dir=tmp_path, progress=False)
    assert seen == [True] and torch.backends.cudnn.benchmark is False
    records = []
    for result in packed:
        summary = result.summary
        assert summary["pack_size"] == 2
        assert summary["seconds"] == pytest.approx(summary["pack_seconds"] / 2, rel=1e-12)
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        records.append([json.loads(line) for line in lines])
    for epoch in zip(*records, strict=True):
        for record in epoch:
            assert record["pack_size"] == 2
            assert record["seconds"] == pytest.approx(record["pack_seconds"] / 2, rel=1e-12)
        assert len({(r["pack_seconds"], r["images_per_s"]) for r in epoch}) == 1  # one clock
    alone = run_experiment(_configs()[0], out_dir=tmp_path / "alone", progress=False)
    assert alone["pack_size"] == 1 and alone["seconds"] == alone["pack_seconds"]


KILL_SCRIPT = textwrap.dedent("""
    import sys, json
    from ntksap.experiment import resolve
    from ntksap.pack import run_pack
    common = dict(dataset="synthetic", model="convnet", limit_per_class=60,
                  train_overrides={"epochs": 4, "batch_size": 16})
    configs = [resolve("cifar10-resnet20", m, s, seed=i, **common)
               for i, (m, s) in enumerate([("magnitude", 0.5), ("random", 0.9)])]
    results = run_pack(configs, out_dir=sys.argv[1], progress=False)
    print(json.dumps([r.summary for r in results]))
""")


def test_kill_9_mid_pack_then_rerun_equals_an_uninterrupted_pack(tmp_path):
    argv = [sys.executable, "-c", KILL_SCRIPT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = subprocess.run([*argv, str(tmp_path / "a")], capture_output=True, text=True,
                           timeout=600, check=True, env=env)
    expected = json.loads(clean.stdout.strip().splitlines()[-1])
    proc = subprocess.Popen([*argv, str(tmp_path / "b")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    packs = tmp_path / "b" / "packs"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(packs.rglob("checkpoint.pt")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the pack ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*argv, str(tmp_path / "b")], capture_output=True, text=True,
                             timeout=600, check=True, env=env)
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    for want, have in zip(expected, got, strict=True):
        assert have["final_test_acc"] == want["final_test_acc"]
        assert _metrics(have) == _metrics(want)
        a, b = _checkpoint(want)["model"], _checkpoint(have)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise on CPU


@pytest.mark.parametrize("name, shape", [
    ("resnet20", (3, 32, 32)), ("vgg11", (3, 32, 32)), ("tiny_resnet18", (3, 64, 64)),
    ("lenet300", (1, 28, 28)), ("lenet5", (1, 28, 28)), ("mlp", (1, 28, 28)),
    ("convnet", (3, 32, 32)), ("resnet18", (3, 64, 64))])
def test_every_zoo_model_fuses_exactly(name, shape, double_precision, one_thread):
    models = [build_model(name, 10, seed=s) for s in range(3)]
    fused = fuse(models)
    check_fused(fused, models, shape, tolerance=1e-10)
    split = split_state(fused.state_dict(), {k: v.shape for k, v in
                                             models[0].state_dict().items()}, 3)
    for model, state in zip(models, split, strict=True):
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class _Mixing(nn.Module):
    """A forward pass that mixes channels: the mean over all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = self.conv(x)
        return self.fc((h - h.mean(1, keepdim=True)).mean((2, 3)))


@pytest.mark.parametrize("layer, message", [
    (nn.LayerNorm(10), "LayerNorm"), (nn.Dropout(0.5), "dropout"),
    (nn.Embedding(3, 4), "Embedding")])
def test_unfusable_layers_are_refused_naming_them(layer, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), layer)
    with pytest.raises(UnfusableModelError, match=message) as info:
        fuse([model, model])
    assert "'2'" in str(info.value) and "--pack-size 1" in str(info.value)


def test_a_forward_that_mixes_networks_is_refused():
    models = [_Mixing(), _Mixing()]
    with pytest.raises(UnfusableModelError, match="mixes channels"):
        check_fused(fuse(models), models, (3, 8, 8))


def test_the_fused_layout_keeps_each_network_in_its_block(double_precision):
    """Network 1's output does not move when network 0's input changes."""
    models = [build_model("convnet", 10, seed=s).eval() for s in range(2)]
    fused = fuse(models).eval()
    x = torch.randn(4, 3, 32, 32)
    base = split_logits(fused(stack_inputs([x, x])), 2)
    moved = split_logits(fused(stack_inputs([x + 1, x])), 2)
    assert torch.equal(base[:, 1], moved[:, 1]) and not torch.equal(base[:, 0], moved[:, 0])


def test_a_pack_refuses_mixed_recipes_and_a_run_twice(tmp_path):
    a = _configs()[0]
    b = resolve("cifar10-resnet20", "snip", 0.8, seed=0, **{
        **COMMON, "train_overrides": {"epochs": 3, "batch_size": 16}})
    with pytest.raises(Exception, match="training recipe"):
        run_pack([a, b], out_dir=tmp_path)
    with pytest.raises(Exception, match="twice"):
        run_pack([a, a], out_dir=tmp_path)
    assert not tmp_path.joinpath("cifar10-resnet20").exists()


@pytest.mark.parametrize("augment", ["crop", "resized"])
def test_the_gathered_stream_is_each_networks_own_loader(augment, one_thread):
    """PackLoader (one gather and one augmentation for all networks) yields, per network,
    bitwise the batches of that network's own TensorLoader, epoch after epoch."""
    from ntksap.data.augment import RandomCropFlip, RandomResizedCropFlip
    from ntksap.data.loader import TensorLoader
    from ntksap.data.synthetic import synthetic_splits
    from ntksap.pack.data import PackLoader

    train, _ = synthetic_splits(train_per_class=7, test_per_class=2)
    aug = RandomCropFlip(4) if augment == "crop" else RandomResizedCropFlip(size=24)

    def loaders():
        return [TensorLoader(train, 16, augment=aug, shuffle=True, seed=s, drop_last=True)
                for s in (3, 5, 8)]

    pack, alone = PackLoader(loaders()), loaders()
    for epoch in range(2):
        batches = list(pack)
        for m, loader in enumerate(alone):
            assert loader.epoch == epoch
            own = list(loader)
            assert len(own) == len(batches)
            for (x, y), (xs, ys) in zip(own, batches, strict=True):
                c = x.shape[1]
                assert torch.equal(xs[:, m * c:(m + 1) * c], x) and torch.equal(ys[:, m], y)


def test_a_compiled_pack_trains_as_the_eager_pack(tmp_path, one_thread):
    """run_pack(compile=True) (torch.compile of the fused model, the GPU fast path's switch)
    gives the eager pack's per-epoch records up to float32 reassociation."""
    configs = _configs(train_overrides={"epochs": 1, "batch_size": 16})[:2]
    eager = run_pack(configs, out_dir=tmp_path / "eager", progress=False)
    compiled = run_pack(configs, out_dir=tmp_path / "compiled", progress=False, compile=True)
    for a, b in zip(eager, compiled, strict=True):
        x, y = _metrics(a.summary)[-1], _metrics(b.summary)[-1]
        assert abs(x["loss"] - y["loss"]) < 1e-4 and abs(x["test_acc"] - y["test_acc"]) <= 0.02


def test_an_unfusable_model_fails_or_trains_run_by_run_when_asked(tmp_path, one_thread,
                                                                  monkeypatch):
    """Without separate_unfusable the pack raises before creating anything; with it, each run
    trains on its own (the same result as `ntksap run`)."""
    def refuse(*args, **kwargs):
        raise UnfusableModelError("layer 'x' (LayerNorm) ...")

    monkeypatch.setattr(pack_train, "check_fused", refuse)
    configs = _configs()[:2]
    with pytest.raises(UnfusableModelError, match="LayerNorm"):
        run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    assert not (tmp_path / "pack").exists()
    results = run_pack(configs, out_dir=tmp_path / "pack", progress=False,
                       separate_unfusable=True)
    alone = run_experiment(configs[1], out_dir=tmp_path / "alone", progress=False)
    assert not any(r.failed for r in results)
    assert _metrics(results[1].summary) == _metrics(alone)


def test_shared_stream_runs_share_one_stream_and_a_pack_draws_it_once(tmp_path, double_precision,
                                                                       one_thread):
    """shared_stream: recorded in each run's config and name; every such run trains on the
    same batches whatever its seed; a pack of them (one batch drawn for all) equals their
    separate runs."""
    import ntksap.pack.data as pack_data
    from ntksap.experiment import identity, loaders, open_data

    configs = [resolve("cifar10-resnet20", "random", 0.9, seed=s, shared_stream=True,
                       **COMMON) for s in (1, 2)]
    own = resolve("cifar10-resnet20", "random", 0.9, seed=1, **COMMON)
    assert identity(configs[0])["shared_stream"] is True and "shared_stream" not in identity(own)
    bundle = open_data(configs[0], None, False, False)
    streams = [loaders(c, bundle, torch.device("cpu"))[0] for c in (*configs, own)]
    first = [next(iter(s)) for s in streams]
    assert torch.equal(first[0][0], first[1][0]) and not torch.equal(first[0][0], first[2][0])
    assert pack_data.PackLoader(streams[:2]).shared()
    alone = [run_experiment(c, out_dir=tmp_path / "alone", progress=False) for c in configs]
    packed = run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    for a, member in zip(alone, packed, strict=True):
        _assert_close_states(_checkpoint(a)["model"], _checkpoint(member.summary)["model"],
                             1e-10)
        recorded = json.loads((Path(member.summary["run_dir"]) / "config.json").read_text())
        assert recorded["config"]["shared_stream"] is True
