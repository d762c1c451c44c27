"""Kinds of run as runners: one small interface, one registry.

A runner knows one kind of run end to end: how a config of that kind is made (``config``),
where it lives (``plan``: its run directory), how it runs (``run``: run, resume an interrupted
run from its checkpoints, or return a finished run's summary without training: running *is*
resuming), what it left behind (``record``: the finished summary, else None) and how the
report names it (``label``; ``baseline``: drawn as a reference line, no masks). Its
``job_kind`` is the kind a results-store row and ``config.json`` record ("run" or "imp").

- ``dense``: train the unpruned network (:func:`ntksap.runs.run_experiment`);
- ``prune``: prune at initialization with a registered method, then train (same driver);
- ``imp``: lottery-ticket iterative magnitude pruning (:mod:`ntksap.runs.imp`).

A new kind of run is one class and one entry of :data:`RUNNERS`. A pack
(:mod:`ntksap.pack`) is not a kind of run but a way to train several dense and
prune-at-initialization runs at once: each of its runs is still a ``dense`` or ``prune`` run,
with the same config, directory, record and store row (:mod:`ntksap.sweep.packing`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from . import rundir
from .errors import ConfigError
from .names import DENSE, IMP, PRUNE, kind_of
from .runs.config import RunConfig, config_from_dict, identity, resolve, run_dir, run_settings
from .runs.driver import finished_summary, run_experiment
from .train.checkpoint import read_done


class Runner(Protocol):
    """One kind of run (see the module docstring)."""

    name: str
    job_kind: str
    baseline: bool
    sanity_checks: bool  # whether a sweep's sanity checks (shuffle, reinit, ...) apply

    def config(self, preset: str, method: str, sparsity: float, **kwargs: Any) -> Any:
        """The run's config from a preset (like :func:`ntksap.runs.resolve`)."""

    def plan(self, config: Any, out_dir: str | Path) -> Path:
        """The run directory of ``config`` below ``out_dir`` (its name is its identity)."""

    def job_config(self, config: Any) -> dict[str, Any]:
        """``config`` as the data a store row records."""

    def from_dict(self, data: dict[str, Any]) -> Any:
        """The config a store row records (:meth:`job_config`), of this version or older."""

    def run(self, config: Any, **options: Any) -> dict[str, Any]:
        """Run, resume or report ``config``; returns its summary."""

    def record(self, directory: Path) -> dict[str, Any] | None:
        """The finished run's summary (``already_done`` set), else None."""

    def label(self, method: str) -> str:
        """The report's name of a run of ``method`` of this kind."""

    def pruned_rounds(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        """The pruned networks a finished run trained besides its own result (IMP's rounds
        1..T, each a point of the report), else []."""


class _Experiment:
    """Dense and prune-at-initialization runs: one :class:`RunConfig` each."""

    job_kind = "run"

    def config(self, preset: str, method: str, sparsity: float, **kwargs: Any) -> RunConfig:
        if "rewind_epoch" in kwargs:
            raise ConfigError("rewind_epoch is IMP's option; use it with method imp only")
        return resolve(preset, method, sparsity, **kwargs)

    def plan(self, config: RunConfig, out_dir: str | Path) -> Path:
        return run_dir(config, out_dir)

    def job_config(self, config: RunConfig) -> dict[str, Any]:
        return identity(config)

    def from_dict(self, data: dict[str, Any]) -> RunConfig:
        return config_from_dict(data)

    def run(self, config: RunConfig, **options: Any) -> dict[str, Any]:
        return run_experiment(config, **options)

    def record(self, directory: Path) -> dict[str, Any] | None:
        return finished_summary(directory)

    def label(self, method: str) -> str:
        return method

    def pruned_rounds(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return []


class DenseRunner(_Experiment):
    """The unpruned network, trained with the preset's recipe: the report's reference line."""

    name = DENSE
    baseline = True
    sanity_checks = False


class PruneRunner(_Experiment):
    """Prune at initialization with a registered method, then train."""

    name = PRUNE
    baseline = False
    sanity_checks = True


class ImpRunner:
    """Iterative magnitude pruning with rewinding (:mod:`ntksap.runs.imp`; imported when
    used: ``ntksap.sweep`` imports this module)."""

    name = IMP
    job_kind = "imp"
    baseline = False
    sanity_checks = False

    def config(self, preset: str, method: str, sparsity: float, **kwargs: Any) -> Any:
        from .runs.imp import imp_config
        return imp_config(preset, sparsity, **kwargs)

    def plan(self, config: Any, out_dir: str | Path) -> Path:
        from .runs.imp import imp_dir
        return imp_dir(config, out_dir)

    def job_config(self, config: Any) -> dict[str, Any]:
        return dataclasses.asdict(config)

    def from_dict(self, data: dict[str, Any]) -> Any:
        from .runs.imp import ImpConfig
        data = dict(data)
        return ImpConfig(run=config_from_dict(data.pop("run")), **data)

    def run(self, config: Any, **options: Any) -> dict[str, Any]:
        from .runs.imp import run_imp
        return run_imp(config, **options)

    def record(self, directory: Path) -> dict[str, Any] | None:
        if read_done(rundir.done_path(directory)) is None:
            return None
        summary = rundir.read_summary(directory)
        return None if summary is None else {**summary, "already_done": True}

    def label(self, method: str) -> str:
        return IMP

    def pruned_rounds(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in summary.get("rounds") or [] if r["round"] != 0]


RUNNERS: dict[str, Runner] = {"dense": DenseRunner(), "prune": PruneRunner(), "imp": ImpRunner()}


def runner_for_method(method: str) -> Runner:
    """The runner of a run of ``method`` (a sweep point's or a command line's): its kind's
    (:func:`ntksap.names.kind_of`)."""
    return RUNNERS[kind_of(method)]


def runner_for(config: Any) -> Runner:
    """The runner of ``config`` (a :class:`RunConfig` or an IMP config): its ``kind``'s."""
    return RUNNERS[config.kind]


def runner_for_job(kind: str, data: dict[str, Any]) -> Runner:
    """The runner of a store row or a ``config.json`` (its job ``kind``, "run" or "imp", and
    its recorded ``config``)."""
    runner = RUNNERS[kind_of(run_settings(data).get("method", ""))]
    if runner.job_kind != kind:
        kinds = sorted({r.job_kind for r in RUNNERS.values()})
        raise ConfigError(f"unknown job kind {kind!r}; known: {', '.join(kinds)}")
    return runner


def label(method: str) -> str:
    """The report's name of a run of ``method``."""
    return runner_for_method(method).label(method)


def is_baseline(method: str) -> bool:
    """Whether runs of ``method`` are the report's reference (unpruned, no masks)."""
    return runner_for_method(method).baseline


__all__ = ["RUNNERS", "DenseRunner", "ImpRunner", "PruneRunner", "Runner", "is_baseline",
           "label", "runner_for", "runner_for_job", "runner_for_method"]
