"""Run-directory files: the per-epoch checkpoint, ``metrics.jsonl`` and the ``done.json`` marker.

Every write is atomic (temporary file + rename), so a run killed at any moment leaves either
the previous or the new version of each file, never a torn one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_torch_save, write_text_atomic
from ..errors import CheckpointError
from ..rundir import BEST, CHECKPOINT, DONE, METRICS  # noqa: F401  (the run files written here)

FORMAT = "ntksap-train-checkpoint/1"
_REQUIRED = ("format", "epoch", "model", "optimizer", "scheduler", "rng", "metrics", "config",
             "best_test_acc", "best_epoch")


def capture_rng() -> dict[str, Any]:
    """The RNG states of torch (CPU and every CUDA device), Python ``random`` and NumPy."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`: set every RNG back to the captured state."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _fix(path: Path) -> str:
    return (f"move it away (e.g. `mv {path} {path}.bad`) to restart the run from scratch, "
            "or point the run at another directory")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` if the
    file cannot be read or is not one."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn, truncated or foreign file: never silently restart
        raise CheckpointError(f"cannot read training checkpoint {str(path)!r} "
                              f"({type(exc).__name__}: {exc}); {_fix(path)}") from exc
    missing = [k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]
    if missing or payload["format"] != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an ntksap training checkpoint "
                              f"(missing {', '.join(missing) or 'format tag'}); {_fix(path)}")
    return payload


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (see ``_REQUIRED``) atomically, tagged with the checkpoint format."""
    atomic_torch_save({"format": FORMAT, **payload}, path)


def check_same_config(path: Path, stored: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to resume or reuse a run that was started with another training config."""
    stored, config = _plain(stored), _plain(config)
    if stored != config:
        diff = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}"
                         for k in sorted(set(stored) | set(config))
                         if stored.get(k) != config.get(k))
        raise CheckpointError(f"{str(path)!r} belongs to a run with another training config "
                              f"({diff}); use another run directory, or {_fix(path)}")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` to exactly ``records``, one JSON object per line."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_done(path: Path, config: dict[str, Any], result: dict[str, Any]) -> None:
    """Mark the run finished, recording its config and result."""
    write_text_atomic(path, json.dumps({"config": config, "result": result}, indent=2) + "\n")


def read_done(path: Path) -> dict[str, Any] | None:
    """The ``done.json`` content, or None when the run has not finished."""
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
        return {"config": done["config"], "result": done["result"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read the finished-run marker {str(path)!r} ({exc}); "
                              f"{_fix(path)}") from exc
