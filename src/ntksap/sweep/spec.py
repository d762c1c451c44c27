"""Sweep specs: a YAML file that names a grid over any config field, expanded into jobs.

A spec (see ``configs/*.yaml``)::

    name: my-sweep            # the sweep's name in the store (default: the file's stem)
    preset: cifar10-resnet20  # default preset of every run
    out_dir: runs             # run directories go below it
    db: runs/ntksap.db        # the results store (default: <out_dir>/ntksap.db)
    fixed: {epochs: 160}      # fields every run gets
    grid:                     # the cartesian product of these axes, in the order written
      method: [snip, ntksap]
      c: [2, 4, 6]            # density 0.8^c, i.e. sparsity 1 - 0.8^c
      seed: [0, 1, 2]
    sanity: [shuffle, reinit, invert]   # each pruned point also with each sanity check
    groups:                   # optional: several grids; each inherits fixed/grid/sanity from
      - name: dense           # the top level, overriding axes it names (null drops an axis)
        grid: {method: [dense], c: null}

Fields of a point: every :class:`~ntksap.runs.RunConfig` field (preset, method,
sparsity, seed, dataset, model, num_classes, rounds, scope, transform, limit_per_class,
holdout, shared_stream, init), ``c`` or ``density`` instead of sparsity, the method's options
(``method_options: {eps: 0.001}`` or ``method_options.eps: [0.001, 0.01]`` as an axis;
``repeats`` and ``eps`` are shorthands for NTK-SAP's), every
:class:`~ntksap.train.TrainConfig` field (``epochs``, ``lr``, ... or ``train: {...}``), and
``rewind_epoch`` for method ``imp``. Command-line overrides: ``--set PATH=VALUE`` (YAML value;
applied at the top level and in every group that has PATH) and ``--only FIELD=V1,V2``.

A point that is the same run as an earlier one (a value repeated in a grid axis, two groups
that share a point) is run once: :attr:`Sweep.duplicates` names each one dropped by its grid
values, and ``ntksap sweep`` prints a warning line about them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NtksapError
from ..runners import runner_for_method
from ..runs.config import RunConfig
from ..train import TrainConfig
from .jobs import make_job
from .store import Job

GRID_BASE = 0.8  # the paper's density grid: d = 0.8^c
SWEEP_KEYS = ("name", "description", "preset", "out_dir", "db", "data_dir", "download",
              "backend", "workers", "device", "max_attempts", "fixed", "grid", "sanity",
              "groups")
GROUP_KEYS = ("name", "fixed", "grid", "sanity")
# a run's fields that a point may set (code_sha256 is read from the user's code, never set)
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig)
                   if f.name not in ("train", "code_sha256"))
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
OPTION_SHORTHANDS = ("repeats", "eps")  # NTK-SAP's options, once fields of every run
OPTIONS = "method_options"
POINT_FIELDS = (*RUN_FIELDS, *OPTION_SHORTHANDS, "c", "density", "rewind_epoch", "train",
                *(f"train.{f}" for f in TRAIN_FIELDS), *TRAIN_FIELDS)


@dataclasses.dataclass
class Sweep:
    """An expanded spec: its jobs (in order, without duplicates) and its settings."""

    name: str
    jobs: list[Job]
    out_dir: str = "runs"
    db: str = ""
    data_dir: str | None = None
    download: bool = False
    backend: str = "local"
    workers: int | None = None
    device: str = "auto"
    max_attempts: int = 3
    only: tuple[str, ...] = ()
    duplicates: list[str] = dataclasses.field(default_factory=list)
    source: str = ""  # the spec file (absolute path) it was read from, when read from one

    def __post_init__(self) -> None:
        self.db = self.db or str(Path(self.out_dir) / "ntksap.db")

    @property
    def queue(self) -> str:
        """The store's name for the runs this invocation works on: the sweep's name, or a
        view of it named after the ``--only`` filters (claims, retries and counts then
        concern the selected runs only)."""
        return self.name + (f" [only {'; '.join(self.only)}]" if self.only else "")


def sparsity_of_c(c: float) -> float:
    """Sparsity 1 - 0.8^c of the paper's grid point c."""
    return 1.0 - GRID_BASE ** float(c)


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The spec at ``path`` as a dict, with ``--set PATH=VALUE`` overrides applied."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sweep spec {str(path)!r} does not exist; see configs/ for "
                                "examples")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep spec {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep spec {str(path)!r} must be a mapping of keys "
                          f"({', '.join(SWEEP_KEYS)})")
    raw.setdefault("name", path.stem)
    return apply_overrides(raw, overrides)


def apply_overrides(spec: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set ``PATH=VALUE`` (a YAML value, dotted path) at the top level and in every group
    that already has that path."""
    import yaml

    spec = copy.deepcopy(spec)
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"override {item!r} must look like PATH=VALUE, e.g. "
                              "fixed.epochs=2 or grid.seed=[0,1]")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not plain YAML ({problem}); "
                              "write a number, a string, true/false or a list such as [0,1], "
                              "quoted for the shell") from err
        parts = name.split(".")
        if parts[0] not in SWEEP_KEYS:
            raise ConfigError(f"override {item!r}: unknown spec key {parts[0]!r}; the keys are "
                              f"{', '.join(SWEEP_KEYS)}")
        _set(spec, parts, value)
        for group in spec.get("groups") or []:
            if isinstance(group, dict) and _has(group, parts):
                _set(group, parts, value)
    return spec


def _has(tree: dict[str, Any], parts: list[str]) -> bool:
    for part in parts[:-1]:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return False
    return parts[-1] in tree


def _set(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[parts[-1]] = value


def expand(spec: dict[str, Any], only: Iterable[str] = ()) -> Sweep:
    """Expand a spec (as :func:`load_spec` returns it) into a :class:`Sweep`; ``only``
    keeps the points whose FIELD is one of the values, for items ``FIELD=V1,V2``."""
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"unknown sweep spec key(s) {', '.join(unknown)}; the keys are "
                          f"{', '.join(SWEEP_KEYS)}")
    check_sweep_name(spec.get("name"))
    filters = _filters(only)
    groups = spec.get("groups") or [{"name": "main"}]
    jobs: dict[str, Job] = {}
    duplicates: list[str] = []
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or set(group) - set(GROUP_KEYS):
            raise ConfigError(f"group {index} of the spec must be a mapping with keys among "
                              f"{', '.join(GROUP_KEYS)}; got {group!r}")
        name = str(group.get("name", f"group{index}"))
        for point, axes in _points(spec, group):
            if not _keep(point, filters):
                continue
            try:
                job = make_job(_config(point), {"group": name, **axes})
            except NtksapError as err:
                raise ConfigError(f"sweep point {_show(point)} (group {name!r}): {err}") from err
            if job.key in jobs:
                first = jobs[job.key].labels["group"]
                where = f"group {name!r}" + (f" and {first!r}" if first != name else "")
                duplicates.append(f"{_show(axes)} ({where})")
            else:
                jobs[job.key] = job
    if not jobs:
        raise ConfigError("the sweep has no runs: give the spec a grid (and check --only)")
    return Sweep(name=str(spec["name"]), jobs=list(jobs.values()),
                 out_dir=str(spec.get("out_dir") or "runs"), db=str(spec.get("db") or ""),
                 data_dir=spec.get("data_dir"), download=bool(spec.get("download", False)),
                 backend=str(spec.get("backend") or "local"),
                 workers=_count(spec.get("workers"), "workers", 0),
                 device=str(spec.get("device") or "auto"),
                 max_attempts=_count(spec.get("max_attempts"), "max_attempts", 1) or 3,
                 only=tuple(only), duplicates=duplicates)


def check_sweep_name(name: Any) -> None:
    """A sweep's name labels its runs in the store and names its log folder
    (``<out_dir>/logs/<name>``): a non-empty string that is not a path."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or any(
            sep in name for sep in ("/", "\\")):
        raise ConfigError(f"sweep name {name!r}: give a non-empty name without '/' or '\\' "
                          "that is not '.' or '..' (spec key name, or --name)")


def _count(value: Any, name: str, least: int) -> int | None:
    """An integer setting of the spec (None if not given), at least ``least``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{name} (spec key, or {flag}) must be an integer >= {least}; got "
                          f"{value!r}")
    return value


def _points(spec: dict[str, Any], group: dict[str, Any]
            ) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
    """Every point of ``group`` (merged over the top level) and its axis values."""
    fixed = {**_options_flat(_mapping(spec, "fixed")), **_options_flat(_mapping(group, "fixed"))}
    if "preset" in spec:
        fixed.setdefault("preset", spec["preset"])
    grid = {**_options_flat(_mapping(spec, "grid")), **_options_flat(_mapping(group, "grid"))}
    grid = {k: v for k, v in grid.items() if v is not None}
    sanity = group.get("sanity", spec.get("sanity")) or []
    shortcut = bool(sanity) and "transform" not in grid
    if shortcut:
        grid["transform"] = ["", *sanity]
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid axis {axis!r} must be a non-empty list; got {values!r}")
    for combo in itertools.product(*grid.values()):
        axes = dict(zip(grid, combo, strict=True))
        point = {**fixed, **axes}
        if shortcut and "method" in point and not runner_for_method(
                str(point["method"])).sanity_checks:  # nothing to shuffle or invert
            if axes["transform"]:
                continue  # the same run as the point without a sanity check
        yield point, axes


def _options_flat(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with a ``method_options`` mapping spelled as ``method_options.NAME`` keys."""
    out = {k: v for k, v in tree.items() if k != OPTIONS}
    options = tree.get(OPTIONS)
    if options is None:
        return out
    if not isinstance(options, dict):
        raise ConfigError(f"{OPTIONS} must be a mapping of the method's options, e.g. "
                          f"{{eps: 0.001}}; got {options!r}")
    return {**{f"{OPTIONS}.{k}": v for k, v in options.items()}, **out}


def _mapping(tree: dict[str, Any], key: str) -> dict[str, Any]:
    value = tree.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key!r} in the sweep spec must be a mapping; got {value!r}")
    return value


def _config(point: dict[str, Any]) -> Any:
    """The :class:`RunConfig` or :class:`ImpConfig` of one point."""
    p = dict(point)
    options = {k.partition(".")[2]: p.pop(k) for k in list(p) if k.startswith(OPTIONS + ".")}
    unknown = sorted(set(p) - set(POINT_FIELDS))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; a point's fields are the "
                          f"run's ({', '.join(RUN_FIELDS)}), {OPTIONS}.NAME (the method's "
                          "options), c or density, rewind_epoch (imp), and the training fields "
                          "(epochs, lr, ...)")
    options = {**(p.pop(OPTIONS, None) or {}), **options}
    if "method" not in p:
        raise ConfigError("no method: give it at the top level, in fixed or in the grid")
    train = dict(p.pop("train", None) or {})
    for key in list(p):
        if key.startswith("train."):
            train[key[6:]] = p.pop(key)
        elif key in TRAIN_FIELDS:
            train[key] = p.pop(key)
    train = {k: _coerce(TrainConfig, k, v) for k, v in train.items()}
    given = [k for k in ("sparsity", "c", "density") if k in p]
    if len(given) > 1:
        raise ConfigError(f"give one of sparsity, c and density, not {' and '.join(given)}")
    sparsity = (sparsity_of_c(_number(p.pop("c"), "c")) if "c" in p else
                1.0 - _number(p.pop("density"), "density") if "density" in p else
                _number(p.pop("sparsity", 0.0), "sparsity"))
    preset, method = str(p.pop("preset", None) or ""), str(p.pop("method"))
    kwargs = {k: _coerce(RunConfig, k, v) for k, v in p.items() if k not in OPTION_SHORTHANDS}
    kwargs.update(_shorthands(p))
    if options:
        kwargs[OPTIONS] = options
    return runner_for_method(method).config(preset, method, sparsity, train_overrides=train,
                                            **kwargs)


def _coerce(cls: type, name: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: numbers for numeric fields, tuples for tuples."""
    hints = typing.get_type_hints(cls)
    hint = hints.get(name)
    if hint is float and isinstance(value, str | int) and not isinstance(value, bool):
        return _number(value, name)
    if hint is int and isinstance(value, str):
        return int(_number(value, name))
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    if name == "transform" and value is None:
        return ""
    return value


def _shorthands(point: dict[str, Any]) -> dict[str, Any]:
    """``repeats`` and ``eps`` of a point, as numbers (YAML reads ``1e-3`` as a string)."""
    out: dict[str, Any] = {}
    if "repeats" in point:
        out["repeats"] = point["repeats"]
    if "eps" in point:
        out["eps"] = _number(point["eps"], "eps") if point["eps"] is not None else None
    return out


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a number; got {value!r}") from err


def _filters(only: Iterable[str]) -> dict[str, list[str]]:
    out = {}
    for item in only:
        name, sep, values = item.partition("=")
        if not sep or not (name in POINT_FIELDS or name.startswith(OPTIONS + ".")):
            raise ConfigError(f"--only {item!r} must look like FIELD=V1,V2 with FIELD among "
                              f"the point fields (method, c, seed, ...)")
        if name in out:
            raise ConfigError(f"--only {name} is given twice ({','.join(out[name])} and "
                              f"{values}; --methods M1,M2 is --only method=M1,M2): give the "
                              "values once, in one filter")
        out[name] = [v.strip() for v in values.split(",")]
    return out


def _keep(point: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for name, values in filters.items():
        value = point.get(name, point.get(_alias(name), ""))
        if not any(_same(value, v) for v in values):
            return False
    return True


def _alias(name: str) -> str:
    """The other spelling of an option with a shorthand: ``eps`` <-> ``method_options.eps``."""
    bare = name.removeprefix(OPTIONS + ".")
    if bare not in OPTION_SHORTHANDS:
        return name
    return bare if bare != name else f"{OPTIONS}.{bare}"


def _same(value: Any, text: str) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return str(value) == text


def _show(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in point.items()) + "}"
