"""The single-run driver: prune once, restore the initial weights, train, evaluate, and leave a
complete, resumable record in the run directory derived from the config (see
:mod:`ntksap.rundir`). Nothing is created before the whole run is checked."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .. import rundir
from ..atomic import is_disk_full, remove_stale_temporaries
from ..cost import cost
from ..data import DatasetShapeError, load_dataset
from ..data.bundle import IMAGE_SHAPES, check_image_shape
from ..effective import effective_sparsity, layer_report, sparsity_of_report
from ..engine import prune, reinitialize
from ..errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
)
from ..masks import Masks, measured_sparsity
from ..methods import METHODS
from ..models import build_model
from ..names import DENSE
from ..train import CUSTOM, get_preset, train
from ..train.checkpoint import read_done
from ..train.config import LoggingConfig
from ..train.hooks import check_logging, logging_hooks
from ..train.loop import evaluate
from ..train.precision import check_amp, precision_record
from .checks import check_batches, check_model
from .config import (
    SHARED_STREAM_SEED,
    RunConfig,
    check_code,
    check_method_options,
    config_from_dict,
    method_options,
    quiet_options,
    run_dir,
)
from .lock import run_lock
from .source import provenance


def run_experiment(config: RunConfig, *, out_dir: str | Path = "runs",
                   data_dir: str | Path | None = None, download: bool = False,
                   device: str | torch.device = "cpu", progress: bool = True,
                   distributed: bool = False, logging: LoggingConfig | None = None
                   ) -> dict[str, Any]:
    """Prune, train and evaluate as ``config`` says; resume or report if already started.

    ``logging`` (default: none) also sends each epoch's metrics to TensorBoard
    (``<run>/tensorboard/``) and/or Weights & Biases; it is recorded in ``config.json`` but
    is not part of the run's identity (the directory name).

    Everything is checked before the run directory is created: the method's options, the
    data (classes and image shape against the preset), the model (one forward pass at the
    data's shape) and the training batches. While it works in the run directory, the process
    holds its lock (:func:`run_lock`: a second process on the same run fails at once, naming
    the first). A full disk is a :class:`DiskFullError` saying that rerunning resumes."""
    start = time.perf_counter()
    device = torch.device(device)
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    directory = run_dir(config, out_dir)
    finished = finished_summary(directory)
    if finished is not None:
        return finished
    check_method_options(config)
    check_amp(config.train, device)
    logging = logging or LoggingConfig()
    check_logging(logging)
    bundle = open_data(config, data_dir, download, progress)
    model = build_model(config.model, config.num_classes, seed=config.seed, init=config.init)
    check_model(model, bundle.input_shape, config)
    batches = loaders(config, bundle, device, rank, world)
    check_batches(batches[0], config)
    if config.method != DENSE and METHODS[config.method].needs_data:
        bundle.check_pruning_set()
    try:
        with run_lock(directory) if rank == 0 else contextlib.nullcontext():
            finished = finished_summary(directory)  # finished meanwhile by another process
            if finished is not None:
                return finished
            return _prune_and_train(config, directory, bundle, model, batches, device,
                                    progress, distributed, start, logging)
    except (OSError, DiskFullError) as err:
        if not is_disk_full(err):
            raise
        where = getattr(err, "path", None) or getattr(err, "filename", None) or directory
        raise DiskFullError(
            f"the disk is full: no space left to write {where}; free some space and run the "
            f"same command again: it resumes {directory} from its last completed epoch "
            "(everything written before is intact)", str(where)) from err


def _prune_and_train(config: RunConfig, directory: Path, bundle: Any, model: torch.nn.Module,
                     batches: tuple[Any, Any], device: torch.device, progress: bool,
                     distributed: bool, start: float, logging: LoggingConfig
                     ) -> dict[str, Any]:
    """The run itself, in its (locked) directory: record, prune, train, summarize."""
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if rank == 0:  # the lock is held: no other process writes here
        remove_stale_temporaries(directory, rundir.FILES)
    masks = prepare_run(config, directory, bundle, model, device, progress, rank=rank,
                        world=world, distributed=distributed, logging=logging)
    train_loader, test_loader = batches
    densities = {} if masks is None else {r["name"]: r["density"] for r in masks.layers()}
    with logging_hooks(logging if rank == 0 else LoggingConfig(), directory,
                       {**dataclasses.asdict(config), "run_dir": str(directory),
                        "densities": densities}) as hooks:
        result = train(model, train_loader, test_loader, config.train, directory,
                       device=device, masks=masks, progress=progress, distributed=distributed,
                       hooks=hooks, val_loader=validation_loader(bundle, device))
    summary = summarize(config, directory, model, masks, bundle, result, device, start)
    if rank == 0:
        rundir.write_summary(directory, summary)
    return summary


def prepare_run(config: RunConfig, directory: Path, bundle: Any, model: torch.nn.Module,
                device: torch.device, progress: bool, *, rank: int = 0, world: int = 1,
                distributed: bool = False, logging: LoggingConfig | None = None
                ) -> Masks | None:
    """Before training, in the run's (locked) directory: record the config and theta_0, read
    or compute the masks (None for dense), and leave ``model`` unmasked at the weights it
    trains from: theta_0, re-initialized (the ``reinit`` sanity check), or the weights the
    pruning method set (NTT's transferred ones, saved as ``start.pt`` so a resumed run
    starts from them too)."""
    if rank == 0:
        _write_config(directory, config, device, world, logging, data_record(bundle))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    if rank == 0:
        rundir.save_init(directory, initial)
    masks = _masks(config, model, bundle, directory, device, progress, rank, distributed)
    start = rundir.start_path(directory)
    if start.exists():
        model.load_state_dict(rundir.load_weights(start))
    elif config.transform != "reinit":
        model.load_state_dict(initial)  # train from theta_0, whatever the scoring did
    return masks


def summarize(config: RunConfig, directory: Path, model: torch.nn.Module, masks: Masks | None,
              bundle: Any, result: dict[str, Any], device: torch.device, start: float,
              pack_size: int = 1) -> dict[str, Any]:
    """The run's ``summary.json`` record from the trained (masked) ``model`` and the training
    loop's ``result``. ``pack_size``: the number of networks it was trained with in one
    fused pack (1: alone); float32 results depend on it in the last bits (the fused
    kernels sum in another order), so it is recorded, and the pack's time is shared
    (``seconds``, ``pack_seconds``)."""
    densities = _densities(directory)
    return {
        "run_dir": str(directory), "preset": config.preset, "method": config.method,
        "seed": config.seed, "sparsity": config.sparsity,
        "measured_sparsity": measured_sparsity(model) if masks is not None else 0.0,
        "remaining": masks.remaining if masks is not None else result.get("remaining"),
        "total": masks.total if masks is not None else None,
        "final_test_acc": result["final_test_acc"], "best_test_acc": result["best_test_acc"],
        "best_epoch": result["best_epoch"], "epochs": config.train.epochs,
        "input_shape": list(bundle.input_shape),
        "effective_sparsity": _effective_sparsity(densities, model, masks, bundle.input_shape),
        **_cost(densities, model, masks, bundle.input_shape),
        "holdout": config.holdout, "final_val_acc": _val_accuracy(model, bundle, config, device),
        "val_selected_epoch": result.get("val_selected_epoch"),
        "val_selected_test_acc": result.get("val_selected_test_acc"),
        "selected_epoch": result.get("selected_epoch"), "selected_on": result.get("selected_on"),
        "best_checkpoint": rundir.BEST if rundir.best_path(directory).exists() else None,
        "precision": precision_record(config.train, device)["precision"],
        "pack_size": pack_size, **_time_share(time.perf_counter() - start, pack_size),
    }


def _time_share(elapsed: float, pack_size: int) -> dict[str, float]:
    """``seconds``: the run's share of the wall time (a pack's time / M, so the runs' seconds
    add up to the machine's time); ``pack_seconds``: the wall time of the run, or of the
    whole pack it trained in."""
    return {"seconds": elapsed / pack_size, "pack_seconds": elapsed}


def validation_loader(bundle: Any, device: torch.device) -> Any:
    """The held-out validation split's batches (in order, no augmentation), or None when the
    run holds nothing out."""
    return bundle.val_loader(256, device) if bundle.val is not None else None


def _val_accuracy(model: torch.nn.Module, bundle: Any, config: RunConfig,
                  device: torch.device) -> float | None:
    """The trained model's accuracy on the held-out validation split (None without one)."""
    if bundle.val is None:
        return None
    _, correct, count = evaluate(model, bundle.val_loader(256, device), config.train, device)
    return correct / count


def finished_summary(directory: Path) -> dict[str, Any] | None:
    """The recorded summary of a finished run (``already_done`` set), else None. An
    unreadable ``summary.json`` is a :class:`CheckpointError` naming it and the fix."""
    if read_done(rundir.done_path(directory)) is None:
        return None
    summary = rundir.read_summary(directory)
    return None if summary is None else {**summary, "already_done": True}


def open_data(config: RunConfig, data_dir: str | Path | None, download: bool,
              progress: bool) -> Any:
    """The run's dataset (a :class:`ntksap.data.DatasetBundle`), checked against its preset:
    its number of classes and its image shape (:class:`DatasetShapeError` naming both)."""
    preset = get_preset(config.preset)
    like = preset.dataset or config.dataset
    check_code(config)
    try:
        bundle = load_dataset(config.dataset, data_dir, download,
                              limit_per_class=config.limit_per_class or None, progress=progress,
                              like=like, num_classes=config.num_classes,
                              shape=config.input_shape or None)
        expected = IMAGE_SHAPES.get(preset.dataset)
        if config.dataset == "folder" and expected and bundle.in_memory:
            check_image_shape(bundle.train, expected, preset.dataset, bundle.source)
    except DatasetShapeError as err:
        raise DatasetShapeError(f"preset {preset.name!r}: {err}") from err
    if bundle.num_classes != config.num_classes:
        raise ConfigError(f"the {config.dataset} data at {bundle.source} has "
                          f"{bundle.num_classes} classes; " + (
                              f"preset {config.preset!r} needs {config.num_classes}"
                              if preset.name != CUSTOM else
                              f"the run was planned with {config.num_classes}"))
    if not config.normalize_inputs:
        bundle = bundle.unnormalized()
    return bundle.hold_out(config.holdout) if config.holdout else bundle


def loaders(config: RunConfig, bundle: Any, device: torch.device, rank: int = 0,
            world: int = 1) -> tuple[Any, Any]:
    """Training and test batches of ``bundle`` for this process (the global batch size is
    split over ``world`` processes); the training stream is seeded by the run's seed, or by
    :data:`SHARED_STREAM_SEED` with ``shared_stream``."""
    per_rank = max(1, config.train.batch_size // world)
    channels_last = config.train.channels_last
    seed = SHARED_STREAM_SEED if config.shared_stream else config.seed
    return (bundle.train_loader(per_rank, device, seed=seed, rank=rank,
                                world_size=world, channels_last=channels_last),
            bundle.test_loader(256, device, rank=rank, world_size=world,
                               channels_last=channels_last))


def data_record(bundle: Any) -> dict[str, Any]:
    """What the run read from its data: where it came from, its classes and item shape, and
    the per-channel normalization (computed from a user's training set)."""
    return {"source": str(Path(bundle.source).resolve()) if bundle.source.exists()
            else str(bundle.source), "num_classes": bundle.num_classes,
            "input_shape": list(bundle.input_shape), "mean": list(bundle.mean),
            "std": list(bundle.std)}


def _write_config(directory: Path, config: RunConfig, device: torch.device, world: int,
                  logging: LoggingConfig | None = None,
                  data: dict[str, Any] | None = None) -> None:
    path = rundir.config_path(directory)
    record = {"config": dataclasses.asdict(config), "seed": config.seed, **provenance(),
              "device": str(device), "world_size": world,
              **precision_record(config.train, device),
              "logging": dataclasses.asdict(logging or LoggingConfig()), "data": data or {}}
    if path.exists():
        try:
            stored = rundir.read_config(directory)
            recorded = config_from_dict(stored.get("config") or {})
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as err:
            raise CheckpointError(
                f"cannot read the run's config {path} ({err}); move the run directory away "
                f"(e.g. `mv {directory} {directory}.bad`) and run again") from err
        if run_dir(recorded, "") != run_dir(config, ""):
            raise ConfigError(f"{path} records another config; move the directory away")
        return
    rundir.write_config(directory, record)


def _densities(directory: Path) -> Any:
    """The densities report pruning wrote (``densities.json``), or None (a dense run, or an
    unreadable report)."""
    try:
        return json.loads(rundir.densities_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _cost(densities: Any, model: torch.nn.Module, masks: Masks | None,
          input_shape: tuple[int, ...]) -> dict[str, Any]:
    """``params`` and ``flops`` (dense, sparse, effective; :mod:`ntksap.cost`), the effective
    counts from the densities report; {} for a model the count cannot run."""
    masks = masks if masks is not None else Masks.of(model)
    on_path = None
    try:
        on_path = {r["name"]: round(r["effective_density"] * r["total"]) for r in densities}
    except (KeyError, TypeError):
        pass  # no report (dense), or no effective densities: effective counts None
    try:
        counts = cost(model, masks, input_shape, on_path)
    except (RuntimeError, ValueError):
        return {}
    return {"params": counts["params"], "flops": counts["flops"]}


def _effective_sparsity(densities: Any, model: torch.nn.Module, masks: Masks | None,
                        input_shape: tuple[int, ...]) -> float | None:
    """From the densities report pruning wrote (no second trace); traced now for a dense run
    or an unreadable report."""
    if masks is not None and densities is not None:
        try:
            return sparsity_of_report(densities)
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable report: trace the model again
    return effective_sparsity(model, masks or Masks.of(model), input_shape)


def _masks(config: RunConfig, model: torch.nn.Module, bundle: Any, directory: Path,
           device: torch.device, progress: bool, rank: int, distributed: bool
           ) -> Masks | None:
    """The run's masks: read from ``masks.pt``, or computed once (on rank 0) and saved."""
    if config.method == DENSE:
        return None
    masks = None
    if rank == 0:
        if rundir.existing_masks(directory) is not None:
            masks = rundir.load_masks(directory, model)
            if config.transform == "reinit":
                reinitialize(model, config.seed, config.init)
        else:
            method = METHODS[config.method]
            data = bundle.pruning_set(seed=config.seed) if method.needs_data else None
            masks = prune(model, config.method, config.sparsity, rounds=config.rounds,
                          scope=config.scope, transform=config.transform or None,
                          input_shape=bundle.input_shape, data=data, seed=config.seed,
                          init=config.init, device=device, progress=progress,
                          **quiet_options(method, method_options(config), progress))
            masks.meta.update(model=config.model, num_classes=config.num_classes)
            if masks.meta.get("start_weights") == "method":  # saved before the masks: a
                rundir.save_start(directory, model.state_dict())  # run with masks has both
            rundir.save_masks(directory, masks, layer_report(model, masks, bundle.input_shape))
    if distributed:  # computed once, the same mask on every rank
        box = [masks]
        dist.broadcast_object_list(box, src=0)
        masks = box[0]
    return masks
