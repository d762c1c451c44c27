"""Jobs of a sweep: configs <-> store rows, and running one job in this process."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import traceback
from pathlib import Path
from typing import Any

from ..atomic import is_disk_full
from ..errors import DiskFullError, NtksapError
from ..runners import runner_for, runner_for_job
from ..runs.checks import auto_device
from ..runs.config import RunConfig, config_from_dict
from ..runs.imp import ImpConfig
from ..train.config import LoggingConfig
from .store import Job


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """Where a job reads and writes, and on which device it runs."""

    out_dir: str = "runs"
    data_dir: str | None = None
    download: bool = False
    device: str = "cpu"
    progress: bool = False
    compile: bool = False  # packs: torch.compile the fused model
    separate_unfusable: bool = False  # packs: a model that cannot be fused trains run by run
    logging: LoggingConfig = LoggingConfig()  # each run's epochs also to TensorBoard / W&B


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` recorded as data, of this version or an older one
    (:func:`ntksap.runs.config_from_dict`)."""
    return config_from_dict(data)


def make_job(config: RunConfig | ImpConfig, labels: dict[str, Any] | None = None) -> Job:
    """The store row for ``config``: its key is its run directory below the output folder
    (its runner's plan), its kind the runner's job kind."""
    runner = runner_for(config)
    return Job(runner.plan(config, "").as_posix(), runner.job_kind, runner.job_config(config),
               dict(labels or {}))


def config_of(job: Job) -> RunConfig | ImpConfig:
    """The config a store row records, read by the runner of its kind."""
    return runner_for_job(job.kind, job.config).from_dict(job.config)


def execute(job: Job, options: ExecOptions) -> dict[str, Any]:
    """Run ``job`` to its end in this process (resuming it if it was interrupted) and return
    its summary; a finished run returns its recorded summary at once."""
    runner = runner_for_job(job.kind, job.config)
    config = runner.from_dict(job.config)
    device = auto_device(options.device)
    kwargs = dict(out_dir=options.out_dir, data_dir=options.data_dir,
                  download=options.download, device=device, progress=options.progress)
    if options.logging != LoggingConfig():  # dense and pruned runs (run_sweep checks)
        kwargs["logging"] = options.logging
    summary = runner.run(config, **kwargs)
    summary["run_dir"] = str(Path(summary["run_dir"]).resolve())
    return summary


def describe_error(err: BaseException) -> str:
    """A failed run's error for the store: the message first, then the traceback's tail."""
    head = f"{type(err).__name__}: {err}"
    if isinstance(err, NtksapError | FileNotFoundError):
        return head
    tail = "".join(traceback.format_exception(err)[-6:])
    return f"{head}\n{tail}"[:8000]


def disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an error it arose from, is a full disk: no space left to write a
    file, or SQLite's "database or disk is full"."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, sqlite3.OperationalError) and "disk is full" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return is_disk_full(err)


def sweep_disk_full(err: BaseException) -> DiskFullError:
    """The one-line error of a sweep stopped by a full disk (``err``): the file that could not
    be written when known, said once (a sweep's own message, a worker's or a pack's error
    text, is not wrapped again)."""
    text = str(err).split("\n")[0]
    named = re.search(r"no space left to write (\S+)", text)
    if isinstance(err, DiskFullError) and getattr(err, "path", None):
        detail = f"no space left to write {err.path}"
    elif named:
        detail = named.group(0)
    elif isinstance(err, sqlite3.Error):
        detail = f"the results store says: {text}"
    elif isinstance(err, DiskFullError) and "run the same command again" in text:
        return err
    else:
        detail = text
    return DiskFullError(f"the disk is full ({detail}); free some space and run the same command "
                         "again: the sweep resumes where it stopped (finished runs are kept, "
                         "interrupted ones resume from their checkpoints)",
                         getattr(err, "path", None))
