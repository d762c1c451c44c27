"""``ntksap export``: a finished run or a mask file as baked weights, ONNX (onnxruntime agrees
with PyTorch, and the graph keeps exactly the mask's weights) or a torch.nn.utils.prune
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune as torch_prune

import ntksap
from ntksap.cli import main
from ntksap.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--preset", "cifar10-resnet20", "--dataset", "synthetic", "--model",
                 "convnet", "--limit-per-class", "10", "--epochs", "2", "--batch-size", "20",
                 "--method", "synflow", "--sparsity", "0.7", "--device", "cpu",
                 "--no-progress", "--out-dir", str(out)]) == 0
    return next(out.glob("cifar10-resnet20/synflow-*"))


def _trained(run: Path) -> tuple[torch.nn.Module, ntksap.Masks]:
    model = build_model("convnet", 10, seed=0)
    masks = ntksap.load_pruned(model, torch.load(run / "best.pt", weights_only=True))
    return model.eval(), masks


def test_onnx_export_agrees_with_pytorch_and_keeps_the_masks_weights(finished_run, tmp_path,
                                                                     capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    out = tmp_path / "net.onnx"
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, masks = _trained(finished_run)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(out))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), model(x).detach(), atol=1e-5)  # batch 5
    graph = onnx.load(str(out)).graph
    kept = sum(int((numpy_helper.to_array(t) != 0).sum()) for t in graph.initializer
               if len(t.dims) >= 2)
    assert kept == masks.remaining


def test_state_dict_and_torch_prune_exports(finished_run, tmp_path):
    model, masks = _trained(finished_run)
    assert main(["export", str(finished_run), "--format", "state_dict", "--out",
                 str(tmp_path / "w.pt")]) == 0
    plain = build_model("convnet", 10, seed=3)
    plain.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))  # no masks needed
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(plain.eval()(x), model(x), atol=1e-6)
    assert main(["export", str(finished_run), "--format", "torch_prune", "--out",
                 str(tmp_path / "tp.pt")]) == 0
    pruned = torch.load(tmp_path / "tp.pt", weights_only=False)
    assert torch_prune.is_pruned(pruned)
    back = ntksap.from_torch_prune(pruned)
    assert all(torch.equal(back[n], masks[n]) for n in masks)
    assert torch.allclose(pruned.eval()(x), model(x), atol=1e-6)


def test_a_mask_file_exports_theta_0_masked_and_bad_input_is_one_line(tmp_path, capsys):
    masks_file = tmp_path / "m.pt"
    assert main(["prune", "--model", "lenet300", "--method", "magnitude", "--sparsity", "0.9",
                 "--out", str(masks_file), "--no-progress", "--json"]) == 0
    remaining = json.loads(capsys.readouterr().out)["remaining"]
    assert main(["export", str(masks_file), "--model", "lenet300", "--format", "state_dict",
                 "--out", str(tmp_path / "w.pt")]) == 0
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    assert sum(int((w != 0).sum()) for w in weights) == remaining
    capsys.readouterr()
    for argv, message in (
            ([str(tmp_path / "nothing"), "--format", "onnx"], "no run directory or mask file"),
            ([str(masks_file), "--format", "state_dict"], "a mask file needs --model")):
        assert main(["export", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
