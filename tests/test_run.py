"""`ntksap run`: prune, train, evaluate, record; resume after kill -9; DDP; bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import shared_archive

import ntksap
from ntksap.cli import main
from ntksap.errors import ConfigError, MissingDataError, UnknownNameError
from ntksap.experiment import resolve, run_experiment

QUICK = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--limit-per-class", "30",
         "--model", "convnet", "--rounds", "2", "--repeats", "1", "--no-progress", "--json"]
TIMING = ("seconds", "images_per_s")


def _run(capsys, *argv: str) -> dict:
    assert main(["run", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _metrics(run_dir: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_run_prunes_trains_and_records_everything(capsys, tmp_path):
    argv = [*QUICK, "--method", "ntksap", "--sparsity", "0.8", "--epochs", "5", "--lr", "0.1",
            "--batch-size", "32", "--out-dir", str(tmp_path)]
    out = _run(capsys, *argv)
    run_dir = Path(out["run_dir"])
    assert run_dir.parent.parent == tmp_path
    assert {"config.json", "init.pt", "masks.pt", "densities.json", "metrics.jsonl",
            "checkpoint.pt", "done.json", "summary.json"} <= {p.name for p in run_dir.iterdir()}
    record = json.loads((run_dir / "config.json").read_text())
    assert record["seed"] == 0 and record["config"]["method"] == "ntksap"
    assert record["config"]["train"]["epochs"] == 5 and record["config"]["train"]["lr"] == 0.1
    assert record["versions"]["torch"] and "git_commit" in record
    assert len(_metrics(out["run_dir"])) == 5
    assert out["final_test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert out["best_test_acc"] >= out["final_test_acc"]
    # the requested sparsity is the realized one, measured on the trained weights
    assert out["measured_sparsity"] == pytest.approx(1 - out["remaining"] / out["total"])
    assert out["total"] - out["remaining"] == round(0.8 * out["total"])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    masks = ntksap.Masks.load(run_dir / "masks.pt")
    for name, mask in masks.items():
        stored = state[f"{name}.parametrizations.weight.original"]
        assert (stored[~mask] == 0).all() and (stored[mask] != 0).any()
    # the same command again is reported, not redone
    again = _run(capsys, *argv)
    assert again["already_done"] and again["final_test_acc"] == out["final_test_acc"]


def test_dense_trains_through_the_same_path(capsys, tmp_path):
    out = _run(capsys, *QUICK, "--method", "dense", "--epochs", "1", "--out-dir", str(tmp_path))
    assert out["sparsity"] == 0.0 and not (Path(out["run_dir"]) / "masks.pt").exists()


def test_kill_9_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
    argv = [sys.executable, "-m", "ntksap", "run", *QUICK, "--method", "magnitude",
            "--sparsity", "0.5", "--epochs", "4", "--limit-per-class", "60"]
    clean = subprocess.run([*argv, "--out-dir", str(tmp_path / "a")], capture_output=True,
                           text=True, timeout=600, check=True)
    expected = json.loads(clean.stdout.strip().splitlines()[-1])

    proc = subprocess.Popen([*argv, "--out-dir", str(tmp_path / "b")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = Path(expected["run_dir"].replace(str(tmp_path / "a"), str(tmp_path / "b")))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (metrics / "metrics.jsonl").exists() and len(
                (metrics / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (metrics / "done.json").exists()
    resumed = subprocess.run([*argv, "--out-dir", str(tmp_path / "b")], capture_output=True,
                             text=True, timeout=600, check=True)
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert got["final_test_acc"] == expected["final_test_acc"]
    assert got["best_test_acc"] == expected["best_test_acc"]
    assert _metrics(got["run_dir"]) == _metrics(expected["run_dir"])


def test_short_run_on_real_cifar10_beats_chance(capsys, tmp_path, monkeypatch):
    archive = shared_archive("cifar10-jpeg.tar.gz")
    monkeypatch.setenv("NTKSAP_CACHE", str(tmp_path / "cache"))
    out = _run(capsys, "--preset", "cifar10-resnet20", "--data-dir", str(archive.parent),
               "--limit-per-class", "300", "--method", "ntksap", "--sparsity", "0.5",
               "--rounds", "2", "--repeats", "1", "--epochs", "8", "--milestones", "6",
               "--out-dir", str(tmp_path / "runs"), "--no-progress", "--json")
    # 3,000 training images, 8 epochs = 184 steps; 3,000 test images; chance is 0.10
    assert out["best_test_acc"] > 0.25


# Bad input -----------------------------------------------------------------------------------

def test_unknown_preset(capsys):
    assert main(["run", "--preset", "cifar11", "--method", "dense"]) == 2
    assert "unknown preset 'cifar11'" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 100}, "--num-classes 100 contradicts preset"),
    ({"dataset": "cifar100"}, "--dataset cifar100 contradicts preset"),
])
def test_flags_that_contradict_the_preset(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        resolve("cifar10-resnet20", "ntksap", 0.9, **kwargs)


def test_unknown_method_and_bad_sparsity():
    with pytest.raises(UnknownNameError, match="unknown method"):
        resolve("cifar10-resnet20", "ntk", 0.9)
    with pytest.raises(ValueError, match="sparsity must be"):
        resolve("cifar10-resnet20", "ntksap", 1.0)


def test_missing_dataset_names_the_path(tmp_path):
    config = resolve("cifar10-resnet20", "dense", 0.0)
    with pytest.raises(MissingDataError) as err:
        run_experiment(config, out_dir=tmp_path / "runs", data_dir=tmp_path / "nowhere",
                       progress=False)
    assert str(tmp_path / "nowhere") in str(err.value) and "--download" in str(err.value)


def test_corrupt_checkpoint_is_an_error_not_a_restart(capsys, tmp_path):
    argv = [*QUICK, "--method", "random", "--sparsity", "0.5", "--epochs", "2",
            "--out-dir", str(tmp_path)]
    out = _run(capsys, *argv)
    run_dir = Path(out["run_dir"])
    (run_dir / "done.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["run", *argv]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    assert (run_dir / "checkpoint.pt").read_bytes() == b"garbage"


# DDP ------------------------------------------------------------------------------------------

def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = resolve("cifar10-resnet20", "ntksap", 0.8, dataset="synthetic",
                         model="convnet", rounds=2, repeats=1, limit_per_class=20,
                         train_overrides={"epochs": 2, "batch_size": 32})
        import ntksap.train.loop as loop

        captured = {}
        original = loop.train

        def spy(model, *args, **kwargs):
            result = original(model, *args, **kwargs)
            captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            return result

        import ntksap.runs.driver as experiment

        experiment.train = spy
        run_experiment(config, out_dir=out_dir, progress=False, distributed=True)
        torch.save(captured, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_processes_share_mask_and_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    masks = [k for k in a if k.endswith(".mask")]
    assert masks and all(torch.equal(a[k], b[k]) for k in masks)
    assert all(torch.equal(a[k], b[k]) for k in a), "ranks ended with different weights"
    for k in masks:
        original = a[k.replace("0.mask", "original")]
        assert (original[a[k] == 0] == 0).all()


def test_a_run_records_the_code_its_process_started_with(monkeypatch):
    """A sweep that runs for hours records the commit it was started from (and whether the
    tracked files differed from it), not the HEAD of the moment each run starts."""
    import subprocess

    import ntksap.runs.source as experiment

    answers = {("rev-parse", "HEAD"): "abc123", ("status", "--porcelain",
                                                 "--untracked-files=no"): " M src/x.py"}
    monkeypatch.setattr(experiment, "_git", lambda *args: answers.get(args))
    assert experiment.code_state() == {"git_commit": "abc123", "git_dirty": True}
    answers[("status", "--porcelain", "--untracked-files=no")] = ""
    assert experiment.code_state()["git_dirty"] is False
    monkeypatch.setattr(experiment, "_git", lambda *args: None)
    assert experiment.code_state() == {"git_commit": None, "git_dirty": None}

    def no_git(*args, **kwargs):
        raise AssertionError("provenance() asked git again")

    monkeypatch.setattr(subprocess, "run", no_git)
    record = experiment.provenance()
    assert {k: record[k] for k in ("git_commit", "git_dirty")} == experiment.CODE
