"""Exceptions that name the problem and the fix. All derive from ValueError."""

from __future__ import annotations

from collections.abc import Iterable


class NtksapError(ValueError):
    """Base class of the project's input errors."""


class UnknownNameError(NtksapError, KeyError):
    """An unknown method, model, preset... : lists the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        names = ", ".join(sorted(known))
        super().__init__(f"unknown {kind} {name!r}; choose one of: {names}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NoPrunableLayersError(NtksapError):
    pass


class InputShapeError(NtksapError):
    pass


class NonFiniteScoreError(NtksapError, FloatingPointError):
    pass


class MaskMismatchError(NtksapError):
    pass


class MissingDataError(NtksapError):
    pass


class LayerCollapseError(NtksapError):
    pass


class ConfigError(NtksapError):
    """An invalid configuration value (names the field and the allowed values)."""


class CheckpointError(NtksapError):
    """An unreadable or mismatched training checkpoint (names the file and the fix)."""


class MethodOptionError(ConfigError):
    """A pruning method's option out of its range (names the method, the option, the range)."""


class DiskFullError(NtksapError):
    """No space left to write a file; what was written before is intact (names the file)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TrainingDivergedError(NtksapError):
    """A network whose training loss stopped being finite (names the epoch and the fix)."""


class RunLockedError(NtksapError):
    """Another process is working in the same run directory (names it and its pid)."""


class SweepError(NtksapError):
    """A sweep that cannot go on: its workers keep dying, or its backend is missing."""


class OutputShapeError(NtksapError):
    """A model whose outputs are not logits shaped (batch, k) (names the shape and the fix)."""


class MemoryBudgetError(NtksapError):
    """A computation that cannot fit its memory budget (says how much it needs, how to chunk)."""
