"""The run directory: every file name in it, its name, and the reading and writing of its
records. No other module spells a run file's name.

A run (``ntksap run``, one point of a sweep) lives in
``OUT/<preset>/<method>-sp<sparsity>-seed<seed>-<digest>``, an IMP run in
``OUT/<preset>/imp-sp<sparsity>-seed<seed>-<digest>``; the digest is :func:`digest` of the
fields that name the run. A run directory holds:

- ``config.json``: the config, seed, package versions, git commit (:func:`write_config`);
- ``init.pt``: theta_0 (:func:`save_init`); IMP runs also ``rewind.pt``, the rewind point;
- ``masks.pt`` and ``densities.json`` (per-layer densities) (:func:`save_masks`);
- ``metrics.jsonl``, ``checkpoint.pt`` and ``done.json``, written by the training loop;
- ``summary.json`` (:func:`write_summary`, :func:`read_summary`);
- ``ntk_spectrum.json``, written by ``ntksap ntk --runs`` (:func:`write_spectrum`);
- ``.lock``, locked by the process working in it;
- ``tensorboard/`` and W&B's ``wandb/`` when those logging hooks are on;
- for IMP, one folder ``round<t>/`` per round, a training run of its own.

A pack (M runs trained as one fused model, :mod:`ntksap.pack`) writes each of its runs'
directories exactly as above, and while it trains keeps its own checkpoint in
``OUT/packs/<preset>/<digest of its runs' directories>/checkpoint.pt`` (:func:`pack_dir`),
removed when the pack ends.

Every write is atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_torch_save, write_text_atomic
from .errors import CheckpointError, MaskMismatchError
from .masks import Masks

CONFIG = "config.json"
INIT = "init.pt"
START = "start.pt"  # the weights a pruning method set to train from (NTT's transferred ones)
REWIND = "rewind.pt"
MASKS = "masks.pt"
DENSITIES = "densities.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the weights (and masks) of the selected epoch: see ntksap.epochs
DONE = "done.json"
SUMMARY = "summary.json"
SPECTRUM = "ntk_spectrum.json"
LOCK = ".lock"
TENSORBOARD = "tensorboard"
WANDB = "wandb"
ROUND = "round"  # IMP's round folders: round0, round1, ...
PACKS = "packs"  # OUT/packs/: the checkpoints of packs in training
FILES = (CONFIG, INIT, START, REWIND, MASKS, DENSITIES, METRICS, CHECKPOINT, BEST, DONE,
         SUMMARY, SPECTRUM)


def digest(fields: Mapping[str, Any]) -> str:
    """The 10-hex-digit digest of the fields that name a run (run and IMP directories)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def run_path(out_dir: str | Path, preset: str, label: str, sparsity: float, seed: int,
             fields: Mapping[str, Any]) -> Path:
    """``OUT/<preset>/<label>-sp<sparsity>-seed<seed>-<digest of fields>``."""
    return Path(out_dir) / preset / f"{label}-sp{sparsity:g}-seed{seed}-{digest(fields)}"


def pack_dir(out_dir: str | Path, preset: str, members: list[Path]) -> Path:
    """The folder of the pack that trains the runs in ``members`` (its checkpoint)."""
    names = sorted(Path(m).as_posix() for m in members)
    return Path(out_dir) / PACKS / preset / digest({"members": names})


def checkpoint_path(directory: Path) -> Path:
    """The training checkpoint of a run (or a pack) in ``directory``."""
    return directory / CHECKPOINT


def metrics_path(directory: Path) -> Path:
    return directory / METRICS


def read_metrics(directory: Path, strict: bool = False) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` ([] when there is none or, unless
    ``strict``, when it cannot be read; ``strict`` raises OSError or ValueError then)."""
    try:
        lines = (directory / METRICS).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        if not all(isinstance(r, dict) and "epoch" in r for r in records):
            raise ValueError("a line is not an epoch's record")
        return records
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        if strict:
            raise
        return []


def round_dir(directory: Path, t: int) -> Path:
    """IMP round ``t``'s folder."""
    return directory / f"{ROUND}{t}"


def is_round_dir(directory: Path) -> bool:
    """Whether ``directory`` is named as an IMP round folder (its parent must be IMP)."""
    return directory.name.startswith(ROUND)


def pruned_rounds(directory: Path) -> list[Path]:
    """An IMP run's round folders that hold masks, in round order."""
    return sorted((p.parent for p in directory.glob(f"{ROUND}*/{MASKS}")),
                  key=lambda p: int(p.name[len(ROUND):]) if p.name[len(ROUND):].isdigit()
                  else 0)


def has_config(directory: Path) -> bool:
    return (directory / CONFIG).exists()


def config_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a ``config.json``."""
    return sorted(p.parent for p in root.rglob(CONFIG))


def config_path(directory: Path) -> Path:
    return directory / CONFIG


def read_config(directory: Path) -> Any:
    """The JSON data of ``config.json`` (OSError, ValueError when it cannot be read)."""
    return json.loads((directory / CONFIG).read_text())


def read_record(directory: Path) -> dict[str, Any] | None:
    """``config.json``'s object, or None when there is none or it cannot be read."""
    try:
        record = read_config(directory)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_config(directory: Path, record: Mapping[str, Any]) -> None:
    """Create ``directory`` and write ``config.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / CONFIG, json.dumps(record, indent=2, default=str) + "\n")


def save_init(directory: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Save theta_0 as ``init.pt`` unless it is there already."""
    if not (directory / INIT).exists():
        atomic_torch_save(dict(state), directory / INIT)


def best_path(directory: Path) -> Path:
    """``best.pt``: the model's state dict (masks included; :func:`ntksap.load_pruned` loads
    it) at the run's selected epoch (:func:`ntksap.epochs.selected_epoch`)."""
    return directory / BEST


def start_path(directory: Path) -> Path:
    """``start.pt``: the weights training starts from when the pruning method set them (NTT
    with ``start_from="transferred"``); absent when training starts from ``init.pt``."""
    return directory / START


def save_start(directory: Path, state: Mapping[str, torch.Tensor]) -> None:
    atomic_torch_save(dict(state), directory / START)


def rewind_path(directory: Path) -> Path:
    return directory / REWIND


def load_rewind(directory: Path) -> dict[str, torch.Tensor]:
    return load_weights(directory / REWIND)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A run's saved weights (``init.pt``, ``rewind.pt``), read without running any code
    (``weights_only``); a file that is not a plain state dict (torn, foreign, or a pickle
    that would run code) is a :class:`CheckpointError` naming it and the fix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch raises, one line
        raise CheckpointError(
            f"cannot read the weights {str(path)!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); it is not a weights "
            "file that ntksap wrote: move the run directory away and run it again") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in state.values()):
        raise CheckpointError(f"{str(path)!r} holds no state dict of tensors; move the run "
                              "directory away and run it again")
    return state


def initial_weights(directory: Path, imp: bool = False) -> Path | None:
    """The file of the weights a run starts training from: ``init.pt``; for IMP the rewind
    point ``rewind.pt`` when there is one. None when neither is there."""
    names = (REWIND, INIT) if imp else (INIT,)
    return next((directory / name for name in names if (directory / name).exists()), None)


def masks_path(directory: Path) -> Path:
    return directory / MASKS


def existing_masks(directory: Path) -> Path | None:
    path = directory / MASKS
    return path if path.exists() else None


def load_masks(directory: Path, model: torch.nn.Module | None = None) -> Masks:
    """The run's ``masks.pt``; an unreadable or damaged one is a :class:`CheckpointError`
    saying that moving it aside makes the run prune again."""
    path = directory / MASKS
    try:
        return Masks.load(path, model)
    except MaskMismatchError as err:
        if not path.exists() or model is not None and _readable(path):
            raise  # masks for another model: moving them aside would hide that
        raise CheckpointError(
            f"the run's mask file {str(path)!r} is unreadable or damaged; move it aside "
            f"(e.g. `mv {path} {path}.bad`) and run the same command again: "
            "the run prunes again with the same seed") from err


def _readable(path: Path) -> bool:
    """Whether ``path`` reads as a mask file (for another model, perhaps)."""
    try:
        Masks.load(path)
    except MaskMismatchError:
        return False
    return True


def save_masks(directory: Path, masks: Masks, densities: Any) -> None:
    """Save ``masks.pt`` and the per-layer densities ``densities.json``."""
    masks.save(directory / MASKS)
    write_text_atomic(directory / DENSITIES, json.dumps(densities, indent=2) + "\n")


def densities_path(directory: Path) -> Path:
    return directory / DENSITIES


def done_path(directory: Path) -> Path:
    return directory / DONE


def lock_path(directory: Path) -> Path:
    return directory / LOCK


def summary_path(directory: Path) -> Path:
    return directory / SUMMARY


def write_summary(directory: Path, summary: Mapping[str, Any]) -> None:
    write_text_atomic(directory / SUMMARY, json.dumps(summary, indent=2) + "\n")


def read_summary(directory: Path) -> dict[str, Any] | None:
    """The summary of a finished run (None when there is none). An unreadable
    ``summary.json`` is a :class:`CheckpointError` naming it and the fix."""
    path = directory / SUMMARY
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"cannot read the run's summary {path} ({err}); delete it (`rm {path}`) and run "
            f"the same command again: the run is finished ({DONE}), so its summary is "
            "rewritten without training") from err
    return summary


def spectrum_path(directory: Path) -> Path:
    return directory / SPECTRUM


def read_spectrum(directory: Path) -> dict[str, Any]:
    """The recorded NTK spectrum, or {} when there is none or it cannot be read."""
    try:
        data = json.loads((directory / SPECTRUM).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_spectrum(directory: Path, record: Mapping[str, Any]) -> None:
    write_text_atomic(directory / SPECTRUM, json.dumps(record) + "\n")


def read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """The JSON object in ``path``, or ({}, what is wrong with the file, naming it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        reason = f"{type(err).__name__}: {err}"
        return {}, f"cannot read {path} ({reason}); rerun the run or delete the file"
    if not isinstance(data, dict):
        return {}, f"cannot read {path}: it holds a JSON {type(data).__name__}, not an object"
    return data, None
