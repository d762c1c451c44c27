"""Smoke tests of the benchmark scripts (benchmarks/*.py): they run, print what the notes quote,
and time what they claim to time."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tqdm import tqdm

from ntksap import prune
from ntksap.models import build_model
from ntksap.train import TrainConfig, build_optimizer
from ntksap.train.loop import train_one_epoch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"benchmarks_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "pack_speed.py"), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_pack_speed_quick_json_prints_one_object_with_positive_ratios():
    done = _script("--quick", "--json", "--profile", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["device"] == "cpu" and out["quick"] is True
    for key in ("lenet300_pack27_ratio", "resnet20_pack8_ratio"):
        assert isinstance(out[key], float) and math.isfinite(out[key]) and out[key] > 0, key
    assert out["projected_table_minutes"] is None  # CPU: no projection
    (row,) = out["resnet20"]
    assert row["M"] == 8 and row["ratio"] == out["resnet20_pack8_ratio"]
    assert row["separate_images_per_s"] > 0 and row["pack_images_per_s"] > 0
    assert out["lenet300"][0]["M"] == 27
    assert out["profile"] and all(e["name"] and e["cpu_time_ms"] >= 0 for e in out["profile"])


@pytest.mark.parametrize("args, words", [
    (["--sizes", "0,4"], "--sizes"),
    (["--sizes", "a"], "--sizes"),
    (["--reps", "0"], "--reps"),
    (["--sparsity", "1"], "--sparsity"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA device")]))
def test_pack_speed_bad_input_is_one_line_and_exit_2(args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load("pack_speed").parse(args)
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert words in captured.err.strip().splitlines()[-1]


def test_pack_speed_random_masks_keep_what_random_pruning_keeps(one_thread):
    bench = _load("pack_speed")
    model = build_model("resnet20", 10, seed=0)
    ours = [bench.random_masks(model, 0.982, seed=s) for s in (0, 1)]
    project = prune(model, "random", 0.982, input_shape=(3, 32, 32), seed=0)
    assert ours[0].remaining == ours[1].remaining == project.remaining
    assert dict(ours[0].items()).keys() == dict(project.items()).keys()
    assert any(not torch.equal(ours[0][k], ours[1][k]) for k in project)  # per-network masks


def test_pack_speed_pack_step_trains_each_network_as_the_training_loop(one_thread):
    """The pack side trains what the separate side trains: after two steps each network's
    summed loss equals the project's loop on that network alone (so the speed compared is that
    of the same work)."""
    bench = _load("pack_speed")
    setting = bench.Setting("lenet300", (1, 28, 28), 6, 5e-4, 2, False)
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
    device = torch.device("cpu")
    models, masks = bench.networks(setting, 3, 0.9)
    pack = bench.pack_side(models, masks, config, device)
    xs, ys = bench.random_batches(setting, 3, device)
    fused, optimizer = pack.nets[0]
    losses = bench.pack_steps(fused, optimizer, xs, ys, 3, config, device)[:3]
    for model, mask, x, y, loss in zip(models, masks, xs, ys, losses, strict=True):
        mask.apply(model)
        alone = build_optimizer(model, config)
        with tqdm(total=3, disable=True) as bar:
            expected = train_one_epoch(model, [(x, y)] * 3, alone, config, device, bar)[0]
        assert loss == pytest.approx(expected, rel=1e-4)


def test_train_speed_times_every_variant_and_names_the_fastest_bf16(capsys, one_thread):
    bench = _load("train_speed")
    out = bench.main(["--steps", "1", "--reps", "2", "--warmup", "1", "--batch-size", "8",
                      "--device", "cpu", "--json"])
    assert json.loads(capsys.readouterr().out) == out
    rows = out["variants"]
    assert set(rows) == {"fp32-nchw", "fp32-cl", "bf16-nchw", "bf16-cl"} or out["skipped"]
    assert rows["fp32-nchw"]["ratio"] == 1.0
    bf16 = {name: row["ratio"] for name, row in rows.items() if name.startswith("bf16")}
    if bf16:
        assert out["resnet20_bf16_ratio"] == max(bf16.values())
        assert out["fastest_bf16"] == max(bf16, key=bf16.get)
    for row in rows.values():
        assert row["best_images_per_s"] >= row["median_images_per_s"] > 0


def test_train_speed_skips_bf16_on_a_cpu_without_it(capsys, monkeypatch, one_thread):
    from ntksap.train import precision

    monkeypatch.setattr(precision, "cpu_bf16_isa", lambda: None)
    bench = _load("train_speed")
    out = bench.main(["--steps", "1", "--reps", "1", "--warmup", "1", "--batch-size", "8",
                      "--device", "cpu"])
    assert set(out["variants"]) == {"fp32-nchw", "fp32-cl"}
    assert set(out["skipped"]) == {"bf16-nchw", "bf16-cl"}
    assert out["resnet20_bf16_ratio"] is None
    assert "bf16-cl: skipped: --amp: this CPU has no native bfloat16" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps"), (["--threads", "-1"], "--threads"),
    (["--sparsity", "1"], "--sparsity"), (["--batch-size", "0"], "--batch-size"),
])
def test_train_speed_bad_input_is_one_line_and_exit_2(args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load("train_speed").parse(args)
    assert exit_.value.code == 2 and words in capsys.readouterr().err.strip().splitlines()[-1]


def test_train_speed_compile_variants_compile_the_model_and_time_it_apart(monkeypatch,
                                                                         one_thread):
    """``--compile`` adds each variant under torch.compile (replaced here by a recorder: the
    real compile takes a minute), with its warm-up as compile_seconds."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    bench = _load("train_speed")
    out = bench.main(["--steps", "1", "--reps", "1", "--warmup", "1", "--batch-size", "8",
                      "--device", "cpu", "--compile"])
    names = [n for n in out["variants"] if n.endswith("+compile")]
    assert len(compiled) == len(names) >= 2
    assert all(out["variants"][n]["compile_seconds"] > 0 for n in names)
    assert all(row["compile_seconds"] is None for n, row in out["variants"].items()
               if n not in names)


def test_ntt_defaults_reports_its_mask_updates_and_the_mask_it_last_chose():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "ntt_defaults.py"), "--json",
                           "--mask-update-every", "2", "--epochs", "1"],
                          capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["mask_updates"] == 3 and out["transfer_steps"] == 9  # the floor: (3 + 1) 2 + 1
    assert out["returned_is_last_chosen"] is True
    assert 0 < out["random_mask_jaccard"] < out["jaccard_to_magnitude"] <= 1


def test_inference_latency_sparse_layers_compute_what_the_dense_ones_do(one_thread):
    """The CSR Linear and the im2col + CSR convolution give the dense layers' outputs
    (strided, padded, biased), and a quick run of the script times every variant."""
    latency = _load("inference_latency")
    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.7)
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(latency.CsrConv2d(conv)(x), conv(x), atol=1e-5)
    linear = torch.nn.Linear(7, 4)
    x = torch.randn(6, 7)
    assert torch.allclose(latency.CsrLinear(linear)(x), linear(x), atol=1e-5)
    row = latency.measure("lenet300", 0.9, 2, repeats=1, inner=1)
    assert set(row["ms"]) == {"dense", "masked", "baked", "sparse"}
    assert all(v > 0 for v in row["ms"].values()) and row["speedup"]["baked"] == 1.0
