"""Training configuration and the paper's presets (dataset, model, recipe, pruning defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError, UnknownNameError

Schedule = Literal["multistep", "cosine"]
OptimizerName = Literal["sgd", "adamw"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, per-epoch LR schedule, precision and memory format."""

    epochs: int = field(default=160, metadata=_help("number of training epochs"))
    batch_size: int = field(default=128, metadata=_help(
        "global batch size (summed over all processes); used by whoever builds the loaders"))
    optimizer: OptimizerName = field(default="sgd", metadata=_help("sgd or adamw"))
    lr: float = field(default=0.1, metadata=_help("peak learning rate"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (ignored by adamw)"))
    nesterov: bool = field(default=False, metadata=_help("Nesterov momentum (SGD)"))
    weight_decay: float = field(default=1e-4, metadata=_help(
        "weight decay (L2 for sgd, decoupled for adamw)"))
    schedule: Schedule = field(default="multistep", metadata=_help(
        "per-epoch LR schedule: multistep (x gamma at each milestone) or cosine (to 0)"))
    milestones: tuple[int, ...] = field(default=(80, 120), metadata=_help(
        "epochs at which multistep multiplies the LR by gamma"))
    gamma: float = field(default=0.1, metadata=_help("multistep decay factor"))
    warmup_epochs: int = field(default=0, metadata=_help(
        "linear warmup epochs (LR ramps to lr over them) before the schedule"))
    label_smoothing: float = field(default=0.0, metadata=_help("cross-entropy label smoothing"))
    amp: bool = field(default=False, metadata=_help(
        "bfloat16 autocast on CUDA (no effect on CPU)"))
    channels_last: bool = field(default=False, metadata=_help(
        "channels-last memory format for the model and 4-D inputs"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (self.schedule in ("multistep", "cosine"),
             "schedule must be 'multistep' or 'cosine'"),
            (list(self.milestones) == sorted(self.milestones), "milestones must be increasing"),
            (0 <= self.warmup_epochs < self.epochs, "warmup_epochs must be in [0, epochs)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (not (self.nesterov and self.optimizer == "sgd" and self.momentum <= 0),
             "nesterov needs momentum > 0"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ConfigError(f"invalid TrainConfig: {'; '.join(problems)}")


@dataclass(frozen=True)
class Preset:
    """A paper setting: what to train on, with which recipe, and how to prune
    (``prune_rounds`` T iterations x ``prune_repeats`` R repeats of NTK-SAP)."""

    name: str
    dataset: str
    model: str
    num_classes: int
    train: TrainConfig
    prune_rounds: int
    prune_repeats: int
    notes: str = ""


_IMAGENET_RECIPE = TrainConfig(epochs=90, batch_size=256, lr=0.1, momentum=0.9,
                               weight_decay=1e-4, milestones=(30, 60), gamma=0.1)
_IMAGENET_NOTE = ("torchvision reference recipe (batch 256 in total over all GPUs); "
                  "pruning T=100, R=1 is this toolkit's choice for ImageNet")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("cifar10-resnet20", "cifar10", "resnet20", 10,
           TrainConfig(epochs=160, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                       milestones=(80, 120), gamma=0.1),
           prune_rounds=20, prune_repeats=5),
    Preset("cifar100-vgg16", "cifar100", "vgg16", 100,
           TrainConfig(epochs=160, batch_size=128, lr=0.1, momentum=0.9, nesterov=True,
                       weight_decay=5e-4, milestones=(60, 120), gamma=0.1),
           prune_rounds=100, prune_repeats=1),
    Preset("tinyimagenet-resnet18", "tinyimagenet", "tiny_resnet18", 200,
           TrainConfig(epochs=200, batch_size=256, lr=0.2, momentum=0.9, weight_decay=5e-4,
                       milestones=(100, 150), gamma=0.1),
           prune_rounds=100, prune_repeats=1),
    Preset("imagenet-resnet18", "imagenet", "resnet18", 1000, _IMAGENET_RECIPE,
           prune_rounds=100, prune_repeats=1, notes=_IMAGENET_NOTE),
    Preset("imagenet-resnet50", "imagenet", "resnet50", 1000, _IMAGENET_RECIPE,
           prune_rounds=100, prune_repeats=1, notes=_IMAGENET_NOTE),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`UnknownNameError` lists the known ones."""
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]

