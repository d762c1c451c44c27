"""NTK spectra of finished or started runs, written into their run directories.

For a run directory (as ``ntksap run`` and ``ntksap sweep`` leave it: ``config.json``,
``init.pt``, ``masks.pt``) :func:`run_spectrum` rebuilds the network at its initialization
theta_0, computes the NTK spectrum of the dense network and of the masked one on the same
Gaussian inputs (the paper's figure is at initialization, reference section 7), and writes
``ntk_spectrum.json``, which ``ntksap report`` plots (for an IMP run, each round folder gets one:
the rewind point under that round's mask):

    {"eigenvalues": [...], "dense_eigenvalues": [...], "inputs": 100, "input_seed": 0,
     "params": "all", "summary": {...}, "dense_summary": {...}}

The inputs depend on ``input_seed`` only, so every run of a sweep is measured on the same
inputs. A directory that already holds a spectrum for the same inputs and parameters is
skipped unless ``force``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..errors import ConfigError
from ..init import KAIMING
from ..masks import Masks
from ..models import build_model
from ..models import input_shape as model_input_shape
from ..names import DENSE
from ..ntk.compare import DENSE_NETWORK, compare_spectra, finite
from ..ntk.memory import DEFAULT_BUDGET, check_kernel_fits, parse_bytes
from .record import read_run

SPECTRUM_FILE = rundir.SPECTRUM


@dataclass(frozen=True)
class RunNetwork:
    """What a run directory's spectrum is measured on: the run's config, its starting weights
    and its masks (``None`` for a dense run)."""

    directory: Path
    config: dict[str, Any]
    weights: Path | None
    masks: Path | None


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """The run directories to measure: each path that is one, or those found below it.

    A run (``ntksap run``) counts once it has pruned (``masks.pt``; dense runs always); an IMP
    run counts through its round folders (``round<t>/masks.pt``). A run named directly that
    cannot be measured yet is an error; one found below a folder is left out."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist: give run directories "
                                    "(ntksap run / sweep --out-dir) or a folder of them")
        if rundir.has_config(path) or _imp_round(path):
            candidates, named = [path], True
        else:
            candidates, named = rundir.config_dirs(path), False
        for directory in candidates:
            for target in _expand(directory, named):
                if target not in found:
                    found.append(target)
    if not found:
        raise ConfigError(f"no run directories that have pruned ({rundir.CONFIG} naming a "
                          f"model, and {rundir.MASKS} unless dense) under "
                          f"{', '.join(map(str, paths))}")
    return found


def _expand(directory: Path, named: bool) -> list[Path]:
    if read_run(directory).kind == "imp":
        rounds = rundir.pruned_rounds(directory)
        if not rounds and named:
            raise ConfigError(f"IMP run {directory} has no pruned round yet "
                              f"({rundir.ROUND}*/{rundir.MASKS})")
        return rounds
    try:
        network(directory)
    except ConfigError:
        if named:
            raise
        return []
    return [directory]


def _imp_round(directory: Path) -> bool:
    return rundir.is_round_dir(directory) and read_run(directory.parent).kind == "imp"


def network(directory: str | Path) -> RunNetwork:
    """The network a run directory (or an IMP round folder) holds at the start of training:
    theta_0 (``init.pt``; for IMP the rewind point, ``rewind.pt`` when there is one) and its
    masks. Raises :class:`ConfigError` when the directory is not a run or has not pruned."""
    directory = Path(directory)
    imp_round = _imp_round(directory)
    home = directory.parent if imp_round else directory
    config = read_run(home).settings
    if not config.get("model"):
        raise ConfigError(f"{directory} is not a run directory: no {rundir.CONFIG} naming a "
                          "model")
    weights = rundir.initial_weights(home, imp=imp_round)
    masks = rundir.existing_masks(directory)
    if masks is not None:
        return RunNetwork(directory, config, weights, masks)
    if config.get("method", DENSE) == DENSE:
        return RunNetwork(directory, config, weights, None)
    raise ConfigError(f"{directory} has no {rundir.MASKS} yet (the run has not pruned): run "
                      "it first, or leave it out")


def run_spectrum(directory: str | Path, *, inputs: int = 100, input_seed: int = 0,
                 params: str = "all", float64: bool = True,
                 memory_budget: str | int | float = DEFAULT_BUDGET,
                 device: str | torch.device = "cpu", force: bool = False,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``<directory>/ntk_spectrum.json`` (see the module docstring) and return it, with
    ``"skipped": True`` when an equal one was already there."""
    if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
        raise ConfigError(f"the number of inputs (--inputs) must be >= 1; got {inputs!r}")
    target = network(directory)
    directory, config = target.directory, target.config
    settings = {"inputs": inputs, "input_seed": input_seed, "params": params}
    if rundir.spectrum_path(directory).exists() and not force:
        old = rundir.read_spectrum(directory)
        if all(old.get(k) == v for k, v in settings.items()):
            return {**old, "skipped": True}
    check_kernel_fits(inputs, int(config["num_classes"]), 4, parse_bytes(memory_budget))
    model = build_model(config["model"], int(config["num_classes"]),
                        seed=int(config.get("seed", 0)), init=config.get("init") or KAIMING)
    if target.weights is not None:  # the run's own theta_0 (the seed rebuilds it too)
        model.load_state_dict(rundir.load_weights(target.weights))
    model.to(device)
    masks: dict[str, Masks] = {}
    if target.masks is not None:
        masks["pruned"] = Masks.load(target.masks, model)
    shape = _input_shape(directory, config["model"])
    generator = torch.Generator().manual_seed(input_seed)
    x = torch.randn((inputs, *shape), generator=generator).to(device)
    comparison = compare_spectra(model, masks, x, params=params, float64=float64,
                                 memory_budget=memory_budget, progress=progress)
    dense = comparison.eigenvalues[DENSE_NETWORK].tolist()
    mine = comparison.eigenvalues["pruned"].tolist() if masks else dense
    rows = {r["network"]: r for r in comparison.rows}
    record = {"eigenvalues": mine, "dense_eigenvalues": dense, **settings,
              "method": config.get("method", DENSE),
              "sparsity": masks["pruned"].sparsity if masks else 0.0,
              "summary": finite(rows["pruned" if masks else DENSE_NETWORK]),
              "dense_summary": finite(rows[DENSE_NETWORK])}
    rundir.write_spectrum(directory, record)
    return record


def _input_shape(directory: Path, model: str) -> tuple[int, ...]:
    """The shape of the run's data (recorded since user models; else the model's own)."""
    return model_input_shape(model, read_run(directory).data.get("input_shape"))
