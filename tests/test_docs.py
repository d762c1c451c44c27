"""The documentation builds without a warning (``mkdocs build --strict``), and the README and
the docs point only at files that are in the repository."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_tools() -> list[str]:
    missing = []
    for name in DOC_TOOLS:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.skipif(bool(_missing_tools()),
                    reason="the docs tools are not installed (pip install -e '.[dev]')")
def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "prune" / "index.html").read_text()
    assert "ntksap.prune" in api and "sparsity" in api  # rendered from the docstrings


def test_no_pointer_to_the_workspace_spec():
    for path in _markdown_files():
        assert "shared/docs" not in path.read_text(), f"{path} points outside the repository"


def test_relative_links_point_at_files_that_exist():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for path in _markdown_files():
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_the_output_scale_script_measures_the_masked_logits(tmp_path, one_thread):
    """docs/results/scripts/init_output_scale.py: the logit spread of a run's masked theta_0
    over the dense run's, checked against the same computed by hand (weights times masks)."""
    import torch

    from ntksap.data.bundle import load_dataset
    from ntksap.experiment import resolve, run_experiment
    from ntksap.models import build_model

    common = dict(dataset="synthetic", model="convnet", limit_per_class=12,
                  train_overrides={"epochs": 1, "batch_size": 32})
    dirs = {}
    for method, sparsity in (("dense", 0.0), ("magnitude", 0.9)):
        summary = run_experiment(resolve("cifar10-resnet20", method, sparsity, **common),
                                 out_dir=tmp_path, progress=False)
        dirs[method] = Path(summary["run_dir"])
    path = ROOT / "docs" / "results" / "scripts" / "init_output_scale.py"
    spec = importlib.util.spec_from_file_location("init_output_scale", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ratios = script.main([str(dirs["dense"].parent), "--images", "40"])

    test = load_dataset("synthetic").test
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (test.mean, test.std))
    x = (test.x[:40].float() / 255 - mean) / std

    def spread(directory: Path, masked: bool) -> float:
        state = torch.load(directory / "init.pt")
        if masked:
            for name, mask in torch.load(directory / "masks.pt")["masks"].items():
                state[f"{name}.weight"] = state[f"{name}.weight"] * mask
        model = build_model("convnet", num_classes=10)
        model.load_state_dict(state)
        with torch.no_grad():
            return model.eval()(x).std().item()

    expected = spread(dirs["magnitude"], True) / spread(dirs["dense"], False)
    assert set(ratios) == {"magnitude"}
    assert ratios["magnitude"][0.9] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(1.0, abs=0.01)  # the masks do change the spread
