"""Mixed precision (`--amp`): bf16 autocast on a CPU with native bf16, refused in one line on a
CPU without it, recorded with every run; weights, optimizer state, masks and pruning float32.

The capability probe is faked both ways, so every path runs on any CPU (autocast itself runs
everywhere: PyTorch emulates bf16 where the CPU lacks it, which is why ntksap refuses it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from tqdm import tqdm

import ntksap
from ntksap.cli import main
from ntksap.errors import ConfigError
from ntksap.experiment import resolve, run_experiment
from ntksap.models import build_model
from ntksap.pack import run_pack
from ntksap.train import TrainConfig, build_optimizer, precision
from ntksap.train.loop import evaluate, train_one_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "cifar10-resnet20", "--dataset", "synthetic", "--limit-per-class", "12",
        "--model", "convnet", "--epochs", "1", "--batch-size", "16", "--no-progress",
        "--json", "--device", "cpu"]
COMMON = dict(dataset="synthetic", model="convnet", limit_per_class=10,
              train_overrides={"epochs": 1, "batch_size": 16})


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that has AVX512-BF16, whatever this one has."""
    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: "avx512_bf16")


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """A CPU without native bf16, whatever this one has."""
    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: None)


def _probes(monkeypatch, *, amx: bool, avx512_bf16: bool, cpuinfo: str | None,
            tmp_path: Path, machine: str = "x86_64") -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(precision, "CPUINFO", path)
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)


@pytest.mark.parametrize("amx, avx512_bf16, cpuinfo, machine, expected", [
    (True, True, None, "x86_64", "amx"),
    (False, True, None, "x86_64", "avx512_bf16"),
    (False, False, None, "x86_64", None),  # no probe says yes, no /proc/cpuinfo
    (False, False, "flags\t: fpu sse2 avx2 avx512f\n", "x86_64", None),
    (False, False, "flags\t: fpu avx512f avx512_bf16 avx512_vnni\n", "x86_64", "avx512_bf16"),
    (False, False, "flags\t: fpu amx_bf16 amx_tile avx512_bf16\n", "x86_64", "amx"),
    (False, False, "Features\t: fp asimd sve bf16 i8mm\n", "aarch64", "arm_bf16"),
    (False, False, "Features\t: fp asimd sve i8mm\n", "aarch64", None),
    (False, False, "flags\t: fpu bf16\n", "x86_64", None),  # Arm's name means nothing on x86
])
def test_the_probe_names_the_bf16_instruction_set(monkeypatch, tmp_path, amx, avx512_bf16,
                                                  cpuinfo, machine, expected):
    _probes(monkeypatch, amx=amx, avx512_bf16=avx512_bf16, cpuinfo=cpuinfo, machine=machine,
            tmp_path=tmp_path)
    assert precision.cpu_bf16_isa() == expected


def test_amp_is_refused_on_a_cpu_without_bf16_and_allowed_with_it(monkeypatch):
    amp, fp32 = TrainConfig(amp=True), TrainConfig()
    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: None)
    with pytest.raises(ConfigError, match="no native bfloat16.*drop --amp"):
        precision.check_amp(amp, torch.device("cpu"))
    precision.check_amp(fp32, torch.device("cpu"))  # float32 needs nothing
    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: "amx")
    precision.check_amp(amp, torch.device("cpu"))
    with pytest.raises(ConfigError, match="not on meta"):
        precision.check_amp(amp, torch.device("meta"))


def _conv_output_dtypes(config: TrainConfig) -> tuple[set[torch.dtype], nn.Module, dict]:
    """Train a convnet one step under ``config`` on the CPU; the dtypes its convolutions
    produced (training and evaluation), the model and its optimizer state."""
    model = build_model("convnet", 10, seed=0)
    ntksap.prune(model, "random", 0.5, input_shape=(3, 32, 32), seed=0)
    seen: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    optimizer = build_optimizer(model, config)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
    device = torch.device("cpu")
    with tqdm(total=2, disable=True) as bar:
        train_one_epoch(model, [batch, batch], optimizer, config, device, bar)
    evaluate(model, [batch], config, device)
    return seen, model, optimizer.state_dict()


def test_amp_runs_the_convolutions_in_bf16_and_keeps_everything_stored_float32():
    seen, model, state = _conv_output_dtypes(TrainConfig(amp=True, lr=0.01))
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in model.buffers())
    masks = ntksap.Masks.of(model)
    assert masks.total > 0 and all(m.dtype == torch.bool for _, m in masks.items())
    buffers = [v for s in state["state"].values() for v in s.values()
               if isinstance(v, torch.Tensor)]
    assert buffers and all(v.dtype == torch.float32 for v in buffers)
    seen32, _, _ = _conv_output_dtypes(TrainConfig(lr=0.01))
    assert seen32 == {torch.float32}


def test_cli_amp_on_a_cpu_without_bf16_is_one_line_and_creates_nothing(capsys, tmp_path,
                                                                     no_bf16_cpu):
    out = tmp_path / "runs"
    assert main(["run", *TINY, "--method", "random", "--sparsity", "0.5", "--amp",
                 "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ntksap run: error: --amp: this CPU has no native bfloat16")
    assert not out.exists()


def test_cli_amp_trains_in_bf16_and_records_it_and_prunes_as_float32(capsys, tmp_path,
                                                                    bf16_cpu):
    argv = [*TINY, "--method", "snip", "--sparsity", "0.8", "--out-dir", str(tmp_path)]
    summaries = {}
    for flag in ("--amp", "--no-amp"):
        assert main(["run", *argv, flag]) == 0
        summaries[flag] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    amp_dir, fp32_dir = (Path(summaries[f]["run_dir"]) for f in ("--amp", "--no-amp"))
    assert amp_dir != fp32_dir  # precision is part of the run's identity
    record = json.loads((amp_dir / "config.json").read_text())
    assert record["config"]["train"]["amp"] is True
    assert record["precision"] == "bfloat16-autocast" and summaries["--amp"]["precision"] == \
        "bfloat16-autocast"
    assert record["cpu_bf16_isa"] == "avx512_bf16" and record["device_type"] == "cpu"
    assert json.loads((fp32_dir / "config.json").read_text())["precision"] == "float32"
    # scoring ran in float32 in both: the same seed gives the same mask
    amp_masks = ntksap.Masks.load(amp_dir / "masks.pt")
    fp32_masks = ntksap.Masks.load(fp32_dir / "masks.pt")
    assert all(torch.equal(amp_masks[k], fp32_masks[k]) for k in fp32_masks)
    # and training did differ: bf16 arithmetic moved the weights differently
    amp_state = torch.load(amp_dir / "checkpoint.pt", weights_only=True)["model"]
    fp32_state = torch.load(fp32_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(v.dtype != torch.bfloat16 for v in amp_state.values())
    assert any(not torch.equal(amp_state[k], fp32_state[k]) for k in fp32_state
               if fp32_state[k].is_floating_point())


def test_a_pack_with_amp_is_refused_without_bf16_before_creating_anything(tmp_path,
                                                                          no_bf16_cpu):
    configs = [resolve("cifar10-resnet20", m, 0.8, seed=0, **{
        **COMMON, "train_overrides": {**COMMON["train_overrides"], "amp": True}})
        for m in ("snip", "random")]
    with pytest.raises(ConfigError, match="drop --amp"):
        run_pack(configs, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_pack_with_amp_trains_in_bf16_and_records_it(tmp_path, bf16_cpu):
    def configs(amp: bool):
        train = {**COMMON["train_overrides"], "amp": amp}
        return [resolve("cifar10-resnet20", m, 0.8, seed=0,
                        **{**COMMON, "train_overrides": train}) for m in ("snip", "random")]

    packed = {amp: run_pack(configs(amp), out_dir=tmp_path, progress=False)
              for amp in (True, False)}
    for member in packed[True]:
        assert member.error is None, member.error
        directory = Path(member.summary["run_dir"])
        assert json.loads((directory / "config.json").read_text())["precision"] == \
            "bfloat16-autocast"
        assert member.summary["precision"] == "bfloat16-autocast"
    for bf16, fp32 in zip(packed[True], packed[False], strict=True):
        a = torch.load(Path(bf16.summary["run_dir"]) / "checkpoint.pt", weights_only=True)
        b = torch.load(Path(fp32.summary["run_dir"]) / "checkpoint.pt", weights_only=True)
        assert any(not torch.equal(a["model"][k], b["model"][k]) for k in b["model"]
                   if b["model"][k].is_floating_point())


def test_a_single_run_through_the_library_checks_amp_too(tmp_path, no_bf16_cpu):
    config = resolve("cifar10-resnet20", "random", 0.5, seed=0, **{
        **COMMON, "train_overrides": {**COMMON["train_overrides"], "amp": True}})
    with pytest.raises(ConfigError, match="drop --amp"):
        run_experiment(config, out_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_the_training_loop_itself_refuses_amp_without_bf16(tmp_path, no_bf16_cpu):
    model = build_model("convnet", 10, seed=0)
    batch = [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ConfigError, match="drop --amp"):
        ntksap.train.train(model, batch, batch, TrainConfig(amp=True, epochs=1), tmp_path,
                           device="cpu", progress=False)
    assert not any(tmp_path.iterdir())
