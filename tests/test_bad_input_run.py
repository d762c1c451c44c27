"""Bad input and faults for `ntksap prune` and `ntksap run` (issue 10, item 16): one clear
line (`ntksap <cmd>: error: ...`, exit 2, no traceback), nothing created or damaged."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_archive
from PIL import Image

import ntksap
import ntksap.atomic
from ntksap.atomic import atomic_torch_save
from ntksap.cli import main
from ntksap.data import CorruptDataError, load_dataset
from ntksap.errors import ConfigError, DiskFullError, MethodOptionError, RunLockedError
from ntksap.experiment import resolve, run_dir, run_experiment, run_lock
from ntksap.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ["--preset", "cifar10-resnet20"]
TINY = [*PRESET, "--dataset", "synthetic", "--limit-per-class", "8", "--model", "convnet",
        "--epochs", "1", "--batch-size", "16", "--no-progress", "--json"]
RANDOM = ["--method", "random", "--sparsity", "0.5"]


def _fails(capsys, command: str, *argv: str) -> str:
    """Run the CLI, expect exit 2 and one error line; return that line."""
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ntksap {command}: error: ") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def _nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NTKSAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _png(path: Path, value: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, 255 - value, value // 2)).save(path)


def _image_folder(root: Path, classes: int, per_class: int = 2) -> Path:
    for split in ("train", "test"):
        for c in range(classes):
            for i in range(per_class):
                _png(root / split / f"c{c}" / f"{i}.png", 20 * c + i)
    return root


# Wrong input accepted ------------------------------------------------------------------------

def test_mnist_given_to_the_cifar10_preset_names_both_shapes(capsys, tmp_path, cache):
    archive = shared_archive("mnist-png.tar.gz")
    err = _fails(capsys, "run", *PRESET, "--model", "convnet", *RANDOM, "--epochs", "1",
                 "--data-dir", str(archive), "--limit-per-class", "2", "--no-progress",
                 "--out-dir", str(tmp_path / "runs"))
    assert "greyscale 28 x 28" in err and "3 x 32 x 32" in err and "cifar10-resnet20" in err
    assert _nothing_in(tmp_path / "runs")


def test_folder_of_other_sized_images_is_refused_for_the_preset(capsys, tmp_path, cache):
    folder = tmp_path / "big"
    for split in ("train", "test"):
        for c in range(10):
            _png(folder / split / f"c{c}" / "0.png", 20 * c, size=40)
    err = _fails(capsys, "run", *PRESET, "--dataset", "folder", "--data-dir", str(folder),
                 *RANDOM, "--no-progress", "--out-dir", str(tmp_path / "runs"))
    assert "3 x 40 x 40" in err and "3 x 32 x 32" in err
    assert _nothing_in(tmp_path / "runs")


def test_named_dataset_of_the_wrong_size_is_refused(tmp_path):
    folder = _image_folder(tmp_path / "c10", classes=10, per_class=1)
    for image in folder.rglob("*.png"):
        _png(image, 7, size=28)
    with pytest.raises(ntksap.data.DatasetShapeError, match="3 x 28 x 28.*3 x 32 x 32"):
        load_dataset("cifar10", folder, cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("options, field", [
    ({"repeats": 0}, "repeats"), ({"repeats": -1}, "repeats"), ({"repeats": 2.5}, "repeats"),
    ({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"eps": float("nan")}, "eps"),
    ({"samples": -5}, "samples"), ({"samples": 0}, "samples"),
    ({"draws_per_pass": 0}, "draws_per_pass"),
])
def test_ntksap_options_out_of_range_are_refused(options, field):
    with pytest.raises(MethodOptionError, match=f"'ntksap': option {field} must be"):
        METHODS["ntksap"](**options)
    model = ntksap.build_model("convnet", 10, seed=0)
    with pytest.raises(MethodOptionError, match=field):  # before any scoring
        ntksap.prune(model, "ntksap", 0.5, rounds=1, input_shape=(3, 32, 32), **options)


@pytest.mark.parametrize("temperature", [0.0, -200.0])
def test_grasp_temperature_must_be_positive(temperature):
    with pytest.raises(MethodOptionError, match="'grasp': option temperature must be a number > 0"):
        METHODS["grasp"](temperature=temperature)


@pytest.mark.parametrize("flags, message", [
    (["--method", "ntksap", "--repeats", "0"], "option repeats must be a whole number >= 1"),
    (["--method", "ntksap", "--repeats", "-1"], "option repeats must be a whole number >= 1"),
    (["--method", "ntksap", "--samples", "-5"], "option samples must be a whole number >= 1"),
    (["--method", "ntksap", "--eps", "-1"], "option eps must be a number > 0"),
    (["--method", "random", "--num-classes", "0"], "--num-classes must be >= 1"),
    (["--method", "random", "--rounds", "0"], "--rounds must be >= 1"),
    (["--method", "random", "--device", "gpu"], "unknown device 'gpu'"),
])
def test_prune_refuses_out_of_range_flags(capsys, flags, message):
    err = _fails(capsys, "prune", "--model", "convnet", "--sparsity", "0.5", "--no-progress",
                 *flags)
    assert message in err


def test_run_without_sparsity_is_refused_for_pruning_methods(capsys, tmp_path):
    err = _fails(capsys, "run", *TINY, "--method", "random", "--out-dir", str(tmp_path))
    assert "--sparsity is required with --method random" in err and "dense" in err
    err = _fails(capsys, "run", *TINY, "--method", "dense", "--sparsity", "0.9",
                 "--out-dir", str(tmp_path))
    assert "--method dense prunes nothing" in err
    assert _nothing_in(tmp_path)


@pytest.mark.parametrize("flag", ["--rounds", "--num-classes", "--repeats",
                                  "--limit-per-class"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_run_refuses_non_positive_counts_like_prune(capsys, tmp_path, flag, value):
    method = ["--method", "ntksap", "--sparsity", "0.5"]
    err = _fails(capsys, "run", *TINY, *method, flag, value, "--out-dir", str(tmp_path))
    assert f"({flag}) must be a whole number >= 1; got {value}" in err
    assert _nothing_in(tmp_path)


def test_resolve_none_means_not_given_and_zero_is_refused():
    assert resolve("cifar10-resnet20", "ntksap", 0.9, rounds=None, repeats=None) == resolve(
        "cifar10-resnet20", "ntksap", 0.9, rounds=20, repeats=5)  # the preset's T and R
    for name in ("rounds", "repeats", "num_classes", "limit_per_class"):
        with pytest.raises(ConfigError, match=f"{name} .* must be a whole number >= 1"):
            resolve("cifar10-resnet20", "ntksap", 0.9, **{name: 0})
    with pytest.raises(ConfigError, match="option eps must be a number > 0"):
        resolve("cifar10-resnet20", "ntksap", 0.9, eps=0.0)


def test_run_directory_names_of_default_configs_are_unchanged():
    # names that runs made before these checks carry (computed on the previous main)
    expected = {
        ("ntksap", 0.9): "ntksap-sp0.9-seed0-e439af20cb",
        ("random", 0.5): "random-sp0.5-seed0-3546da29de",
        ("dense", 0.0): "dense-sp0-seed0-6829ed4045",
        ("synflow", 0.8): "synflow-sp0.8-seed0-d532ef15f7",
        ("snip", 0.9): "snip-sp0.9-seed0-a38f39c6d3",
    }
    for (method, sparsity), name in expected.items():
        assert run_dir(resolve("cifar10-resnet20", method, sparsity), "r").name == name
    config = resolve("cifar10-resnet20", "ntksap", 0.9, dataset="synthetic", model="convnet",
                     rounds=2, repeats=1, limit_per_class=30, seed=3)
    assert run_dir(config, "r").name == "ntksap-sp0.9-seed3-c7a3e7bd75"
    assert run_dir(resolve("cifar100-vgg16", "grasp", 0.98, seed=1), "r").name == (
        "grasp-sp0.98-seed1-818d921af9")
    assert run_dir(resolve("cifar10-resnet20", "ntksap", 0.9, eps=0.02), "r").name == (
        "ntksap-sp0.9-seed0-28100c99c2")


def test_unknown_dataset_lists_the_valid_names(capsys, tmp_path):
    err = _fails(capsys, "run", *TINY, *RANDOM, "--dataset", "foo", "--out-dir", str(tmp_path))
    assert "unknown dataset 'foo'" in err
    assert "cifar10" in err and "folder" in err and "synthetic" in err
    assert "contradicts" not in err


# Tracebacks instead of a message -------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.usefixtures("no_gpu")
def test_cuda_without_a_gpu(capsys, tmp_path):
    err = _fails(capsys, "prune", "--model", "convnet", *RANDOM, "--device", "cuda")
    assert "no CUDA GPU" in err and "--device cpu" in err
    err = _fails(capsys, "run", *TINY, *RANDOM, "--device", "cuda", "--out-dir", str(tmp_path))
    assert "no CUDA GPU" in err
    assert _nothing_in(tmp_path)


def test_prune_out_that_is_a_folder_or_under_a_file(capsys, tmp_path):
    err = _fails(capsys, "prune", "--model", "convnet", *RANDOM, "--out", str(tmp_path))
    assert "is a folder" in err and "masks.pt" in err
    assert _nothing_in(tmp_path)
    (tmp_path / "file").write_text("x")
    err = _fails(capsys, "prune", "--model", "convnet", *RANDOM,
                 "--out", str(tmp_path / "file" / "sub" / "masks.pt"))
    assert f"{tmp_path / 'file'} is not a folder you may write in" in err


def test_run_out_dir_that_is_a_file(capsys, tmp_path):
    not_a_folder = tmp_path / "runs"
    not_a_folder.write_text("a file")
    err = _fails(capsys, "run", *TINY, *RANDOM, "--out-dir", str(not_a_folder))
    assert "cannot create the run directory" in err and "--out-dir" in err
    assert not_a_folder.read_text() == "a file"


def _cifar_folder(root: Path, meta: object = None, batch: object = None) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    good = {"data": pixels, "labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (base / name).write_bytes(pickle.dumps(good if batch is None else batch))
    names = {"label_names": [f"c{i}" for i in range(10)]}
    (base / "batches.meta").write_bytes(pickle.dumps(names if meta is None else meta))
    return root


@pytest.mark.parametrize("meta, batch, message", [
    (["not", "a", "dict"], None, "holds a list, not the dict"),
    ({"label_names": 3}, None, "no list of class names"),
    (None, "a string", "holds a str"),
    (None, {"data": "pixels", "labels": [0]}, "'data' must be a uint8 array"),
    (None, {"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8"),
    (None, {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "(n, 3072)"),
    (None, {"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "'labels' must be"),
    (None, {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "in [0, 10)"),
    (None, {"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "'labels' must be 2"),
    (None, {"data": np.zeros((2, 3072), np.uint8)}, "'labels' must be"),
])
def test_cifar_pickles_of_the_wrong_types(tmp_path, meta, batch, message):
    root = _cifar_folder(tmp_path / "data", meta, batch)
    with pytest.raises(CorruptDataError) as err:
        load_dataset("cifar10", root, cache_dir=tmp_path / "cache")
    assert message in str(err.value) and "cifar-10-batches-py" in str(err.value)


def test_cifar_pickles_of_the_wrong_types_through_run(capsys, tmp_path):
    root = _cifar_folder(tmp_path / "data", batch={"data": "pixels", "labels": [0]})
    err = _fails(capsys, "run", *PRESET, *RANDOM, "--data-dir", str(root), "--no-progress",
                 "--out-dir", str(tmp_path / "runs"))
    assert "data_batch_1 is not a CIFAR batch" in err
    assert _nothing_in(tmp_path / "runs")


def _finished_run(capsys, out_dir: Path) -> tuple[list[str], dict]:
    argv = [*TINY, *RANDOM, "--out-dir", str(out_dir)]
    assert main(["run", *argv]) == 0
    return argv, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_truncated_summary_names_the_file_and_the_fix(capsys, tmp_path):
    argv, first = _finished_run(capsys, tmp_path)
    summary = Path(first["run_dir"]) / "summary.json"
    text = summary.read_text()
    summary.write_text(text[: len(text) // 2])
    err = _fails(capsys, "run", *argv)
    assert str(summary) in err and "delete it" in err
    summary.unlink()  # the fix the message gives: the summary comes back, nothing retrained
    assert main(["run", *argv]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    timing = ("seconds", "pack_seconds")
    assert {k: v for k, v in again.items() if k not in timing} == {
        k: v for k, v in first.items() if k not in timing}


def test_unreadable_config_json_names_the_file(capsys, tmp_path):
    argv, first = _finished_run(capsys, tmp_path)
    directory = Path(first["run_dir"])
    (directory / "done.json").unlink()  # an unfinished run: its config is read again
    (directory / "config.json").write_text('{"config": {"pres')
    err = _fails(capsys, "run", *argv)
    assert str(directory / "config.json") in err and "move the run directory away" in err


def test_disk_full_during_run_says_so_and_rerunning_resumes(capsys, tmp_path, monkeypatch):
    argv = [*TINY, *RANDOM, "--epochs", "2", "--out-dir", str(tmp_path)]
    real = ntksap.atomic.atomic_write

    def full_at_second_checkpoint(path, write):
        if Path(path).name == "checkpoint.pt" and (Path(path).parent / "checkpoint.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, write)

    monkeypatch.setattr(ntksap.atomic, "atomic_write", full_at_second_checkpoint)
    err = _fails(capsys, "run", *argv)
    assert "disk is full" in err and "checkpoint.pt" in err
    assert "run the same command again" in err and "resumes" in err
    directory = next(tmp_path.glob("*/*"))
    state = torch.load(directory / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1  # the last complete epoch is intact
    monkeypatch.setattr(ntksap.atomic, "atomic_write", real)
    assert main(["run", *argv]) == 0  # resumes at epoch 2
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = (directory / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2] and out["epochs"] == 2


def test_disk_full_inside_torch_save_is_a_disk_full_error(tmp_path, monkeypatch):
    """torch.save turns the failed write into a serialization RuntimeError; the writer
    reports the full disk instead, and the previous file stays whole."""
    path = tmp_path / "state.pt"
    atomic_torch_save({"w": torch.arange(4)}, path)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, fd: int, mode: str) -> None:
            self.file = real_fdopen(fd, mode)

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self) -> int:
            return self.file.fileno()

        def close(self) -> None:
            self.file.close()
            super().close()

    monkeypatch.setattr(ntksap.atomic.os, "fdopen", FullDisk)
    with pytest.raises(DiskFullError, match="disk is full.*state.pt"):
        atomic_torch_save({"w": torch.zeros(10_000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left


# Clear error, but nothing may be left behind --------------------------------------------------

def _truncated_archive(tmp_path: Path) -> Path:
    folder = _image_folder(tmp_path / "src", classes=10)
    archive = tmp_path / "cifar10.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=".")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    return archive


@pytest.mark.parametrize("case", ["missing", "empty", "one class", "truncated archive",
                                  "mlp on cifar", "rounds -1"])
def test_bad_run_leaves_no_run_directory(capsys, tmp_path, cache, case):
    data = {"missing": lambda: tmp_path / "nowhere",
            "empty": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
            "one class": lambda: _image_folder(tmp_path / "one", classes=1),
            "truncated archive": lambda: _truncated_archive(tmp_path)}
    out = tmp_path / "runs"
    if case in data:
        argv = [*PRESET, *RANDOM, "--data-dir", str(data[case]())]
    elif case == "mlp on cifar":
        argv = [*TINY, *RANDOM, "--model", "mlp"]
    else:
        argv = [*TINY, *RANDOM, "--rounds", "-1"]
    err = _fails(capsys, "run", *argv, "--no-progress", "--out-dir", str(out))
    expected = {"missing": "does not exist", "empty": "no cifar10 dataset",
                "one class": "has 1 classes", "truncated archive": "cifar10.tar.gz",
                "mlp on cifar": "model 'mlp' cannot take", "rounds -1": "got -1"}[case]
    assert expected in err
    assert _nothing_in(out)


# Concurrency ---------------------------------------------------------------------------------

def test_second_process_on_the_same_run_is_refused_naming_the_holder(capsys, tmp_path):
    config = resolve("cifar10-resnet20", "random", 0.5, dataset="synthetic", model="convnet",
                     limit_per_class=8, train_overrides={"epochs": 1, "batch_size": 16})
    directory = run_dir(config, tmp_path)
    with run_lock(directory):
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()} "):
            run_experiment(config, out_dir=tmp_path, progress=False)
        # the same through the command line, from another open file (flock is per open file)
        err = _fails(capsys, "run", *TINY, *RANDOM, "--out-dir", str(tmp_path))
        assert f"process {os.getpid()}" in err and str(directory) in err
        assert f"delete {directory / '.lock'}" in err  # the way out of a dead holder's lock
        assert sorted(p.name for p in directory.iterdir()) == [".lock"]  # nothing trained
    out = run_experiment(config, out_dir=tmp_path, progress=False)  # lock released: it runs
    assert Path(out["run_dir"]) == directory and (directory / "done.json").exists()


def test_filesystem_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    config = resolve("cifar10-resnet20", "random", 0.5, dataset="synthetic", model="convnet",
                     limit_per_class=8, train_overrides={"epochs": 1, "batch_size": 16})

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available"):
        out = run_experiment(config, out_dir=tmp_path, progress=False)
    assert (Path(out["run_dir"]) / "done.json").exists()


def test_run_lock_is_held_while_the_run_works(tmp_path, monkeypatch):
    config = resolve("cifar10-resnet20", "random", 0.5, dataset="synthetic", model="convnet",
                     limit_per_class=8, train_overrides={"epochs": 1, "batch_size": 16})
    seen = []
    import ntksap.runs.driver as experiment

    real_train = experiment.train

    def probing_train(*args, **kwargs):
        with open(run_dir(config, tmp_path) / ".lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train", probing_train)
    run_experiment(config, out_dir=tmp_path, progress=False)
    assert seen == ["held"]


# Unsafe loading ------------------------------------------------------------------------------

class _Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("where", ["batches.meta", "data_batch_1"])
def test_crafted_cifar_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "pwned"
    root = _cifar_folder(tmp_path / "data")
    evil = {"label_names": _Payload(f"touch {marker}"), "data": _Payload(f"touch {marker}")}
    (root / "cifar-10-batches-py" / where).write_bytes(pickle.dumps(evil))
    with pytest.raises(CorruptDataError, match="system.*refused"):
        load_dataset("cifar10", root, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_cifar_pickles_as_python2_and_numpy_write_them_still_load(tmp_path):
    root = _cifar_folder(tmp_path / "data")
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    batch = {"data": data, "labels": list(np.array([3, 4]))}  # numpy scalars in the list
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        (root / "cifar-10-batches-py" / "test_batch").write_bytes(
            pickle.dumps(batch, protocol=protocol))
        bundle = load_dataset("cifar10", root, cache_dir=tmp_path / "cache")
        assert torch.equal(bundle.test.x.reshape(2, -1), torch.from_numpy(data))
        assert bundle.test.y.tolist() == [3, 4]
