"""NTK spectra of finished or started runs, written into their run directories.

For a run directory (as ``ntksap run`` and ``ntksap sweep`` leave it: ``config.json``,
``init.pt``, ``masks.pt``) :func:`run_spectrum` rebuilds the network at its initialization
theta_0, computes the NTK spectrum of the dense network and of the masked one on the same
Gaussian inputs (the paper's figure is at initialization, reference section 7), and writes
``ntk_spectrum.json``, which ``ntksap report`` plots:

    {"eigenvalues": [...], "dense_eigenvalues": [...], "inputs": 100, "input_seed": 0,
     "params": "all", "summary": {...}, "dense_summary": {...}}

The inputs depend on ``input_seed`` only, so every run of a sweep is measured on the same
inputs. A directory that already holds a spectrum for the same inputs and parameters is
skipped unless ``force``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..errors import ConfigError
from ..masks import Masks
from ..models import build_model, model_spec
from .compare import DENSE, compare_spectra, finite
from .memory import DEFAULT_BUDGET

SPECTRUM_FILE = "ntk_spectrum.json"


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories: each path that holds ``config.json``, or those found below it."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist: give run directories "
                                    "(ntksap run / sweep --out-dir) or a folder of them")
        dirs = [path] if (path / "config.json").exists() else sorted(
            p.parent for p in path.rglob("config.json"))
        found += [d for d in dirs if _run_config(d) is not None and d not in found]
    if not found:
        raise ConfigError(f"no run directories (with config.json naming a model) under "
                          f"{', '.join(map(str, paths))}")
    return found


def _run_config(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = record.get("config", {})
    config = config.get("run", config)
    return config if isinstance(config, dict) and config.get("model") else None


def run_spectrum(directory: str | Path, *, inputs: int = 100, input_seed: int = 0,
                 params: str = "all", float64: bool = True,
                 memory_budget: str | int | float = DEFAULT_BUDGET,
                 device: str | torch.device = "cpu", force: bool = False,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``<directory>/ntk_spectrum.json`` (see the module docstring) and return it, with
    ``"skipped": True`` when an equal one was already there."""
    directory = Path(directory)
    config = _run_config(directory)
    if config is None:
        raise ConfigError(f"{directory} is not a run directory: no config.json naming a model")
    path = directory / SPECTRUM_FILE
    settings = {"inputs": inputs, "input_seed": input_seed, "params": params}
    if path.exists() and not force:
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if all(old.get(k) == v for k, v in settings.items()):
            return {**old, "skipped": True}
    model = build_model(config["model"], int(config["num_classes"]),
                        seed=int(config.get("seed", 0)))
    init = directory / "init.pt"
    if init.exists():  # the run's own theta_0 (the seed rebuilds it too)
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    model.to(device)
    masks: dict[str, Masks] = {}
    if (directory / "masks.pt").exists():
        masks["pruned"] = Masks.load(directory / "masks.pt", model)
    elif config.get("method", DENSE) != DENSE:
        raise ConfigError(f"{directory} has no masks.pt yet (the run has not pruned): run it "
                          "first, or leave it out")
    shape = model_spec(config["model"]).input_shape
    generator = torch.Generator().manual_seed(input_seed)
    x = torch.randn((inputs, *shape), generator=generator).to(device)
    comparison = compare_spectra(model, masks, x, params=params, float64=float64,
                                 memory_budget=memory_budget, progress=progress)
    dense = comparison.eigenvalues[DENSE].tolist()
    mine = comparison.eigenvalues["pruned"].tolist() if masks else dense
    rows = {r["network"]: r for r in comparison.rows}
    record = {"eigenvalues": mine, "dense_eigenvalues": dense, **settings,
              "method": config.get("method", DENSE), "sparsity": config.get("sparsity", 0.0),
              "summary": finite(rows["pruned" if masks else DENSE]),
              "dense_summary": finite(rows[DENSE])}
    write_text_atomic(path, json.dumps(record) + "\n")
    return record
