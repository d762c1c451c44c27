"""One experiment, the unit of every sweep: prune once, restore the initial weights, train,
evaluate, and leave a complete, resumable record in a run directory derived from the config.

Run directory ``OUT/<preset>/<method>-sp<sparsity>-seed<seed>-<digest>``; the digest covers
every field of the resolved :class:`RunConfig`, so a finished run is found and reported, not
redone, and any changed setting gets its own directory. Its files (config, theta_0, masks,
metrics, checkpoint, summary, lock) are those of :mod:`ntksap.rundir`. Nothing is created
before the whole run is checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import rundir
from .atomic import is_disk_full, remove_stale_temporaries
from .data import DATASETS, DatasetShapeError, load_dataset
from .data.bundle import IMAGE_SHAPES, NUM_CLASSES, check_image_shape
from .data.user import dataset_spec, is_user_dataset, load_user_splits
from .effective import effective_sparsity, layer_report, sparsity_of_report
from .engine import TRANSFORMS, check_sparsity, make_method, prune, reinitialize
from .errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    InputShapeError,
    RunLockedError,
    UnknownNameError,
)
from .init import KAIMING, check_init
from .masks import Masks, measured_sparsity
from .methods import METHODS, check_options, method_class, option_defaults, option_fields
from .models import build_model, model_spec
from .names import DENSE
from .selection import SCOPES
from .train import CUSTOM, PRESETS, TrainConfig, get_preset, train
from .train.checkpoint import read_done
from .train.config import LoggingConfig, Preset
from .train.hooks import check_logging, logging_hooks
from .train.loop import evaluate
from .train.precision import check_amp, precision_record

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

# the seed of the training data stream (order and augmentation) of runs with shared_stream:
# every such run sees the same batches, whatever its own seed (which still draws theta_0, the
# pruning batches and the method's randomness)
SHARED_STREAM_SEED = 0
SYNTHETIC_CLASSES = 10  # the synthetic data's classes when --num-classes is not given


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result. Unset fields take the preset's values.

    ``method_options``: the pruning method's options (its dataclass fields, e.g. NTK-SAP's
    ``repeats`` and ``eps``): the preset's defaults for the method (NTK-SAP's R) and the
    options given that differ from the method's own defaults."""

    preset: str
    method: str
    sparsity: float
    seed: int = 0
    dataset: str = ""
    model: str = ""
    num_classes: int = 0
    rounds: int = 0  # T, the engine's rounds: the preset's for its method, else the method's
    scope: str = "global"
    transform: str = ""
    limit_per_class: int = 0  # 0 = the whole dataset
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    holdout: float = 0.0  # fraction of the training set held out for validation; 0 = none
    shared_stream: bool = False  # train on the shared data stream (SHARED_STREAM_SEED)
    init: str = KAIMING  # how theta_0 is drawn (ntksap.init.INITS)
    input_shape: tuple[int, ...] = ()  # the synthetic data's item shape; () = the preset's
    # sha256 of the user's code that builds the model / data set ({"model": ..., "dataset":
    # ...}): set by resolve, never given; a changed file is another run
    code_sha256: dict[str, str] = dataclasses.field(default_factory=dict)


def resolve(preset: str | None, method: str, sparsity: float, *, seed: int = 0,
            dataset: str | None = None, model: str | None = None,
            num_classes: int | None = None, rounds: int | None = None,
            repeats: int | None = None, scope: str = "global", transform: str | None = None,
            limit_per_class: int | None = None, train_overrides: dict[str, Any] | None = None,
            eps: float | None = None, holdout: float | None = None,
            method_options: Mapping[str, Any] | None = None,
            shared_stream: bool = False, init: str | None = None,
            input_shape: tuple[int, ...] | None = None) -> RunConfig:
    """A complete :class:`RunConfig` from a preset and the flags that override it.

    ``preset`` None (or "") is the ``custom`` setting: the user's ``model`` and ``dataset``
    (both required; any registered name, ``timm:NAME``, ``MODULE:FACTORY`` or
    ``path/to/file.py:FACTORY``) with a generic recipe (see :data:`ntksap.train.PRESETS`).
    Its number of classes is ``num_classes``, else the built-in data set's, else 10 for
    ``synthetic``, else read from the user's data (its factory is called once per process).
    ``input_shape`` is the shape of one synthetic item (default: the preset's data's; 3 x 32
    x 32 in the custom setting); other data sets have their own.

    ``method_options`` are the method's options (names and types checked against its
    dataclass, values by the method); ``repeats`` and ``eps`` are shorthands for NTK-SAP's
    (``repeats`` is ignored by a method without that option, so that one sweep axis or
    fixed value can serve every method).
    ``holdout`` (default: the preset's) is the fraction of the training set held out as a
    validation split, in [0, 1). ``shared_stream`` trains on the data stream of
    :data:`SHARED_STREAM_SEED` (the same batches for every run) instead of the run's own; the
    runs of a pack that all have it share one stream, which is cheaper. ``init`` names how
    theta_0 (the weights that are scored and trained) is drawn (:data:`ntksap.init.INITS`;
    default ``kaiming``, every preset's; the ``reinit`` sanity check re-draws with it);
    NTK-SAP's fresh draws inside its scoring stay Kaiming-normal, as in its paper.

    ``None`` (or ``""`` for a name) means "not given": the preset's or the method's value.
    A given count (num_classes, rounds, repeats, limit_per_class) must be a whole number >= 1:
    zero is an error, never a stand-in for the default."""
    preset = preset or CUSTOM
    p = get_preset(preset)
    if not (_is_number(seed) and seed >= 0 and int(seed) == seed):
        raise ConfigError(f"seed (--seed) must be a whole number >= 0; got {seed!r}")
    seed = int(seed)
    for name, value in (("num_classes", num_classes), ("rounds", rounds),
                        ("repeats", repeats), ("limit_per_class", limit_per_class)):
        _check_count(name, value)
    if not isinstance(shared_stream, bool):
        raise ConfigError(f"shared_stream (--shared-stream) is true or false; got "
                          f"{shared_stream!r}")
    init = init or KAIMING
    check_init(init)
    if holdout is not None and not (_is_number(holdout) and 0 <= holdout < 1):
        raise ConfigError(f"holdout (--holdout) is the fraction of the training set held out "
                          f"for validation, in [0, 1); got {holdout!r}")
    if method == DENSE or "repeats" not in option_fields(method_class(method)):
        repeats = None  # R of a method without repeats: ignored, as it always was
    given = _with_shorthands(method_options, repeats=repeats, eps=eps)
    if method != DENSE:
        check_sparsity(sparsity)
    else:
        sparsity = 0.0
        if given:
            raise ConfigError(f"--method dense prunes nothing and takes no method options; "
                              f"drop {', '.join(sorted(given))}")
    input_shape = _check_input_shape(input_shape, dataset or p.dataset)
    if p.name == CUSTOM:
        dataset, model, classes = _custom_setting(dataset, model, num_classes, limit_per_class)
    else:
        if num_classes is not None and num_classes != p.num_classes:
            raise ConfigError(f"--num-classes {num_classes} contradicts preset {preset!r} "
                              f"({p.dataset}, {p.num_classes} classes); drop the flag or pick "
                              "a preset for that dataset")
        _check_dataset(p, dataset)
        classes = p.num_classes
    code = _code_sha256(model or p.model, dataset or p.dataset)
    if scope not in SCOPES:
        raise UnknownNameError("scope", scope, SCOPES)
    if transform and transform not in TRANSFORMS:
        raise UnknownNameError("transform", transform, TRANSFORMS)
    preset_rounds, options = (None, {}) if method == DENSE else _method_defaults(p, method,
                                                                                  given)
    config = RunConfig(
        preset=preset, method=method, sparsity=float(sparsity), seed=seed,
        dataset=dataset or p.dataset, model=model or p.model, num_classes=classes,
        rounds=rounds or preset_rounds or 0, scope=scope, transform=transform or "",
        limit_per_class=limit_per_class or 0,
        train=dataclasses.replace(p.train, **(train_overrides or {})), method_options=options,
        holdout=float(p.holdout if holdout is None else holdout), shared_stream=shared_stream,
        init=init, input_shape=input_shape, code_sha256=code)
    check_method_options(config)
    return config


def _check_input_shape(shape: Any, dataset: str) -> tuple[int, ...]:
    """A given ``input_shape``: whole numbers >= 1, for the synthetic data only."""
    if not shape:
        return ()
    if dataset != "synthetic":
        raise ConfigError(f"--input-shape sets the synthetic data's item shape; the {dataset} "
                          "data have their own: drop --input-shape, or use --dataset synthetic")
    if not (isinstance(shape, list | tuple) and all(_is_number(d) and d >= 1 and int(d) == d
                                                    for d in shape)):
        raise ConfigError(f"--input-shape takes whole numbers >= 1 (e.g. 3 32 32); got {shape!r}")
    return tuple(int(d) for d in shape)


def _custom_setting(dataset: str | None, model: str | None, num_classes: int | None,
                    limit_per_class: int | None) -> tuple[str, str, int]:
    """(dataset, model, number of classes) of a run in the custom setting."""
    if not dataset or not model:
        missing = " and ".join(f"--{n}" for n, v in (("model", model), ("dataset", dataset))
                               if not v)
        raise ConfigError(f"no --preset: the custom setting trains your own model on your own "
                          f"data and needs {missing}; or name a preset "
                          f"({', '.join(n for n in PRESETS if n != CUSTOM)})")
    if dataset in NUM_CLASSES:
        read = NUM_CLASSES[dataset]
    elif dataset == "synthetic":
        read = num_classes or SYNTHETIC_CLASSES
    elif dataset == "folder":
        if num_classes is None:
            raise ConfigError("--dataset folder in the custom setting needs --num-classes "
                              "(the number of class folders)")
        read = num_classes
    elif is_user_dataset(dataset):
        read = len(load_user_splits(dataset, limit_per_class).classes)
    else:
        raise UnknownNameError("dataset", dataset, [*DATASETS, "MODULE:FACTORY",
                                                    "path/to/file.py:FACTORY"])
    if num_classes is not None and num_classes != read:
        raise ConfigError(f"--num-classes {num_classes} contradicts the {dataset} data "
                          f"({read} classes); drop the flag")
    return dataset, model, read


def _code_sha256(model: str, dataset: str) -> dict[str, str]:
    """The digests of the user's code that builds ``model`` and ``dataset`` (checks that the
    model is known: an unknown name is an error listing the known ones)."""
    code = {"model": model_spec(model).digest}
    if dataset not in DATASETS:
        code["dataset"] = dataset_spec(dataset).digest
    return {k: v for k, v in code.items() if v}


def _with_shorthands(method_options: Mapping[str, Any] | None, **shorthands: Any
                     ) -> dict[str, Any]:
    """The options given: ``method_options`` and the shorthand flags that are set (the same
    option given twice with two values is an error)."""
    options = dict(method_options or {})
    for name, value in shorthands.items():
        if value is None:
            continue
        if name in options and options[name] != value:
            raise ConfigError(f"option {name} given twice ({value!r} and {options[name]!r}); "
                              "give it once")
        options[name] = value
    return options


def _method_defaults(p: Preset, method: str, given: Mapping[str, Any]
                     ) -> tuple[int, dict[str, Any]]:
    """(T, the run's method options): the preset's defaults for the method, overridden by
    the options given; a given option equal to the method's own default is left out (the
    same run as not giving it)."""
    cls = method_class(method)
    preset_rounds, preset_options = p.defaults_for(method)
    checked = check_options(method, given)
    own = option_defaults(cls)
    options = {k: v for k, v in checked.items()
               if k in preset_options or k not in own or not _same_value(v, own[k])}
    for name, value in options.items():
        if not isinstance(value, str | int | float | bool | type(None)):
            raise ConfigError(f"method {method!r}: option {name} of a run must be a number, a "
                              f"string, true/false or none (it is recorded in "
                              f"{rundir.CONFIG}); got {type(value).__name__}")
    return preset_rounds or cls.default_rounds, {**preset_options, **options}


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (_is_number(a) and _is_number(b) and a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_count(name: str, value: Any) -> None:
    """``value`` is None (not given) or a whole number >= 1."""
    if value is None or (_is_number(value) and value >= 1 and int(value) == value):
        return
    raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be a whole number >= 1; got "
                      f"{value!r}; leave it out for the preset's or the method's default")


def _check_dataset(p: Preset, dataset: str | None) -> None:
    """The preset's dataset, "folder" (another copy of it) or "synthetic" (smoke tests)."""
    if not dataset or dataset in (p.dataset, "folder", "synthetic"):
        return
    choices = (f"preset {p.name!r} takes {p.dataset} (its own), folder (another copy of its "
               "classes) or synthetic (generated, for smoke tests)")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; {choices}")
    presets = [q.name for q in PRESETS.values() if q.dataset == dataset]
    fix = (f"use the preset for {dataset} ({', '.join(presets)})" if presets
           else f"no preset trains on {dataset}")
    raise ConfigError(f"--dataset {dataset} contradicts preset {p.name!r}, which trains on "
                      f"{p.dataset}: {fix}; {choices}")


def _quiet(method: type, options: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The options, with a method's own progress bar (NTT's ``progress_bar``) off when the run
    shows no progress (``--no-progress``), unless the run sets it. Display only: the run's
    identity and results do not change."""
    if not progress and "progress_bar" in option_fields(method) and "progress_bar" not in options:
        return {**options, "progress_bar": False}
    return options


def method_options(config: RunConfig) -> dict[str, Any]:
    """The options the run gives its pruning method."""
    return dict(config.method_options)


def check_method_options(config: RunConfig) -> None:
    """Build the run's pruning method, which checks its options (MethodOptionError)."""
    if config.method in METHODS:
        make_method(config.method, method_options(config))


# Options that were fields of RunConfig before method_options existed: identity() keeps them
# at the top level, so that the run directories made then keep their names.
LEGACY_OPTIONS = ("repeats", "eps")


# The fields of the first run directories: always in the digest. Every field added since is
# left out at its default, so that a run directory made before a field existed keeps its name
# (a new field needs no change here).
FIRST_FIELDS = ("preset", "method", "sparsity", "seed", "dataset", "model", "num_classes",
                "rounds", "scope", "transform", "limit_per_class", "train")


def identity(config: RunConfig) -> dict[str, Any]:
    """The fields that name a run, in the layout of the first run directories: the
    :data:`FIRST_FIELDS`, NTK-SAP's ``repeats`` (0 when the method has none) and a set
    ``eps`` at the top level as they were before ``method_options`` existed, the other
    options under ``method_options``, and every later field unless at its default."""
    fields = dataclasses.asdict(config)
    options = fields.pop("method_options")
    repeats = options.get("repeats")
    fields["repeats"] = options.pop("repeats") if _is_number(repeats) and repeats else 0
    if _is_number(options.get("eps")) and options["eps"]:
        fields["eps"] = options.pop("eps")
    if options:
        fields["method_options"] = options
    for later in dataclasses.fields(RunConfig):
        if later.name in FIRST_FIELDS or later.name == "method_options":
            continue
        if fields[later.name] == _default(later):
            fields.pop(later.name)
    return fields


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` recorded as data: ``dataclasses.asdict`` (config.json) or
    :func:`identity` (the results store), of this version or an older one (NTK-SAP's
    ``repeats`` and ``eps`` as fields). Fields unknown to this version are an error, not
    silently dropped."""
    data = normalize_record(data)
    train = TrainConfig(**data.pop("train", {}))
    if "input_shape" in data:  # JSON has lists
        data["input_shape"] = tuple(data["input_shape"])
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"run config has fields this ntksap does not know: "
                          f"{', '.join(unknown)}; upgrade ntksap or remove the run from the store")
    return RunConfig(**data, train=train)


def normalize_record(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded run config (any version) in this version's layout: the options that were
    fields (``repeats``, ``eps``; 0 meant "none" or "the default") moved into
    ``method_options``."""
    data = dict(data)
    options = dict(data.get("method_options") or {})
    for name in LEGACY_OPTIONS:
        value = data.pop(name, None)
        if value:
            options.setdefault(name, value)
    data["method_options"] = options
    return data


def run_dir(config: RunConfig, out_dir: str | Path) -> Path:
    """The run's directory: ``OUT/<preset>/<method>-sp<sparsity>-seed<seed>-<digest>``, the
    digest of :func:`identity`."""
    return rundir.run_path(out_dir, config.preset, config.method, config.sparsity, config.seed,
                           identity(config))


def _git(*args: str) -> str | None:
    """A git command's output in this package's folder, or None (no git, not a checkout)."""
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state() -> dict[str, Any]:
    """The git commit of the code and whether tracked files differed from it
    (``git_dirty``; None outside a git checkout). Read once, when this module is imported
    (:data:`CODE`): a long process (a sweep) records the code it runs, not a commit made
    after it started."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit or None,
            "git_dirty": None if status is None else bool(status)}


CODE = code_state()


def provenance() -> dict[str, Any]:
    """Package versions, and the git commit of the code this process runs and whether its
    tracked files were changed from it (:data:`CODE`)."""
    versions = {"python": platform.python_version()}
    for package in ("ntksap", "torch", "torchvision", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, **CODE}


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
    with logging_hooks(logging if rank == 0 else LoggingConfig(), directory,
                       {**dataclasses.asdict(config), "run_dir": str(directory)}) as hooks:
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
    return {
        "run_dir": str(directory), "preset": config.preset, "method": config.method,
        "seed": config.seed, "sparsity": config.sparsity,
        "measured_sparsity": measured_sparsity(model) if masks is not None else 0.0,
        "remaining": masks.remaining if masks is not None else result.get("remaining"),
        "total": masks.total if masks is not None else None,
        "final_test_acc": result["final_test_acc"], "best_test_acc": result["best_test_acc"],
        "best_epoch": result["best_epoch"], "epochs": config.train.epochs,
        "input_shape": list(bundle.input_shape),
        "effective_sparsity": _effective_sparsity(directory, model, masks, bundle.input_shape),
        "holdout": config.holdout, "final_val_acc": _val_accuracy(model, bundle, config, device),
        "val_selected_epoch": result.get("val_selected_epoch"),
        "val_selected_test_acc": result.get("val_selected_test_acc"),
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


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has: "auto" is CUDA when there is a GPU, else the
    CPU. A CUDA (or MPS) device that is absent is a :class:`ConfigError` naming the fix."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:1, ... or auto") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that PyTorch "
                              "can use (torch.cuda.is_available() is False); use --device cpu "
                              "(or auto)")
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}; pick one of them")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here; use --device cpu")
    return device


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Create ``directory`` and hold an exclusive lock on ``directory/.lock`` (``flock``)
    while the block runs.

    A second process asking for the same run does not wait: it gets a :class:`RunLockedError`
    at once, naming the holder's pid and host (waiting would only end in reading the finished
    run, which rerunning afterwards does too). The kernel drops the lock when its holder
    exits, even when killed, so an interrupted run resumes. A filesystem without ``flock``
    (some network mounts; Windows has no ``fcntl``) leaves the run unlocked, with a warning."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise
        raise ConfigError(f"cannot create the run directory {directory} ({err.strerror}); "
                          "choose an --out-dir where you may write") from err
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = rundir.lock_path(directory)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"the run {directory} is in use by {holder}: the same run is already going "
                "on; wait for it to end, then run the command again to read its result (or "
                f"resume it). If that process is gone (its machine died), delete {path}"
            ) from None
        except OSError as err:  # no flock on this filesystem
            warnings.warn(f"cannot lock {path} ({err}); running without the lock that keeps "
                          "two processes from working in the same run", stacklevel=3)
            unlocked = True
        else:
            unlocked = False
        if unlocked:
            yield
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)  # no stale holder left to read
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    return bundle.hold_out(config.holdout) if config.holdout else bundle


def check_code(config: RunConfig) -> None:
    """The user's model and data set code is what the run was planned with
    (:data:`RunConfig.code_sha256`): a changed file is another run, refused here."""
    from .userref import check_digest

    now = _code_sha256(config.model, config.dataset)
    for role, name in (("model", config.model), ("dataset", config.dataset)):
        check_digest(name, config.code_sha256.get(role, ""), now.get(role, ""),
                     "model" if role == "model" else "data set")


def check_model(model: torch.nn.Module, input_shape: tuple[int, ...],
                config: RunConfig) -> None:
    """One eval-mode forward pass of two zero inputs shaped like the data: the model must
    take them and return ``(2, num_classes)`` logits (:class:`InputShapeError` otherwise).
    Nothing of the model changes (no grad, eval-mode BatchNorm)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape)))
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as err:
        own = get_preset(config.preset).model
        reason = (str(err) or type(err).__name__).splitlines()[0]
        raise InputShapeError(
            f"model {config.model!r} cannot take the {config.dataset} images "
            f"({' x '.join(map(str, input_shape))}): {reason}; choose a model for these images"
            + (f" (the preset's is {own}), or drop --model"
               if own and config.model != own else "")
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, config.num_classes):
        raise InputShapeError(
            f"model {config.model!r} returns {getattr(out, 'shape', type(out).__name__)} for "
            f"2 inputs, not logits of shape (2, {config.num_classes}); choose a model that "
            "returns one logit per class")


def check_batches(train_loader: Any, config: RunConfig) -> None:
    """The training set must give at least one full batch (the last, partial one is
    dropped)."""
    if len(train_loader) == 0:
        raise ConfigError(
            f"the training set gives no full batch of {config.train.batch_size} on this "
            "process (the last, partial batch is dropped); lower --batch-size or use more "
            "examples (--limit-per-class)")


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


def _effective_sparsity(directory: Path, model: torch.nn.Module, masks: Masks | None,
                        input_shape: tuple[int, ...]) -> float | None:
    """From the densities report pruning wrote (no second trace); traced now for a dense run."""
    path = rundir.densities_path(directory)
    if masks is not None and path.is_file():
        try:
            return sparsity_of_report(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
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
                          **_quiet(method, method_options(config), progress))
            masks.meta.update(model=config.model, num_classes=config.num_classes)
            if masks.meta.get("start_weights") == "method":  # saved before the masks: a
                rundir.save_start(directory, model.state_dict())  # run with masks has both
            rundir.save_masks(directory, masks, layer_report(model, masks, bundle.input_shape))
    if distributed:  # computed once, the same mask on every rank
        box = [masks]
        dist.broadcast_object_list(box, src=0)
        masks = box[0]
    return masks
