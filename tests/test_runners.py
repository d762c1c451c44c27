"""The three kinds of run (dense, prune-at-initialization, IMP) pass one runner contract."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ntksap import rundir
from ntksap.errors import ConfigError
from ntksap.runners import RUNNERS, label, runner_for, runner_for_job
from ntksap.sweep.jobs import config_of, make_job

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = "cifar10-resnet20"
TINY = {"dataset": "synthetic", "model": "convnet", "limit_per_class": 12,
        "train_overrides": {"epochs": 1, "batch_size": 32}}
# runner name -> (method, sparsity, extra config fields, whether the run has masks)
KINDS = {"dense": ("dense", 0.0, {}, False), "prune": ("snip", 0.5, {}, True),
         "imp": ("imp", 1 - 0.8 ** 2, {"rounds": 1}, True)}


def _config(name: str, seed: int = 0):
    method, sparsity, extra, _ = KINDS[name]
    return RUNNERS[name].config(PRESET, method, sparsity, seed=seed, **TINY, **extra)


def _no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


@pytest.mark.parametrize("name", list(KINDS))
def test_runner_contract(name, tmp_path, monkeypatch):
    runner, (method, _, _, masked) = RUNNERS[name], KINDS[name]
    config = _config(name)
    assert runner_for(config) is runner
    directory = runner.plan(config, tmp_path)  # plan: deterministic, named by the config
    assert directory == runner.plan(_config(name), tmp_path)
    assert directory != runner.plan(_config(name, seed=1), tmp_path)
    assert directory.parent == tmp_path / PRESET and directory.name.startswith(f"{method}-sp")
    assert runner.record(directory) is None and not directory.exists()

    summary = runner.run(config, out_dir=tmp_path, progress=False)
    assert Path(summary["run_dir"]) == directory and not summary.get("already_done")
    for path in (rundir.config_path(directory), rundir.done_path(directory),
                 rundir.summary_path(directory)):
        assert path.is_file(), path
    assert (rundir.existing_masks(directory) is not None) == masked

    for module in ("ntksap.runs.driver", "ntksap.runs.imp"):  # a finished run is not redone
        monkeypatch.setattr(f"{module}.train", _no_training)
        monkeypatch.setattr(f"{module}.open_data", _no_training)
    again = runner.run(config, out_dir=tmp_path, progress=False)
    assert again == {**summary, "already_done": True}

    record = runner.record(directory)
    assert record == {**summary, "already_done": True}
    assert record["method"] == method and label(record["method"]) == runner.label(method)
    assert runner.label(method) == method  # the report's names are the methods' (unchanged)


@pytest.mark.parametrize("name", list(KINDS))
def test_sweep_jobs_go_through_the_runner(name):
    runner, config = RUNNERS[name], _config(name)
    job = make_job(config, {"c": 1})
    assert job.key == runner.plan(config, "").as_posix() and job.kind == runner.job_kind
    assert runner_for_job(job.kind, job.config) is runner
    assert config_of(job) == config


def test_unknown_job_kind_is_named():
    with pytest.raises(ConfigError, match="unknown job kind 'pack'; known: imp, run"):
        runner_for_job("pack", {"method": "snip"})


def test_only_prune_runs_take_sanity_checks_and_only_dense_is_the_baseline():
    assert [n for n, r in RUNNERS.items() if r.sanity_checks] == ["prune"]
    assert [n for n, r in RUNNERS.items() if r.baseline] == ["dense"]
    assert dataclasses.is_dataclass(_config("imp")) and _config("imp").run.rounds == 1


def test_every_kind_of_run_has_a_command_imp_too(tmp_path, capsys):
    """``ntksap run --method imp`` runs the IMP runner: the same run directory as a sweep's
    IMP point, every round recorded; ``--rewind-epoch`` is refused for other methods."""
    from ntksap.cli import main
    from ntksap.runs.imp import imp_config, imp_dir

    common = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model", "convnet",
              "--limit-per-class", "10", "--epochs", "2", "--batch-size", "20", "--device",
              "cpu", "--no-progress", "--out-dir", str(tmp_path)]
    assert main(["run", *common, "--method", "imp", "--sparsity", "0.36", "--rewind-epoch",
                 "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    planned = imp_config("cifar10-resnet20", 0.36, rewind_epoch=1, dataset="synthetic",
                         model="convnet", limit_per_class=10,
                         train_overrides={"epochs": 2, "batch_size": 20})
    assert Path(summary["run_dir"]) == imp_dir(planned, tmp_path)
    # round 0 the dense network, then one round per step of the paper's grid (density x 0.64)
    assert [(r["round"], r["sparsity"]) for r in summary["rounds"]] == [(0, 0.0), (1, 0.36)]
    assert main(["run", *common, "--method", "snip", "--sparsity", "0.5", "--rewind-epoch",
                 "1"]) == 2
    assert "--rewind-epoch is IMP's" in capsys.readouterr().err
