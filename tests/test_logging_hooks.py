"""Optional epoch logging: TensorBoard events and W&B calls carry each epoch's metrics; neither
package is needed unless asked for; the flags are recorded but never rename a run."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ntksap.cli import main
from ntksap.experiment import resolve, run_dir
from ntksap.train.config import LoggingConfig
from ntksap.train.hooks import TensorBoardHook, logging_hooks

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--limit-per-class", "8",
         "--model", "convnet", "--method", "dense", "--epochs", "2", "--batch-size", "16",
         "--no-progress", "--json"]
RECORDS = [
    {"epoch": 1, "loss": 2.5, "train_acc": 0.125, "test_loss": 2.25, "test_acc": 0.25,
     "lr": 0.1, "seconds": 3.0, "images_per_s": 100.0},
    {"epoch": 2, "loss": 1.5, "train_acc": 0.5, "test_loss": 1.75, "test_acc": 0.375,
     "lr": 0.01, "seconds": 2.0, "images_per_s": 150.0},
]


class FakeWandb(types.ModuleType):
    """Records what a W&B client is asked to do; no network, no files."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.calls: list[tuple] = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        fake = self

        class Run:
            def log(self, data, step=None):
                fake.calls.append(("log", data, step))

            def finish(self):
                fake.calls.append(("finish",))

        return Run()


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login
    module = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def _events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def _metrics(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_hook_writes_every_scalar_at_its_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    hook = TensorBoardHook(tmp_path / "tb")
    for record in RECORDS:
        hook(record)
    hook.close()
    scalars = _events(tmp_path / "tb")
    assert set(scalars) == set(RECORDS[0]) - {"epoch"}
    for tag, points in scalars.items():
        assert points == [(r["epoch"], pytest.approx(r[tag])) for r in RECORDS]


def test_wandb_hook_calls_init_log_finish_offline_without_a_key(fake_wandb, tmp_path):
    directory = tmp_path / "runs" / "cifar10-resnet20" / "snip-sp0.9-seed0-0123456789"
    with logging_hooks(LoggingConfig(wandb=True), directory, {"lr": 0.1}) as hooks:
        for record in RECORDS:
            for hook in hooks:
                hook(record)
    init, *logs, finish = fake_wandb.calls
    assert init == ("init", {"project": "ntksap-cifar10-resnet20",
                             "name": "snip-sp0.9-seed0-0123456789",
                             "id": "snip-sp0.9-seed0-0123456789", "resume": "allow",
                             "dir": str(directory), "config": {"lr": 0.1}, "mode": "offline"})
    assert logs == [("log", {k: v for k, v in r.items() if k != "epoch"}, r["epoch"])
                    for r in RECORDS]
    assert finish == ("finish",)


def test_wandb_goes_online_with_a_key_and_honours_the_project(fake_wandb, monkeypatch,
                                                              tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    with logging_hooks(LoggingConfig(wandb=True), tmp_path / "p" / "r"):
        pass
    (_, kwargs), finish = fake_wandb.calls
    assert kwargs["mode"] is None and kwargs["project"] == "mine" and finish == ("finish",)


def test_wandb_goes_online_after_wandb_login(fake_wandb, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40
                                 + "\n")
    (home / ".netrc").chmod(0o600)
    with logging_hooks(LoggingConfig(wandb=True), tmp_path / "p" / "r"):
        pass
    assert fake_wandb.calls[0][1]["mode"] is None


def test_wandb_hook_finishes_even_when_training_fails(fake_wandb, tmp_path):
    with pytest.raises(RuntimeError), logging_hooks(LoggingConfig(wandb=True), tmp_path / "r"):
        raise RuntimeError("diverged")
    assert fake_wandb.calls[-1] == ("finish",)


def test_run_logs_each_epoch_to_both_and_keeps_the_directory_name(capsys, tmp_path,
                                                                  fake_wandb):
    pytest.importorskip("tensorboard")
    assert main(["run", *QUICK, "--out-dir", str(tmp_path), "--tensorboard", "--wandb"]) == 0
    directory = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    plain = resolve("cifar10-resnet20", "dense", 0.0, dataset="synthetic", model="convnet",
                    limit_per_class=8, train_overrides={"epochs": 2, "batch_size": 16})
    assert directory == run_dir(plain, tmp_path)  # logging is not part of the name
    record = json.loads((directory / "config.json").read_text())
    assert record["logging"] == {"tensorboard": True, "wandb": True}
    metrics = _metrics(directory)
    scalars = _events(directory / "tensorboard")
    assert scalars["test_acc"] == [(m["epoch"], pytest.approx(m["test_acc"])) for m in metrics]
    assert scalars["loss"] == [(m["epoch"], pytest.approx(m["loss"])) for m in metrics]
    logs = [call for call in fake_wandb.calls if call[0] == "log"]
    assert [(step, data["test_acc"]) for _, data, step in logs] == [
        (m["epoch"], m["test_acc"]) for m in metrics]
    assert fake_wandb.calls[0][1]["config"]["train"]["epochs"] == 2
    assert fake_wandb.calls[-1] == ("finish",)


@pytest.mark.parametrize("flag, module", [("tensorboard", "torch.utils.tensorboard"),
                                          ("wandb", "wandb")])
def test_missing_package_is_one_line_naming_the_extra(capsys, monkeypatch, tmp_path, flag,
                                                      module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "out"
    assert main(["run", *QUICK, "--out-dir", str(out), f"--{flag}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pip install 'ntksap[{flag}]'" in err
    assert "Traceback" not in err and not out.exists()


def test_flags_are_real_booleans_off_by_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "--tensorboard, --no-tensorboard" in text and "--wandb, --no-wandb" in text
    assert LoggingConfig() == LoggingConfig(tensorboard=False, wandb=False)


def test_a_sweep_logs_each_run_under_its_name_with_config_and_densities(tmp_path, capsys,
                                                                         fake_wandb):
    """``ntksap sweep --tensorboard --wandb``: every run of the sweep gets its own W&B run
    (named after its directory, its config and per-layer densities as W&B config) and its
    own TensorBoard events (epochs, densities at step 0); packs and IMP runs refuse it."""
    pytest.importorskip("tensorboard")
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "logged", "preset": "cifar10-resnet20", "out_dir": str(tmp_path / "runs"),
        "fixed": {"dataset": "synthetic", "model": "convnet", "limit_per_class": 8,
                  "epochs": 1, "batch_size": 16, "sparsity": 0.5},
        "grid": {"method": ["magnitude", "random"]}}))
    assert main(["sweep", str(spec), "--workers", "0", "--device", "cpu", "--no-progress",
                 "--tensorboard", "--wandb"]) == 0
    inits = [call[1] for call in fake_wandb.calls if call[0] == "init"]
    directories = sorted((tmp_path / "runs" / "cifar10-resnet20").iterdir())
    assert sorted(i["name"] for i in inits) == [d.name for d in directories]
    from ntksap import prunable_layers
    from ntksap.models import build_model

    layers = set(prunable_layers(build_model("convnet", 10)))
    for init in inits:
        densities = init["config"]["densities"]
        assert set(densities) == layers and all(0 < d <= 1 for d in densities.values())
        assert init["config"]["method"] in ("magnitude", "random")
    for directory in directories:
        scalars = _events(directory / "tensorboard")
        assert "test_acc" in scalars and any(k.startswith("density/") for k in scalars)
    capsys.readouterr()
    assert main(["sweep", str(spec), "--workers", "0", "--device", "cpu", "--pack-size", "2",
                 "--tensorboard"]) == 2
    assert "--pack-size 1" in capsys.readouterr().err
