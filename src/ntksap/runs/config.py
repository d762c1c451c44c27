"""A run's config: :class:`RunConfig` (everything that decides a run's result), how it is
resolved from a preset and flags (:func:`resolve`), its identity (the digest that names its
directory: :func:`identity`, :func:`run_dir`) and how a recorded one is read back."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import rundir
from ..data import DATASETS
from ..data.bundle import NUM_CLASSES
from ..data.user import dataset_spec, is_user_dataset, load_user_splits
from ..engine import TRANSFORMS, check_sparsity, make_method
from ..errors import (
    ConfigError,
    UnknownNameError,
)
from ..init import KAIMING, check_init
from ..methods import METHODS, check_options, method_class, option_defaults, option_fields
from ..models import model_spec
from ..names import DENSE, kind_of
from ..selection import SCOPES
from ..train import CUSTOM, PRESETS, TrainConfig, get_preset
from ..train.config import Preset
from ..typecheck import convert, type_name
from ..userref import check_digest

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
    normalize_inputs: bool = dataclasses.field(default=True, metadata={"help": (
        "normalize every input by the data set's per-channel mean and std (default); "
        "--no-normalize-inputs feeds pixels scaled to [0, 1], as some papers' code does "
        "(in-memory data sets only)")})

    @property
    def kind(self) -> str:
        """``dense``, ``prune`` or ``imp`` (:func:`ntksap.names.kind_of` of the method)."""
        return kind_of(self.method)


def resolve(preset: str | None, method: str, sparsity: float, *, seed: int = 0,
            dataset: str | None = None, model: str | None = None,
            num_classes: int | None = None, rounds: int | None = None,
            repeats: int | None = None, scope: str = "global", transform: str | None = None,
            limit_per_class: int | None = None, train_overrides: dict[str, Any] | None = None,
            eps: float | None = None, holdout: float | None = None,
            method_options: Mapping[str, Any] | None = None,
            shared_stream: bool = False, init: str | None = None,
            input_shape: tuple[int, ...] | None = None, **fields: Any) -> RunConfig:
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
    ``fields``: any other field of :class:`RunConfig` (:func:`plain_fields`), checked by its
    type and by the check its ``metadata["check"]`` names, if any: a field added to
    RunConfig needs no parameter here.

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
    code = code_sha256_of(model or p.model, dataset or p.dataset)
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
        init=init, input_shape=input_shape, code_sha256=code,
        **_checked_fields(fields))
    check_method_options(config)
    return config


def plain_fields() -> list[dataclasses.Field]:
    """The fields of :class:`RunConfig` that :func:`resolve` takes as they are (no parameter
    of their own, no preset default): a field added to RunConfig is one of them; its
    ``metadata["help"]`` is its command-line help."""
    own = set(inspect.signature(resolve).parameters) | {"train", "code_sha256"}
    return [f for f in dataclasses.fields(RunConfig) if f.name not in own]


def _checked_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` of :func:`plain_fields`, type-checked; unknown names refused."""
    plain = {f.name: f for f in plain_fields()}
    unknown = sorted(set(values) - set(plain))
    if unknown:
        raise ConfigError(f"a run has no field {', '.join(unknown)}; its fields are "
                          f"{', '.join(f.name for f in dataclasses.fields(RunConfig))}")
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for name, value in values.items():
        if value is None:
            continue  # not given: the field's default
        ok, value = convert(value, hints[name])
        if not ok:
            raise ConfigError(f"run field {name} must be of type {type_name(hints[name])}; "
                              f"got {value!r}")
        check = plain[name].metadata.get("check")
        if check is not None:
            check(value)
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


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


def code_sha256_of(model: str, dataset: str) -> dict[str, str]:
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


def quiet_options(method: type, options: dict[str, Any], progress: bool) -> dict[str, Any]:
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


def check_code(config: RunConfig) -> None:
    """The user's model and data set code is what the run was planned with
    (:data:`RunConfig.code_sha256`): a changed file is another run, refused here."""
    now = code_sha256_of(config.model, config.dataset)
    for role, name in (("model", config.model), ("dataset", config.dataset)):
        check_digest(name, config.code_sha256.get(role, ""), now.get(role, ""),
                     "model" if role == "model" else "data set")


def run_settings(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The run's own fields of a recorded config of any kind of run: a :class:`RunConfig`'s
    as they are, an IMP run's from under its ``run`` key (the one place that knows this
    nesting)."""
    inner = recorded.get("run")
    return dict(inner) if isinstance(inner, Mapping) else dict(recorded)


def setting_label(config: Mapping[str, Any]) -> str:
    """The name of the setting a run (its recorded config, any version) belongs to: its
    preset, plus whatever differs from the preset's own data, model and training recipe (e.g.
    ``cifar10-resnet20 [synthetic, convnet, 30/class, epochs=2]``). Runs of one setting share
    the report's tables."""
    preset = config.get("preset", "")
    try:
        p = get_preset(preset)
        defaults = {"dataset": p.dataset, "model": p.model,
                    "train": dataclasses.asdict(p.train), "holdout": p.holdout}
    except ConfigError:
        defaults = {}
    bits = [str(config.get(k)) for k in ("dataset", "model")
            if config.get(k) and config.get(k) != defaults.get(k)]
    if config.get("input_shape"):
        bits.append("x".join(map(str, config["input_shape"])))
    if config.get("limit_per_class"):
        bits.append(f"{config['limit_per_class']}/class")
    holdout = config.get("holdout") or 0.0  # runs before the field: none
    if defaults and holdout != defaults["holdout"]:
        bits.append(f"holdout={holdout:g}")
    if config.get("init", KAIMING) != KAIMING:  # runs before the field: Kaiming
        bits.append(f"init={config['init']}")
    for field in plain_fields():  # runs before a field: its default
        value = config.get(field.name, _default(field))
        if value != _default(field):
            bits.append(f"{field.name}={_short(value)}")
    train, base = config.get("train") or {}, defaults.get("train") or {}
    for name, value in sorted(train.items()):
        if name in base and _plain(base[name]) != _plain(value):
            bits.append(f"{name}={_short(value)}")
    return preset + (f" [{', '.join(bits)}]" if bits else "")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
