"""What a report is made of: one :class:`Point` per trained network, read from a results store
(SQLite file) or from a folder of run directories.

An IMP run gives one point per pruning round (its whole accuracy-vs-sparsity curve). A point
whose ``metrics.jsonl`` has an epoch with a non-finite training loss has diverged
(``diverged_epoch``): a run stops there and fails, and a run made before it did so trained on
to a chance accuracy; the report counts either as diverged, not as an accuracy. A run
directory whose ``config.json`` or ``summary.json`` cannot be read (truncated, not JSON) is a
point of status ``unreadable`` whose ``error`` names the file; an unreadable densities or
spectrum file is named in the point's ``unreadable`` list. A run directory may hold
``ntk_spectrum.json`` (``{"eigenvalues": [...]}`` and optionally
``"dense_eigenvalues"``), written by ``ntksap ntk --runs``
(:func:`ntksap.runs.spectrum.run_spectrum`); the report plots it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from .. import rundir
from ..epochs import diverged_epoch, val_selected
from ..errors import ConfigError, MaskMismatchError
from ..masks import Masks
from ..runners import Runner, label, runner_for_job
from ..runs.config import setting_label
from ..runs.record import read_run, record_settings

VARIANT_FIELDS = ("transform", "rounds", "scope", "rewind_epoch")  # and every method option
OPTION = "method_options."  # prefix of a method option's field name (``method_options.eps``)
SHORT_NAMES = {"rounds": "T", "repeats": "R", "rewind_epoch": "rewind"}
LEGACY_ORDER = ("repeats", "eps")  # NTK-SAP's R and eps first, as in the first reports


@dataclasses.dataclass
class Point:
    """One trained network (or one that failed or is unfinished) and what it left behind."""

    key: str
    status: str
    method: str
    sparsity: float
    seed: int
    config: dict[str, Any]
    final_acc: float | None = None
    best_acc: float | None = None
    run_dir: Path | None = None
    error: str | None = None
    densities: list[dict[str, Any]] | None = None
    spectrum: dict[str, Any] | None = None
    collapse: dict[str, Any] | None = None
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    unreadable: list[str] = dataclasses.field(default_factory=list)  # files, with the reason
    effective_sparsity: float | None = None  # summary.json's (runs made since it is recorded)
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # metrics.jsonl
    input_shape: list[int] | None = None  # the data's item shape (summary.json, since recorded)
    cost: dict[str, Any] | None = None  # summary.json's params and flops (since recorded)

    @property
    def diverged_epoch(self) -> int | None:
        """The first epoch whose training loss is not finite (None: the run did not diverge)."""
        return diverged_epoch(self.metrics)

    @property
    def val_selected_acc(self) -> float | None:
        """Test accuracy at the validation-selected epoch (runs with a hold-out), else None."""
        return val_selected(self.metrics)[1]

    @property
    def preset(self) -> str:
        return self.config.get("preset", "")

    def field(self, name: str) -> Any:
        """A config field; ``method_options.NAME`` (or an option's bare name) is the method's
        option (None when the run left it at the method's default)."""
        options = self.config.get("method_options") or {}
        if name.startswith(OPTION):
            return options.get(name[len(OPTION):])
        if name not in self.config and name in options:
            return options[name]
        return self.config.get(name, self.labels.get(name))

    @property
    def options(self) -> dict[str, Any]:
        """The method options the run gave (preset defaults included)."""
        return dict(self.config.get("method_options") or {})

    @property
    def masks_path(self) -> Path | None:
        return rundir.existing_masks(self.run_dir) if self.run_dir else None


def load_points(source: str | Path, sweep: str | None = None) -> list[Point]:
    """The points of a store (``.db`` file; ``sweep`` picks one sweep) or a runs folder."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{str(source)!r} does not exist: give a results store "
                                "(the sweep's .db file) or a folder of run directories")
    if source.is_file():
        return _from_store(source, sweep)
    return _from_folder(source)


def _from_store(path: Path, sweep: str | None) -> list[Point]:
    from ..sweep import Store, StoreError  # the results store: read only for a .db path

    try:
        with Store(path, create=False) as store:
            if sweep and sweep not in store.sweeps():
                raise ConfigError(f"no sweep {sweep!r} in {path}; it has: "
                                  f"{', '.join(store.sweeps()) or 'none'}")
            rows = store.rows(sweep)
    except StoreError as err:
        raise ConfigError(f"{err.problem}; give a results store (the .db file a sweep wrote) "
                          "or a folder of run directories") from err
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"{str(path)!r} is not a readable results store ({err}); give the "
                          ".db file a sweep wrote, or a folder of run directories") from err
    points = []
    for row in rows:
        runner = runner_for_job(row["kind"], row["config"])
        config, extra = record_settings(row["config"])
        summary = row["summary"] or {}
        run_dir = _located(Path(row["run_dir"]), path, row["key"]) if row["run_dir"] else None
        base = Point(row["key"], row["status"], config.get("method", ""),
                     float(config.get("sparsity", 0.0)), int(config.get("seed", 0)),
                     {**config, **extra}, summary.get("final_test_acc"),
                     summary.get("best_test_acc"), run_dir, row["error"],
                     labels=row["labels"])
        points += _expand(base, runner, summary)
    return points


def _located(run_dir: Path, store: Path, key: str) -> Path:
    """A store row's run directory: where it was recorded, or, when that is gone (the
    results folder was moved or copied), the same run below the store's own folder (a
    sweep's store lies in its out-dir, and a row's key is the run's path below it)."""
    if run_dir.exists():
        return run_dir
    moved = store.resolve().parent / key
    return moved if moved.is_dir() else run_dir



def _from_folder(root: Path) -> list[Point]:
    points = []
    for directory in rundir.config_dirs(root):
        if rundir.is_round_dir(directory) and rundir.has_config(directory.parent):
            continue  # an IMP round, reported through its IMP run
        key = f"{directory.parent.name}/{directory.name}"
        run = read_run(directory)
        if not run.settings and run.problem is not None:  # config.json unreadable
            points.append(Point(key, "unreadable", "", 0.0, 0, {}, run_dir=directory,
                                error=run.problem))
            continue
        runner = runner_for_job(run.kind, {**run.settings})
        config, summary = run.settings, run.summary
        base = Point(key, run.status, config.get("method", ""),
                     float(config.get("sparsity", 0.0)), int(config.get("seed", 0)),
                     {**config, **run.extra}, summary.get("final_test_acc"),
                     summary.get("best_test_acc"), directory, error=run.problem)
        points += _expand(base, runner, summary)
    return points


def _expand(base: Point, runner: Runner, summary: dict[str, Any]) -> list[Point]:
    """One point per trained network: the runner's pruned rounds (IMP's 1..T), else the run
    itself."""
    base.input_shape = summary.get("input_shape")
    base.cost = {k: summary[k] for k in ("params", "flops") if k in summary} or None
    rounds = runner.pruned_rounds(summary) if base.status == "done" else []
    if rounds:
        out = []
        for r in rounds:
            folder = Path(r["run_dir"]) if r.get("run_dir") else None
            point = dataclasses.replace(
                base, key=f"{base.key}#round{r['round']}", sparsity=float(r["sparsity"]),
                final_acc=r["final_test_acc"], best_acc=r["best_test_acc"], run_dir=folder,
                config={**base.config, "sparsity": float(r["sparsity"])})
            out.append(_attach(point))
        return out
    base.effective_sparsity = summary.get("effective_sparsity")
    return [_attach(base)]


def _attach(point: Point) -> Point:
    """Read the per-epoch records, the per-layer densities and the NTK spectrum a run
    directory holds."""
    directory = point.run_dir
    if directory is None:
        return point
    if not directory.is_dir():
        point.unreadable.append(f"{directory} (the run directory is missing: deleted, or "
                                "moved without its store)")
        return point
    try:
        point.metrics = rundir.read_metrics(directory, strict=True)
    except (OSError, ValueError) as err:
        point.unreadable.append(f"{rundir.metrics_path(directory)} ({type(err).__name__}: "
                                f"{err})")
    masks = rundir.existing_masks(directory)
    if masks is not None:
        try:
            Masks.load(masks)
        except (MaskMismatchError, OSError) as err:
            point.unreadable.append(f"{masks} ({err})")
    densities = rundir.densities_path(directory)
    if densities.exists():
        point.densities = _read_any(densities, list, point)
    spectrum = rundir.spectrum_path(directory)
    if spectrum.exists():
        data = _read_any(spectrum, list | dict, point)
        point.spectrum = {"eigenvalues": data} if isinstance(data, list) else data
    return point


def _read_any(path: Path, kind: Any, point: Point) -> Any:
    """The JSON data of ``path`` if it is a ``kind``, else None, noted in ``point.unreadable``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        point.unreadable.append(f"{path} ({type(err).__name__}: {err})")
        return None
    if not isinstance(data, kind):
        point.unreadable.append(f"{path} (a JSON {type(data).__name__}, not the expected data)")
        return None
    return data


# Grouping ------------------------------------------------------------------------------------

def setting_of(point: Point) -> str:
    """The setting a point belongs to (:func:`ntksap.runs.setting_label` of its config)."""
    return setting_label(point.config)


def variant_labels(points: list[Point]) -> dict[str, str]:
    """A label per point key: the method, plus the variant fields (transform, T, scope,
    rewind epoch, and each of the method's options, e.g. NTK-SAP's R and eps) that differ
    between points of that method in the same setting."""
    labels = {}
    for group in _by_method(points).values():
        varying = varying_fields(group)
        for p in group:
            labels[p.key] = variant_label(p, varying)
    return labels


def _by_method(points: list[Point]) -> dict[tuple[str, str], list[Point]]:
    by_method: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by_method.setdefault((setting_of(p), p.method), []).append(p)
    return by_method


def varying_fields(group: list[Point]) -> list[str]:
    """The variant fields, then the method options (``method_options.NAME``, by name), whose
    value differs between the points of ``group``."""
    options = sorted({name for p in group for name in p.options},
                     key=lambda n: (LEGACY_ORDER.index(n) if n in LEGACY_ORDER else 2, n))
    fields = [*VARIANT_FIELDS, *(OPTION + name for name in options)]
    return [f for f in fields if len({json.dumps(p.field(f)) for p in group}) > 1]


def varying_options(points: list[Point]) -> list[str]:
    """The method options (bare names) that differ between two points of one method in one
    setting: the report's option columns."""
    names = {f[len(OPTION):] for group in _by_method(points).values()
             for f in varying_fields(group) if f.startswith(OPTION)}
    return sorted(names)


def variant_label(point: Point, varying: list[str]) -> str:
    parts = [label(point.method)]
    if point.field("transform"):
        parts.append(f"[{point.field('transform')}]")
    for f in varying:
        if f == "transform":
            continue
        value = point.field(f)
        name = f[len(OPTION):] if f.startswith(OPTION) else f
        if value is None and f.startswith(OPTION):
            value = "default"
        parts.append(f"{SHORT_NAMES.get(name, name)}={value}")
    return " ".join(parts)
