"""Packs: M runs of one preset trained together as one fused model (see docs/packs.md).

A pack is a list of :class:`ntksap.experiment.RunConfig` that share everything training needs
(:func:`pack_key`: preset, dataset, model, classes, data limit, hold-out and the training
recipe); they may differ in method, sparsity, seed, method options, rounds, scope and
transform. :func:`run_pack` trains them and leaves each run's directory exactly as
``ntksap run`` would.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..experiment import DENSE, RunConfig, run_dir, run_experiment
from ..rundir import digest


@dataclasses.dataclass
class MemberResult:
    """One run of a pack: its summary (as ``ntksap run`` returns it), or why it failed."""

    config: RunConfig
    summary: dict[str, Any] | None = None
    error: str | None = None  # a diverged network: "... at epoch E"

    @property
    def failed(self) -> bool:
        return self.summary is None


def can_pack(config: Any) -> bool:
    """Whether ``config`` may go into a pack: a dense or prune-at-initialization run (IMP
    trains round after round, each round a run of its own)."""
    return isinstance(config, RunConfig)


def pack_key(config: RunConfig) -> str:
    """Runs with equal keys can share a pack: the digest of what training needs to be common
    (preset, dataset, model, classes, data limit, hold-out, training recipe)."""
    fields = dataclasses.asdict(config)
    shared = {k: fields[k] for k in ("preset", "dataset", "model", "num_classes",
                                     "limit_per_class", "holdout", "train")}
    return digest(json.loads(json.dumps(shared)))


def run_pack(configs: Sequence[RunConfig], *, out_dir: str | Path = "runs",
             data_dir: str | Path | None = None, download: bool = False,
             device: str | torch.device = "cpu", progress: bool = True,
             separate: bool = False) -> list[MemberResult]:
    """Train ``configs`` (one pack: equal :func:`pack_key`) and return one result per config,
    in order. ``separate`` trains them one after the other with :func:`run_experiment`
    instead of fused (the fallback for a model the pack cannot fuse).

    NOTE: the fused trainer is being written; until it lands every pack runs separately."""
    keys = {pack_key(c) for c in configs}
    if len(keys) > 1:
        raise ValueError("a pack's runs must share preset, data and training recipe")
    results = []
    for config in configs:
        try:
            summary = run_experiment(config, out_dir=out_dir, data_dir=data_dir,
                                     download=download, device=device, progress=progress)
        except Exception as err:  # noqa: BLE001 - one run's failure is recorded, not fatal
            results.append(MemberResult(config, error=f"{type(err).__name__}: {err}"))
        else:
            results.append(MemberResult(config, summary))
    return results


__all__ = ["DENSE", "MemberResult", "can_pack", "pack_key", "run_dir", "run_pack"]
