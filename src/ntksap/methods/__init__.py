"""The registry of pruning methods: one file per method, one line here."""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import Method, ScoreContext, ScoringNet
from .force import FORCE
from .grasp import GraSP
from .iter_snip import IterSNIP
from .magnitude import Magnitude
from .ntksap import NTKSAP
from .ntt import NTT
from .prospr import ProsPr
from .random import Random
from .snip import SNIP
from .synflow import SynFlow

METHODS: dict[str, type[Method]] = {
    "random": Random,
    "magnitude": Magnitude,
    "snip": SNIP,
    "iter_snip": IterSNIP,
    "grasp": GraSP,
    "synflow": SynFlow,
    "ntksap": NTKSAP,
    "force": FORCE,
    "prospr": ProsPr,
    "ntt": NTT,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UnknownNameError("method", name, METHODS)
    return METHODS[name]


__all__ = ["METHODS", "Method", "ScoreContext", "ScoringNet", "method_class"]
