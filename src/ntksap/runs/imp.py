"""Lottery-ticket iterative magnitude pruning (IMP) with rewinding, the reference method that
needs training (Frankle & Carbin 2019; rewinding: Frankle et al. 2020).

Round 0 trains the dense network. Round t = 1..T removes the smallest-magnitude trained
weights globally (``prune(model, "magnitude", ...)`` on the trained, masked model, which
continues from its masks) down to density d^(t/T), rewinds the surviving weights to theta_0
(``rewind_epoch = 0``) or to the dense weights after ``rewind_epoch`` epochs, and trains
again with the full recipe. Every round is a resumable training run of its own
(``round<t>/``), so a killed IMP run resumes where it stopped. The default T removes 36 % of
the remaining weights per round, the paper's grid step (c -> c + 2), so that round t of a run
aimed at c = 2T lands on the grid point c = 2t: one IMP run gives the whole curve.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..atomic import atomic_torch_save
from ..engine import prune
from ..errors import ConfigError
from ..masks import measured_sparsity
from ..models import build_model
from ..train import train
from ..train.checkpoint import read_done, write_done
from .config import RunConfig, config_from_dict, identity, resolve
from .driver import loaders, open_data
from .source import provenance

STEP_DENSITY = 0.64  # 0.8^2: one step of the paper's grid per round


@dataclasses.dataclass(frozen=True)
class ImpConfig:
    """An IMP run: ``run`` holds the setting (method "imp", final ``sparsity``, ``rounds`` =
    pruning rounds T); ``rewind_epoch`` 0 rewinds to theta_0, k > 0 to the dense weights
    after k epochs."""

    run: RunConfig
    rewind_epoch: int = 0

    @property
    def kind(self) -> str:
        """``imp``, the kind of its run's method."""
        return self.run.kind


def imp_config(preset: str, sparsity: float, *, rounds: int = 0, rewind_epoch: int = 0,
               **kwargs: Any) -> ImpConfig:
    """An :class:`ImpConfig` from a preset, like :func:`ntksap.runs.resolve`."""
    if kwargs.get("transform") or kwargs.get("eps") or kwargs.get("method_options"):
        raise ConfigError("IMP takes no sanity-check transform and no method options (eps, "
                          "...); drop them for method imp")
    kwargs.pop("repeats", None)
    base = resolve(preset, "magnitude", sparsity, **kwargs)
    if not 0 < base.sparsity < 1:
        raise ConfigError(f"IMP needs a sparsity in (0, 1); got {sparsity}")
    if rounds <= 0:
        rounds = max(1, round(math.log(1 - base.sparsity) / math.log(STEP_DENSITY)))
    if not 0 <= rewind_epoch < base.train.epochs:
        raise ConfigError(f"rewind_epoch must be in [0, epochs) = [0, {base.train.epochs}); "
                          f"got {rewind_epoch}")
    return ImpConfig(dataclasses.replace(base, method="imp", rounds=int(rounds)),
                     int(rewind_epoch))


def imp_dir(config: ImpConfig, out_dir: str | Path) -> Path:
    """``OUT/<preset>/imp-sp<sparsity>-seed<seed>-<digest of the whole config>``; the run's
    fields as :func:`~ntksap.runs.identity` gives them (``holdout``, added later, left
    out at its default), with ``eps`` = 0 as the first IMP runs recorded it, so that IMP
    directories made before keep their name."""
    fields = dataclasses.asdict(config)
    fields["run"] = {**identity(config.run), "eps": 0.0}  # the layout of the first IMP runs
    run = config.run
    return rundir.run_path(out_dir, run.preset, "imp", run.sparsity, run.seed, fields)


def round_sparsities(config: ImpConfig) -> list[float]:
    """Sparsity after each round t = 1..T: 1 - d^(t/T); the last is exactly the target."""
    run = config.run
    out = [1 - (1 - run.sparsity) ** (t / run.rounds) for t in range(1, run.rounds + 1)]
    out[-1] = run.sparsity
    return out


def run_imp(config: ImpConfig, *, out_dir: str | Path = "runs",
            data_dir: str | Path | None = None, download: bool = False,
            device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or report) the IMP run ``config``; returns its summary, whose
    ``rounds`` list holds every round's sparsity and accuracies."""
    start = time.perf_counter()
    run, device = config.run, torch.device(device)
    directory = imp_dir(config, out_dir)
    if read_done(rundir.done_path(directory)) is not None:
        finished = rundir.read_summary(directory)
        if finished is not None:
            return {**finished, "already_done": True}
    _write_config(directory, config, device)

    bundle = open_data(run, data_dir, download, progress)
    batches = loaders(run, bundle, device)
    model = build_model(run.model, run.num_classes, seed=run.seed, init=run.init)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    rundir.save_init(directory, theta0)

    result = _dense_round(config, model, batches, directory, device, progress)
    rewind = theta0 if config.rewind_epoch == 0 else rundir.load_rewind(directory)
    rounds = [{"round": 0, "sparsity": 0.0, **_brief(result)}]
    masks = None
    for t, sparsity in enumerate(round_sparsities(config), 1):
        folder = rundir.round_dir(directory, t)
        if rundir.existing_masks(folder) is not None:
            masks = rundir.load_masks(folder)
        else:  # the smallest trained magnitudes go, globally, from the current masks on
            masks = prune(model, "magnitude", sparsity, rounds=1, scope=run.scope,
                          input_shape=bundle.input_shape, seed=run.seed, device=device)
            masks.meta.update(model=run.model, num_classes=run.num_classes, imp_round=t)
            rundir.save_masks(folder, masks, masks.layers())
        model = build_model(run.model, run.num_classes, seed=run.seed, init=run.init)
        model.load_state_dict(rewind)
        result = train(model, *batches, run.train, folder, device=device, masks=masks,
                       progress=progress)
        rounds.append({"round": t, "sparsity": sparsity, "remaining": masks.remaining,
                       "total": masks.total, "run_dir": str(folder), **_brief(result)})

    assert masks is not None
    rundir.save_masks(directory, masks, masks.layers())
    last = rounds[-1]
    summary = {
        "run_dir": str(directory), "preset": run.preset, "method": "imp", "seed": run.seed,
        "sparsity": run.sparsity, "measured_sparsity": measured_sparsity(model),
        "remaining": masks.remaining, "total": masks.total,
        "final_test_acc": last["final_test_acc"], "best_test_acc": last["best_test_acc"],
        "best_epoch": last["best_epoch"], "epochs": run.train.epochs,
        "rewind_epoch": config.rewind_epoch, "rounds": rounds,
        "seconds": time.perf_counter() - start,
    }
    rundir.write_summary(directory, summary)
    write_done(rundir.done_path(directory), json.loads(json.dumps(dataclasses.asdict(config))),
               summary)
    return summary


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("final_test_acc", "best_test_acc", "best_epoch")}


def _dense_round(config: ImpConfig, model: torch.nn.Module, loaders: tuple[Any, Any],
                 directory: Path, device: torch.device, progress: bool) -> dict[str, Any]:
    """Train the dense network (round 0), saving its weights after ``rewind_epoch`` epochs
    to ``rewind.pt``. If a kill fell between the epoch's checkpoint and that file, round 0
    is trained again from the start (the weights at that epoch are gone otherwise)."""
    folder, rewind_path = rundir.round_dir(directory, 0), rundir.rewind_path(directory)
    k = config.rewind_epoch

    def snapshot(record: dict[str, Any]) -> None:
        if k and record["epoch"] == k:
            atomic_torch_save({n: v.detach().cpu().clone()
                               for n, v in model.state_dict().items()}, rewind_path)

    for _ in range(2):
        result = train(model, *loaders, config.run.train, folder, device=device,
                       progress=progress, on_epoch_end=snapshot)
        if k == 0 or rewind_path.exists():
            return result
        shutil.rmtree(folder)
    raise RuntimeError(f"IMP could not record the rewind weights at epoch {k} in {folder}")


def _write_config(directory: Path, config: ImpConfig, device: torch.device) -> None:
    path = rundir.config_path(directory)
    record = {"kind": "imp", "config": dataclasses.asdict(config), "seed": config.run.seed,
              **provenance(), "device": str(device)}
    if path.exists():
        stored = dict(rundir.read_config(directory).get("config") or {})
        recorded = ImpConfig(config_from_dict(stored.pop("run", {})), **stored)
        if imp_dir(recorded, "") != imp_dir(config, ""):
            raise ConfigError(f"{path} records another config; move the directory away")
        return
    rundir.write_config(directory, record)


__all__ = ["ImpConfig", "imp_config", "imp_dir", "round_sparsities", "run_imp"]
