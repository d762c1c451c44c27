"""One experiment, the unit of every sweep: prune once, restore the initial weights, train,
evaluate, and leave a complete, resumable record in a run directory derived from the config.

Run directory ``OUT/<preset>/<method>-sp<sparsity>-seed<seed>-<digest>``; the digest covers
every field of the resolved :class:`RunConfig`, so a finished run is found and reported, not
redone, and any changed setting gets its own directory. It holds ``config.json`` (config, seed,
package versions, git commit), ``init.pt`` (theta_0), ``masks.pt``, ``densities.json``,
``metrics.jsonl``, ``checkpoint.pt``, ``done.json`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .atomic import atomic_torch_save, write_text_atomic
from .engine import check_sparsity, prune, reinitialize
from .errors import ConfigError
from .masks import Masks, measured_sparsity
from .methods import METHODS, method_class
from .models import build_model, model_spec
from .train import TrainConfig, get_preset, train
from .train.checkpoint import read_done

DENSE = "dense"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result. Unset fields take the preset's values."""

    preset: str
    method: str
    sparsity: float
    seed: int = 0
    dataset: str = ""
    model: str = ""
    num_classes: int = 0
    rounds: int = 0  # T; 0 = the preset's for NTK-SAP, the method's own otherwise
    repeats: int = 0  # NTK-SAP's R; 0 = the preset's
    scope: str = "global"
    transform: str = ""
    limit_per_class: int = 0  # 0 = the whole dataset
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eps: float = 0.0  # NTK-SAP's perturbation std; 0 = the method's default (0.01)


def resolve(preset: str, method: str, sparsity: float, *, seed: int = 0, dataset: str = "",
            model: str = "", num_classes: int = 0, rounds: int = 0, repeats: int = 0,
            scope: str = "global", transform: str = "", limit_per_class: int = 0,
            train_overrides: dict[str, Any] | None = None, eps: float = 0.0) -> RunConfig:
    """A complete :class:`RunConfig` from a preset and the flags that override it."""
    p = get_preset(preset)
    if eps and method != "ntksap":
        raise ConfigError(f"eps is NTK-SAP's perturbation size; method {method!r} has no eps: "
                          "drop it or use method ntksap")
    if eps < 0:
        raise ConfigError(f"eps must be positive, or 0 for NTK-SAP's default 0.01; got {eps}")
    if method != DENSE:
        method_class(method)
        check_sparsity(sparsity)
    else:
        sparsity = 0.0
    if num_classes and num_classes != p.num_classes:
        raise ConfigError(f"--num-classes {num_classes} contradicts preset {preset!r} "
                          f"({p.dataset}, {p.num_classes} classes); drop the flag or pick a "
                          "preset for that dataset")
    if dataset and dataset not in (p.dataset, "folder", "synthetic"):
        raise ConfigError(f"--dataset {dataset} contradicts preset {preset!r}, which trains on "
                          f"{p.dataset}; pick the preset for {dataset}, or use 'folder' for "
                          "another copy of the same classes")
    if model:
        model_spec(model)
    is_ntksap = method == "ntksap"
    if is_ntksap and eps == METHODS["ntksap"].eps:
        eps = 0.0  # the default, spelled out: the same run
    return RunConfig(
        preset=preset, method=method, sparsity=float(sparsity), seed=seed,
        dataset=dataset or p.dataset, model=model or p.model, num_classes=p.num_classes,
        rounds=rounds or (p.prune_rounds if is_ntksap else
                          (METHODS[method].default_rounds if method != DENSE else 0)),
        repeats=(repeats or p.prune_repeats) if is_ntksap else 0, scope=scope,
        transform=transform, limit_per_class=limit_per_class,
        train=dataclasses.replace(p.train, **(train_overrides or {})), eps=float(eps))


def identity(config: RunConfig) -> dict[str, Any]:
    """The fields that name a run: all of them, less fields added later at their default
    (``eps`` = 0), so that run directories made before such a field existed keep their name."""
    fields = dataclasses.asdict(config)
    if not fields.get("eps"):
        fields.pop("eps", None)
    return fields


def run_dir(config: RunConfig, out_dir: str | Path) -> Path:
    digest = hashlib.sha256(json.dumps(identity(config), sort_keys=True)
                            .encode()).hexdigest()[:10]
    return (Path(out_dir) / config.preset
            / f"{config.method}-sp{config.sparsity:g}-seed{config.seed}-{digest}")


def provenance() -> dict[str, Any]:
    """Package versions and the git commit of the code that runs."""
    versions = {"python": platform.python_version()}
    for package in ("ntksap", "torch", "torchvision", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"versions": versions, "git_commit": commit or None}


def run_experiment(config: RunConfig, *, out_dir: str | Path = "runs",
                   data_dir: str | Path | None = None, download: bool = False,
                   device: str | torch.device = "cpu", progress: bool = True,
                   distributed: bool = False) -> dict[str, Any]:
    """Prune, train and evaluate as ``config`` says; resume or report if already started."""
    start = time.perf_counter()
    device = torch.device(device)
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    directory = run_dir(config, out_dir)
    summary_path = directory / "summary.json"
    if read_done(directory / "done.json") is not None and summary_path.exists():
        return {**json.loads(summary_path.read_text()), "already_done": True}
    if rank == 0:
        _write_config(directory, config, device, world)

    bundle = open_data(config, data_dir, download, progress)
    model = build_model(config.model, config.num_classes, seed=config.seed)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    if rank == 0 and not (directory / "init.pt").exists():
        atomic_torch_save(initial, directory / "init.pt")
    masks = _masks(config, model, bundle, directory, device, progress, rank, distributed)
    if config.transform != "reinit":
        model.load_state_dict(initial)  # train from theta_0, whatever the scoring did
    train_loader, test_loader = loaders(config, bundle, device, rank, world)
    result = train(model, train_loader, test_loader, config.train, directory, device=device,
                   masks=masks, progress=progress, distributed=distributed)
    summary = {
        "run_dir": str(directory), "preset": config.preset, "method": config.method,
        "seed": config.seed, "sparsity": config.sparsity,
        "measured_sparsity": measured_sparsity(model) if masks is not None else 0.0,
        "remaining": masks.remaining if masks is not None else result.get("remaining"),
        "total": masks.total if masks is not None else None,
        "final_test_acc": result["final_test_acc"], "best_test_acc": result["best_test_acc"],
        "best_epoch": result["best_epoch"], "epochs": config.train.epochs,
        "seconds": time.perf_counter() - start,
    }
    if rank == 0:
        write_text_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    return summary


def open_data(config: RunConfig, data_dir: str | Path | None, download: bool,
              progress: bool) -> Any:
    """The run's dataset (a :class:`ntksap.data.DatasetBundle`), checked against its preset."""
    from .data import load_dataset  # the data stack is only needed here

    bundle = load_dataset(config.dataset, data_dir, download,
                          limit_per_class=config.limit_per_class or None, progress=progress)
    if bundle.num_classes != config.num_classes:
        raise ConfigError(f"the {config.dataset} data at {bundle.source} has "
                          f"{bundle.num_classes} classes; preset {config.preset!r} needs "
                          f"{config.num_classes}")
    return bundle


def loaders(config: RunConfig, bundle: Any, device: torch.device, rank: int = 0,
            world: int = 1) -> tuple[Any, Any]:
    """Training and test batches of ``bundle`` for this process (the global batch size is
    split over ``world`` processes)."""
    per_rank = max(1, config.train.batch_size // world)
    channels_last = config.train.channels_last
    return (bundle.train_loader(per_rank, device, seed=config.seed, rank=rank,
                                world_size=world, channels_last=channels_last),
            bundle.test_loader(256, device, rank=rank, world_size=world,
                               channels_last=channels_last))


def _write_config(directory: Path, config: RunConfig, device: torch.device, world: int) -> None:
    path = directory / "config.json"
    record = {"config": dataclasses.asdict(config), "seed": config.seed, **provenance(),
              "device": str(device), "world_size": world}
    if path.exists():
        stored = json.loads(path.read_text())
        if ({k: v for k, v in (stored.get("config") or {}).items() if k != "eps" or v}
                != json.loads(json.dumps(identity(config)))):
            raise ConfigError(f"{path} records another config; move the directory away")
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")


def _masks(config: RunConfig, model: torch.nn.Module, bundle: Any, directory: Path,
           device: torch.device, progress: bool, rank: int, distributed: bool
           ) -> Masks | None:
    """The run's masks: read from ``masks.pt``, or computed once (on rank 0) and saved."""
    if config.method == DENSE:
        return None
    path = directory / "masks.pt"
    masks = None
    if rank == 0:
        if path.exists():
            masks = Masks.load(path, model)
            if config.transform == "reinit":
                reinitialize(model, config.seed)
        else:
            method = METHODS[config.method]
            data = bundle.pruning_set(seed=config.seed) if method.needs_data else None
            options = {"repeats": config.repeats} if config.method == "ntksap" else {}
            if config.eps:
                options["eps"] = config.eps
            masks = prune(model, config.method, config.sparsity, rounds=config.rounds,
                          scope=config.scope, transform=config.transform or None,
                          input_shape=bundle.input_shape, data=data, seed=config.seed,
                          device=device, progress=progress, **options)
            masks.meta.update(model=config.model, num_classes=config.num_classes)
            masks.save(path)
            write_text_atomic(directory / "densities.json",
                              json.dumps(masks.layers(), indent=2) + "\n")
    if distributed:  # computed once, the same mask on every rank
        box = [masks]
        dist.broadcast_object_list(box, src=0)
        masks = box[0]
    return masks
