"""The name ``ntksap.experiment`` kept for code written before :mod:`ntksap.runs`: the same
functions and classes (a run's config, identity and driver), imported from there. New code
imports :mod:`ntksap.runs`."""

from .names import DENSE
from .runs import *  # noqa: F403 - this module is the old name of ntksap.runs
from .runs import __all__ as _runs_all

__all__ = ["DENSE", *_runs_all]
