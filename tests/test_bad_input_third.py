"""Bad input, third pass (issue 23): each case gives one line naming the problem (`ntksap <cmd>:
error: ...` or `interrupted`), a non-zero exit, no traceback, and creates nothing (the report:
lists what it could not read, exit 1 when it drew nothing).

The table, by the issue's groups:
- silently wrong: masks of another model (compare-masks, ntk), NTT with no steps, the report's
  deleted run directory / unreadable metrics and masks / moved store, a sweep rerun after a
  deleted run directory;
- tracebacks: --momentum / --weight-decay < 0, pruning data of another shape (every
  data-needing method), damaged mask files (list, strings, no masks, empty, zero-size,
  non-0/1, wrong shape, bad meta), a missing GPU (compare-masks, ntk), --set values that are
  not plain YAML (and a list for a number), a legacy MNIST folder holding a tensor, a
  weights file that would run code;
- accepted, now refused: --gamma -1, --lr inf/nan, epochs 1.5, seed 1.5, lr true, momentum 1,
  --only given twice, sweep names '' / '..' / 'a/b', two specs under one sweep name, lab
  frequency with fewer than 3 points;
- late or misleading: an NTK over the memory budget before drawing inputs, synthetic data
  for any preset, 'drop --model' only when one was given;
- faults: read-only or full output for report, compare-masks, ntk and lab (no empty file),
  a store that cannot be written, a store on a read-only mount (reported), Ctrl-C, the
  temporaries of killed writes, the full-disk message said once, a damaged masks.pt in a run;
- security: names and labels escaped in Markdown;
- packs: the pack size a run trained in is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_bad_input_tools import QUICK, _spec  # the same tiny sweep spec

from ntksap import cli
from ntksap.cli import main
from ntksap.errors import DiskFullError
from ntksap.masks import FILE_FORMAT, Masks
from ntksap.sweep.jobs import sweep_disk_full

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--limit-per-class", "12",
        "--model", "convnet", "--epochs", "1", "--batch-size", "16", "--no-progress"]


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


def _mask_file(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def _good_masks() -> dict:
    return {"fc": torch.ones(2, 3, dtype=torch.bool)}


@pytest.mark.parametrize("payload, message", [
    ({"format": "ntksap-masks-v1", "masks": [1, 2]}, "holds no masks"),
    ({"format": "ntksap-masks-v1"}, "holds no masks"),
    ({"format": "ntksap-masks-v1", "masks": {}}, "holds no masks"),
    ({"format": "ntksap-masks-v1", "masks": {"fc": "ones"}}, "layer 'fc' has no mask tensor"),
    ({"format": "ntksap-masks-v1", "masks": {"fc": torch.ones(0, 3, dtype=torch.bool)}},
     "layer 'fc' has an empty mask"),
    ({"format": "ntksap-masks-v1", "masks": {"fc": torch.full((2, 3), 0.5)}},
     "values other than 0 and 1"),
    ({"format": "ntksap-masks-v1", "masks": _good_masks(), "shapes": {"fc": [3, 2]}},
     "the file records [3, 2]"),
    ({"format": "ntksap-masks-v1", "masks": _good_masks(), "meta": [1]},
     "'meta' entry is not a mapping"),
])
def test_compare_masks_refuses_a_damaged_mask_file_before_writing(tmp_path, capsys, payload,
                                                                  message):
    payload = {**payload, "format": FILE_FORMAT}
    good = tmp_path / "good.pt"
    Masks(_good_masks()).save(good)
    bad = _mask_file(tmp_path / "bad.pt", payload)
    out = tmp_path / "out"
    assert main(["compare-masks", str(good), str(bad), "--out", str(out)]) == 2
    line = _one_line(capsys, "compare-masks")
    assert "is a damaged ntksap mask file" in line and message in line
    assert not out.exists()


def _finished_run(tmp_path: Path, capsys) -> Path:
    out = tmp_path / "runs"
    assert main(["run", *TINY, "--method", "random", "--sparsity", "0.5", "--json",
                 "--out-dir", str(out)]) == 0
    return Path(json.loads(capsys.readouterr().out.splitlines()[-1])["run_dir"])


class _RunsCode:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_ntk_runs_refuses_a_weights_file_that_would_run_code(tmp_path, capsys):
    directory = _finished_run(tmp_path, capsys)
    torch.save({"w": _RunsCode()}, directory / "init.pt")
    assert main(["ntk", "--runs", str(directory), "--inputs", "4", "--no-progress"]) == 2
    line = _one_line(capsys, "ntk")
    assert "cannot read the weights" in line and "init.pt" in line
    assert not (directory / "ntk_spectrum.json").exists()


def test_a_damaged_masks_file_in_a_run_says_moving_it_aside_prunes_again(tmp_path, capsys):
    directory = _finished_run(tmp_path, capsys)
    (directory / "done.json").unlink()  # an unfinished run, resumed from its checkpoint
    (directory / "masks.pt").write_bytes(b"not a mask file")
    out = directory.parent.parent
    assert main(["run", *TINY, "--method", "random", "--sparsity", "0.5", "--json",
                 "--out-dir", str(out)]) == 2
    line = _one_line(capsys, "run")
    assert "is unreadable or damaged; move it aside" in line and "prunes again" in line
    assert "ntksap prune --out" not in line


@pytest.mark.parametrize("method", ["snip", "grasp", "force", "iter_snip", "ntt"])
def test_prune_with_data_of_another_shape_is_one_line(tmp_path, capsys, method):
    out = tmp_path / "m.pt"
    # synthetic data is CIFAR-shaped (3 x 32 x 32); LeNet-300-100 takes MNIST (1 x 28 x 28)
    assert main(["prune", "--model", "lenet300", "--method", method, "--sparsity", "0.5",
                 "--dataset", "synthetic", "--out", str(out)]) == 2
    line = _one_line(capsys, "prune")
    assert "the pruning data's examples have shape (3, 32, 32)" in line and "(1, 28, 28)" in line
    assert not out.exists()


def test_ntk_refuses_a_kernel_over_the_budget_before_drawing_its_inputs(tmp_path, capsys,
                                                                       monkeypatch):
    drawn = []
    monkeypatch.setattr(torch, "randn", lambda *a, **k: drawn.append(a) or 1 / 0)
    assert main(["ntk", "--model", "convnet", "--inputs", "1000000", "--memory-budget", "1MiB",
                 "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys, "ntk")
    assert "over the memory budget of 1.00 MiB" in line and "at most" in line
    assert drawn == [] and not (tmp_path / "out").exists()


def test_a_run_records_the_size_of_the_pack_it_trained_in(tmp_path, capsys):
    from ntksap.experiment import resolve
    from ntksap.pack import run_pack

    common = dict(dataset="synthetic", model="convnet", limit_per_class=10,
                  train_overrides={"epochs": 1, "batch_size": 16})
    configs = [resolve("cifar10-resnet20", m, 0.5, seed=0, **common)
               for m in ("random", "magnitude")]
    packed = run_pack(configs, out_dir=tmp_path / "pack", progress=False)
    assert [r.summary["pack_size"] for r in packed] == [2, 2]
    directory = _finished_run(tmp_path, capsys)
    assert json.loads((directory / "summary.json").read_text())["pack_size"] == 1


def test_labels_are_written_to_markdown_as_text_not_html(tmp_path, capsys):
    from ntksap.markdown import escape

    assert escape("<script>a|b</script>\n&`") == \
        "&lt;script&gt;a&#124;b&lt;/script&gt; &amp;&#96;"
    paths = []
    for i, keep in enumerate((0.3, 0.6)):
        g = torch.Generator().manual_seed(i)
        path = tmp_path / f"m{i}.pt"
        Masks({"fc": torch.rand(4, 5, generator=g) < keep}).save(path)
        paths.append(str(path))
    out = tmp_path / "out"
    label = "<script>alert(1)</script>"
    assert main(["compare-masks", *paths, "--labels", label, "b|c", "--out", str(out)]) == 0
    text = (out / "masks.md").read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "b&#124;c" in text


@pytest.mark.parametrize("command", ["compare-masks", "ntk"])
def test_masks_made_for_resnet20_are_refused_on_resnet32_naming_the_first_new_layer(
        tmp_path, capsys, command):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"m{seed}.pt"
        assert main(["prune", "--model", "resnet20", "--method", "random", "--sparsity", "0.5",
                     "--seed", str(seed), "--out", str(path), "--json"]) == 0
        paths.append(str(path))
    capsys.readouterr()
    out = tmp_path / "out"
    argv = ({"compare-masks": ["compare-masks", *paths, "--model", "resnet32", "--seed", "0"],
             "ntk": ["ntk", "--model", "resnet32", "--masks", *paths, "--inputs", "2"]}[command])
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_line(capsys, command)
    assert "masks do not match" in line and "'layer1.3.conv1'" in line
    assert not out.exists()


@pytest.mark.parametrize("preset", ["mnist-lenet300-short", "mnist-lenet5-short",
                                    "cifar100-vgg16"])
def test_synthetic_data_takes_the_shape_and_classes_of_any_presets_dataset(tmp_path, capsys,
                                                                           preset):
    argv = ["run", "--preset", preset, "--dataset", "synthetic", "--limit-per-class", "4",
            "--method", "random", "--sparsity", "0.5", "--epochs", "1", "--batch-size", "8",
            "--no-progress", "--json", "--out-dir", str(tmp_path)]
    if preset == "cifar100-vgg16":
        argv += ["--model", "convnet"]  # VGG-16 is slow for a smoke test
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["epochs"] == 1 and summary["sparsity"] == 0.5


def test_a_model_that_cannot_take_the_images_says_drop_model_only_when_given(tmp_path, capsys):
    argv = ["run", "--preset", "mnist-lenet300-short", "--dataset", "synthetic",
            "--limit-per-class", "4", "--method", "dense", "--epochs", "1", "--no-progress",
            "--out-dir", str(tmp_path)]
    assert main([*argv, "--model", "resnet20"]) == 2
    assert "or drop --model" in _one_line(capsys, "run")


def test_two_specs_under_one_sweep_name_in_one_store_are_refused(tmp_path, capsys):
    first = _spec(tmp_path)
    assert main(["sweep", str(first), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    second = _spec(other, out_dir=str(tmp_path / "runs"),
                   grid={"method": ["magnitude"], "c": [2], "seed": [0]})
    before = sorted(p.name for p in (tmp_path / "runs").rglob("*"))
    assert main(["sweep", str(second), "--workers", "0", "--no-progress"]) == 2
    line = _one_line(capsys, "sweep")
    assert "already holds a sweep named 's' from another spec" in line and str(first) in line
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == before
    assert main(["sweep", str(first), "--workers", "0", "--no-progress"]) == 0  # same spec


def _swept(tmp_path: Path, capsys) -> Path:
    """A finished two-run sweep; its store."""
    path = _spec(tmp_path, grid={"method": ["random", "magnitude"], "c": [2], "seed": [0]})
    assert main(["sweep", str(path), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    return tmp_path / "runs" / "ntksap.db"


def test_report_lists_a_deleted_run_directory_and_unreadable_files(tmp_path, capsys):
    import shutil

    db = _swept(tmp_path, capsys)
    runs = sorted((tmp_path / "runs" / "cifar10-resnet20").iterdir())
    shutil.rmtree(runs[0])
    (runs[1] / "metrics.jsonl").write_text("not json\n")
    (runs[1] / "masks.pt").write_bytes(b"junk")
    assert main(["report", str(db), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert f"{runs[0]} (the run directory is missing" in out
    assert f"{runs[1] / 'metrics.jsonl'} (JSONDecodeError" in out
    assert f"{runs[1] / 'masks.pt'} (" in out
    page = (tmp_path / "report" / "results.md").read_text()
    assert "the run directory is missing" in page and "metrics.jsonl" in page


def test_report_finds_the_runs_of_a_moved_results_folder(tmp_path, capsys):
    db = _swept(tmp_path, capsys)
    assert main(["report", str(db), "--out", str(tmp_path / "before")]) == 0
    figures = sorted(p.name for p in (tmp_path / "before" / "figures").iterdir())
    capsys.readouterr()
    (tmp_path / "runs").rename(tmp_path / "moved")
    assert main(["report", str(tmp_path / "moved" / "ntksap.db"), "--out",
                 str(tmp_path / "after")]) == 0
    assert "unreadable" not in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "after" / "figures").iterdir()) == figures


def test_a_sweep_rerun_redoes_a_run_whose_directory_was_deleted(tmp_path, capsys):
    import shutil

    _swept(tmp_path, capsys)
    runs = sorted((tmp_path / "runs" / "cifar10-resnet20").iterdir())
    shutil.rmtree(runs[0])
    path = tmp_path / "s.yaml"
    assert main(["sweep", str(path), "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 finished run(s) have lost their run directory and run again" in err
    assert (runs[0] / "summary.json").is_file()


def test_temporaries_of_killed_writes_are_removed(tmp_path, capsys):
    import os
    import time

    from ntksap import atomic

    directory = _finished_run(tmp_path, capsys)
    (directory / "done.json").unlink()
    (directory / "summary.json").unlink()
    left = [directory / ".checkpoint.pt.abc123", directory / ".metrics.jsonl.x9"]
    for path in left:
        path.write_bytes(b"half a write")
    other = directory / ".notes.txt.keep"  # not a run file: never touched
    other.write_text("mine")
    assert main(["run", *TINY, "--method", "random", "--sparsity", "0.5", "--json",
                 "--out-dir", str(directory.parent.parent)]) == 0
    assert not any(p.exists() for p in left) and other.exists()
    # any atomic write removes its own file's abandoned temporaries (older than an hour)
    target = tmp_path / "m2.pt"
    old, fresh = tmp_path / ".m2.pt.old111", tmp_path / ".m2.pt.new222"
    for path in (old, fresh):
        path.write_bytes(b"x")
    hour_ago = time.time() - atomic.ABANDONED_AFTER - 5
    os.utime(old, (hour_ago, hour_ago))
    atomic.write_text_atomic(target, "done")
    assert not old.exists() and fresh.exists() and target.read_text() == "done"


@pytest.mark.parametrize("fault", ["read-only", "full"])
@pytest.mark.parametrize("command", ["report", "compare-masks", "ntk", "lab"])
def test_a_read_only_or_full_output_is_one_line_and_leaves_no_empty_files(tmp_path, capsys,
                                                                          monkeypatch, command,
                                                                          fault):
    import errno

    from ntksap import atomic

    if command == "report":
        db = _swept(tmp_path, capsys)
        argv = ["report", str(db)]
    elif command == "compare-masks":
        paths = []
        for i in (0, 1):
            path = tmp_path / f"m{i}.pt"
            Masks({"fc": torch.rand(3, 4, generator=torch.Generator().manual_seed(i)) < 0.5}
                  ).save(path)
            paths.append(str(path))
        argv = ["compare-masks", *paths]
    elif command == "ntk":
        argv = ["ntk", "--model", "convnet", "--inputs", "2", "--no-progress"]
    else:
        argv = ["lab", "frequency", "--points", "40", "--width", "16", "--indices", "5",
                "--no-progress"]
    out = tmp_path / "out"

    def failing(path, write):
        if fault == "full":  # what atomic_write raises on ENOSPC
            raise DiskFullError(f"the disk is full: no space left to write {path} (its "
                                "previous version, if any, is intact); free some space and "
                                "run again", str(path))
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "atomic_write", failing)
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_line(capsys, command)
    if fault == "full":
        assert "the disk is full: no space left to write" in line and "free some space" in line
    else:
        assert "Read-only file system" in line and "give paths you may read and write" in line
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_a_store_on_a_read_only_mount_is_reported(tmp_path, capsys, monkeypatch):
    from ntksap.sweep import store as store_module

    db = _swept(tmp_path, capsys)
    assert not db.with_name("ntksap.db-wal").exists()  # closed cleanly: one file
    before = sorted(p.name for p in db.parent.iterdir())
    monkeypatch.setattr(store_module, "_writable", lambda path: False)  # as on a ro mount
    assert main(["report", str(db), "--out", str(tmp_path / "report")]) == 0
    assert "report of 2 finished networks" in capsys.readouterr().out
    assert sorted(p.name for p in db.parent.iterdir()) == before  # nothing written beside it


def test_a_legacy_mnist_folder_whose_processed_files_hold_a_tensor_is_one_line(tmp_path,
                                                                               capsys):
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        torch.save(torch.zeros(5, 3), processed / name)
    out = tmp_path / "runs"
    assert main(["run", "--preset", "mnist-lenet300-short", "--method", "dense", "--epochs",
                 "1", "--data-dir", str(tmp_path), "--no-progress", "--out-dir",
                 str(out)]) == 2
    line = _one_line(capsys, "run")
    assert "cannot read MNIST in" in line and "download again" in line
    assert not out.exists()


def test_a_sweep_whose_store_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    import sqlite3

    from ntksap.sweep import store as store_module

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only)
    path = _spec(tmp_path)
    assert main(["sweep", str(path), "--workers", "0", "--no-progress"]) == 2
    line = _one_line(capsys, "sweep")
    assert "cannot be opened or written (attempt to write a readonly database)" in line
    assert "--db" in line and "not an SQLite database" not in line
    assert _nothing_in(tmp_path / "runs" / "cifar10-resnet20")

