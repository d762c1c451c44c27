"""What a run's per-epoch records (``metrics.jsonl``) say: the epoch a network diverged in,
and the validation-selected epoch. Read by the training loop and by the report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def diverged_epoch(records: Iterable[dict[str, Any]]) -> int | None:
    """The first (1-based) epoch whose training loss is not finite (NaN or infinite), else
    None: the epoch the network diverged in."""
    for record in records:
        if not math.isfinite(record["loss"]):
            return int(record["epoch"])
    return None


def val_selected(metrics: Iterable[dict[str, Any]]) -> tuple[int | None, float | None]:
    """The validation-selected epoch (the highest ``val_acc``, the earliest on ties) and its
    test accuracy; (None, None) for a run without per-epoch validation (no hold-out)."""
    scored = [r for r in metrics if r.get("val_acc") is not None]
    if not scored:
        return None, None
    best = max(scored, key=lambda r: (r["val_acc"], -r["epoch"]))
    return int(best["epoch"]), best["test_acc"]


def selected_epoch(metrics: Iterable[dict[str, Any]]) -> tuple[int | None, str]:
    """The epoch whose weights a run keeps as its best (``best.pt``) and the split that chose
    it: the validation-selected epoch ("validation") when the epochs were validated, else
    the best test accuracy's, the earliest on ties ("test": named so, for a run without a
    hold-out). (None, "test") before any epoch."""
    metrics = list(metrics)
    epoch, _ = val_selected(metrics)
    if epoch is not None:
        return epoch, "validation"
    if not metrics:
        return None, "test"
    best = max(metrics, key=lambda r: (r["test_acc"], -r["epoch"]))
    return int(best["epoch"]), "test"
