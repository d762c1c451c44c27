"""Which runs may share a pack, and what a pack returns for each of its runs.

A pack is a list of :class:`ntksap.runs.RunConfig` that share everything training needs
(:func:`pack_key`: preset, dataset, model, classes, data limit, hold-out and the training
recipe); they may differ in method, sparsity, seed, method options, rounds, scope and
transform. :func:`run_pack` trains them and leaves each run's directory exactly as
``ntksap run`` would.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..rundir import digest
from ..runs.config import RunConfig


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


# the fields in which the runs of one pack may differ: how each member is drawn and pruned
PER_MEMBER = ("method", "sparsity", "seed", "rounds", "scope", "transform", "method_options",
              "init")


def pack_key(config: RunConfig) -> str:
    """Runs with equal keys can share a pack: the digest of every field but
    :data:`PER_MEMBER` (preset, data, model and its code, classes, data limit, hold-out,
    training recipe, ...; a field added later is shared unless listed there)."""
    fields = dataclasses.asdict(config)
    shared = {k: v for k, v in fields.items() if k not in PER_MEMBER}
    return digest(json.loads(json.dumps(shared)))
