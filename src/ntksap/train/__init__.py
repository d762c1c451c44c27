"""Training: config and presets, argparse round trip, the resumable training loop."""

from __future__ import annotations

from .cliargs import add_dataclass_args, dataclass_from_args, dataclass_to_argv
from .config import CUSTOM, PRESETS, Preset, TrainConfig, get_preset
from .loop import evaluate, train
from .schedule import build_optimizer, build_scheduler, lr_at

__all__ = [
    "CUSTOM", "PRESETS", "Preset", "TrainConfig", "add_dataclass_args", "build_optimizer",
    "build_scheduler", "dataclass_from_args", "dataclass_to_argv", "evaluate", "get_preset",
    "lr_at", "train",
]
