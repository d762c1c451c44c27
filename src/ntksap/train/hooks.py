"""Epoch hooks that copy each epoch's metrics to TensorBoard or Weights & Biases.

The training loop calls every hook after each epoch with that epoch's record, the same
dictionary it appends to the run's ``metrics.jsonl`` (``epoch``, ``loss``, ``train_acc``,
``test_loss``, ``test_acc``, ``lr``, ``seconds``, ``images_per_s``). The run directory stays the
record; these are views of it. Both back-ends are optional extras
(``pip install 'ntksap[tensorboard]'``, ``pip install 'ntksap[wandb]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import netrc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rundir import TENSORBOARD
from .config import LoggingConfig

EpochHook = Callable[[dict[str, Any]], None]
TENSORBOARD_DIR = TENSORBOARD
WANDB_HOST = "api.wandb.ai"


def _require(module: str, flag: str) -> Any:
    """Import ``module``, or fail in one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"--{flag} needs the {flag} package, which is not installed: "
                          f"pip install 'ntksap[{flag}]' (or drop --{flag})") from err


def check_logging(options: LoggingConfig) -> None:
    """Fail (:class:`ConfigError`) if a back-end that ``options`` asks for is not installed."""
    if options.tensorboard:
        _require("torch.utils.tensorboard", "tensorboard")
    if options.wandb:
        _require("wandb", "wandb")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers, less the epoch (the step they are logged at)."""
    return {name: float(value) for name, value in record.items()
            if name != "epoch" and isinstance(value, int | float)
            and not isinstance(value, bool)}


class TensorBoardHook:
    """Writes each epoch's scalars, named as in ``metrics.jsonl``, at step = epoch (1-based);
    with ``config``, the run's config as text and its per-layer densities (``densities``)
    as scalars ``density/<layer>`` at step 0."""

    def __init__(self, log_dir: str | Path, config: dict[str, Any] | None = None) -> None:
        writer = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.writer = writer(log_dir=str(log_dir))
        if config:
            shown = {k: v for k, v in config.items() if k != "densities"}
            self.writer.add_text("config", f"```\n{json.dumps(shown, indent=1)}\n```")
            for layer, density in (config.get("densities") or {}).items():
                self.writer.add_scalar(f"density/{layer}", float(density), global_step=0)

    def __call__(self, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, global_step=int(record["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> str | None:
    """``"offline"`` unless W&B can reach an account: ``WANDB_MODE`` or ``WANDB_API_KEY`` set,
    or a ``wandb login`` entry in ``~/.netrc``; ``None`` lets wandb decide."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return None
    try:
        logged_in = netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return None if logged_in else "offline"


class WandbHook:
    """One W&B run per run directory: project ``ntksap-<preset>`` (or ``WANDB_PROJECT``), name
    and id the directory's name (a resumed run continues it), files under the directory."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        wandb = _require("wandb", "wandb")
        run_dir = Path(run_dir)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or f"ntksap-{run_dir.parent.name}",
            name=run_dir.name, id=run_dir.name, resume="allow", dir=str(run_dir),
            config=config, mode=wandb_mode())

    def __call__(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=int(record["epoch"]))

    def close(self) -> None:
        self.run.finish()


@contextlib.contextmanager
def logging_hooks(options: LoggingConfig, run_dir: str | Path,
                  config: dict[str, Any] | None = None) -> Iterator[list[EpochHook]]:
    """The hooks ``options`` asks for, writing into ``run_dir``; closed on exit. ``config``
    (the run's recorded config) is what W&B shows as the run's config."""
    check_logging(options)
    hooks: list[Any] = []
    try:
        if options.tensorboard:
            hooks.append(TensorBoardHook(Path(run_dir) / TENSORBOARD_DIR, config))
        if options.wandb:
            hooks.append(WandbHook(run_dir, config or {}))
        yield hooks
    finally:
        for hook in reversed(hooks):
            hook.close()
