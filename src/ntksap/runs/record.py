"""A run directory read back: :func:`read_run` gives a typed :class:`RunRecord` (what the run
was, what it read from its data, what it achieved, or why a file cannot be read), and
:func:`record_settings` reads a recorded config of any version and kind (a store row's
too). The report and the NTK tools read runs through these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import rundir
from .config import normalize_record, run_settings


@dataclass(frozen=True)
class RunRecord:
    """What one run directory says. ``settings``: the run's own fields in this version's
    layout (an IMP run's from under its ``run`` key); ``extra``: the fields its kind adds
    around them (IMP's ``rewind_epoch``); ``kind``: the store's job kind ("run", "imp");
    ``summary``: ``summary.json`` ({} while unfinished); ``data``: what it read from its
    data (since user data sets); ``problem``: an unreadable ``config.json`` or
    ``summary.json``, named, with the fix."""

    directory: Path
    kind: str = "run"
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def status(self) -> str:
        """"unreadable", "done" (a summary) or "unfinished"."""
        return "unreadable" if self.problem else "done" if self.summary else "unfinished"


def record_settings(recorded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run's own fields, normalized to this version; the fields its kind adds around
    them) of a recorded config (``config.json``'s ``config``, or a store row's)."""
    settings = normalize_record(run_settings(recorded))
    extra = {k: v for k, v in recorded.items() if k != "run"} if "run" in recorded else {}
    return settings, extra


def read_run(directory: str | Path) -> RunRecord:
    """The run in ``directory`` as it recorded itself; never raises for a file that cannot
    be read (``problem`` says which and why)."""
    directory = Path(directory)
    record, problem = rundir.read_json(rundir.config_path(directory))
    if problem is not None:
        return RunRecord(directory, problem=problem)
    recorded = record.get("config") if isinstance(record.get("config"), dict) else {}
    settings, extra = record_settings(recorded)
    path = rundir.summary_path(directory)
    summary, problem = rundir.read_json(path) if path.exists() else ({}, None)
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    return RunRecord(directory, str(record.get("kind", "run")), settings, extra, summary, data,
                     problem)
