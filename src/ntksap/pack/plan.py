"""Which runs may share a pack, and what a pack returns for each of its runs.

A pack is a list of :class:`ntksap.experiment.RunConfig` that share everything training needs
(:func:`pack_key`: preset, dataset, model, classes, data limit, hold-out and the training
recipe); they may differ in method, sparsity, seed, method options, rounds, scope and
transform. :func:`run_pack` trains them and leaves each run's directory exactly as
``ntksap run`` would.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..experiment import RunConfig
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
                                     "limit_per_class", "holdout", "shared_stream", "train")}
    return digest(json.loads(json.dumps(shared)))
