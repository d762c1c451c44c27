"""Bad input, third pass (issue 23): each case gives one line naming the problem (`ntksap <cmd>:
error: ...` or `interrupted`), a non-zero exit, no traceback, and creates nothing.

The cases handled so far: training fields by type and range (validated once, in TrainConfig,
so `run`, sweeps and `--dry-run` refuse alike), the seed, NTT with no steps, `--set` values
that are not plain YAML, `--only` given twice for one field, sweep names that are empty or a
path, `lab frequency` with too few points, a missing GPU for `compare-masks` and `ntk`, Ctrl-C,
and the sweep's full-disk message said once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ntksap import cli
from ntksap.cli import main
from ntksap.errors import DiskFullError
from ntksap.sweep.jobs import sweep_disk_full

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--limit-per-class", "12",
        "--model", "convnet", "--epochs", "1", "--batch-size", "16", "--no-progress"]
QUICK = {"dataset": "synthetic", "model": "convnet", "limit_per_class": 4, "epochs": 1,
         "batch_size": 16}


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"ntksap {command}: "), err[0]
    return err[0]


def _nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.mark.parametrize("flags, message", [
    (["--momentum", "-1"], "momentum must be in [0, 1)"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0"),
    (["--gamma", "-1"], "gamma (the multistep decay factor) must be in (0, 1]"),
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--lr", "nan"], "lr must be a finite number, got nan"),
    (["--seed", "-3"], "seed (--seed) must be a whole number >= 0"),
])
def test_run_refuses_bad_training_fields_before_creating_anything(tmp_path, capsys, flags,
                                                                  message):
    out = tmp_path / "runs"
    assert main(["run", *TINY, "--method", "random", "--sparsity", "0.5", "--out-dir", str(out),
                 *flags]) == 2
    assert message in _one_line(capsys, "run")
    assert _nothing_in(out)


def _spec(tmp_path: Path, **spec) -> Path:
    spec = {"name": "s", "preset": "cifar10-resnet20", "out_dir": str(tmp_path / "runs"),
            "fixed": dict(QUICK), "grid": {"method": ["random"], "c": [2], "seed": [0]},
            **spec}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("spec, message", [
    ({"fixed": {**QUICK, "epochs": 1.5}}, "epochs must be a whole number, got 1.5"),
    ({"grid": {"method": ["random"], "c": [2], "seed": [1.5]}},
     "seed (--seed) must be a whole number >= 0; got 1.5"),
    ({"fixed": {**QUICK, "lr": True}}, "lr must be a finite number, got True"),
    ({"fixed": {**QUICK, "momentum": 1.0}}, "momentum must be in [0, 1)"),
    ({"name": ""}, "sweep name ''"),
    ({"name": ".."}, "sweep name '..'"),
    ({"name": "a/b"}, "sweep name 'a/b'"),
])
def test_dry_run_refuses_what_the_run_would(tmp_path, capsys, spec, message):
    path = _spec(tmp_path, **spec)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert message in _one_line(capsys, "sweep")
    assert _nothing_in(tmp_path / "runs")


@pytest.mark.parametrize("flags, message", [
    (["--set", "fixed.epochs=[1,2]"], "epochs must be a whole number, got [1, 2]"),
    (["--set", "fixed.epochs=[1,"], "override 'fixed.epochs=[1,': the value is not plain YAML"),
    (["--set", "fixed.epochs=!!python/object/apply:os.system ['true']"],
     "the value is not plain YAML"),
    (["--methods", "random", "--only", "method=magnitude"], "--only method is given twice"),
    (["--name", ""], "sweep name ''"),
])
def test_sweep_flags_that_cannot_mean_anything_are_one_line(tmp_path, capsys, flags, message):
    path = _spec(tmp_path)
    assert main(["sweep", str(path), "--dry-run", *flags]) == 2
    assert message in _one_line(capsys, "sweep")
    assert _nothing_in(tmp_path / "runs")


@pytest.mark.parametrize("option", ["steps=0", "epochs=0"])
def test_ntt_with_no_steps_is_refused(tmp_path, capsys, option):
    out = tmp_path / "m.pt"
    assert main(["prune", "--model", "convnet", "--method", "ntt", "--sparsity", "0.5",
                 "--dataset", "synthetic", "--option", option, "--out", str(out)]) == 2
    assert "must be an integer >= 1" in _one_line(capsys, "prune")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--points", "--indices"])
def test_lab_frequency_needs_three_eigenvectors_for_its_rank_correlation(tmp_path, capsys,
                                                                         flag):
    assert main(["lab", "frequency", "--out", str(tmp_path / "f"), flag, "2",
                 "--no-progress"]) == 2
    assert f"{flag} must be >= 3" in _one_line(capsys, "lab")
    assert not (tmp_path / "f").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
@pytest.mark.parametrize("command", [
    ["compare-masks", "a.pt", "b.pt"],
    ["ntk", "--model", "convnet"],
])
def test_a_missing_gpu_is_one_line(tmp_path, capsys, command):
    out = tmp_path / "out"
    assert main([*command, "--device", "cuda", "--out", str(out)]) == 2
    assert "no CUDA GPU" in _one_line(capsys, command[0])
    assert not out.exists()


@pytest.mark.parametrize("command, resumes", [("run", True), ("sweep", True), ("ntk", False)])
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, command, resumes):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS[command], "run", interrupted)
    argv = {"run": ["run", "--preset", "cifar10-resnet20", "--method", "dense"],
            "sweep": ["sweep", "spec.yaml"], "ntk": ["ntk", "--model", "convnet"]}[command]
    assert main(argv) == 130
    line = _one_line(capsys, command)
    assert line.startswith(f"ntksap {command}: interrupted")
    assert ("run the same command again" in line) == resumes


@pytest.mark.parametrize("error", [
    DiskFullError("DiskFullError: the disk is full: no space left to write /r/x.pt (its "
                  "previous version, if any, is intact); free some space and run again"),
    DiskFullError("the disk is full: no space left to write /r/x.pt (its previous version, "
                  "if any, is intact); free some space and run again", "/r/x.pt"),
    DiskFullError("the disk is full (a worker stopped: see w.log); free some space and run "
                  "the same command again: the sweep resumes where it stopped"),
])
def test_the_sweeps_full_disk_message_says_it_once(error):
    message = str(sweep_disk_full(error))
    assert message.count("the disk is full") == 1 and message.count("free some space") == 1
    assert "/r/x.pt" in message or "w.log" in message
