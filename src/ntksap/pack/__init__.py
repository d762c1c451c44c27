"""Packs: M runs of one preset trained together as one fused model.

:func:`run_pack` trains runs that share a :func:`pack_key` (preset, data, training recipe) as
one module (:mod:`ntksap.pack.fuse`) and leaves each run's directory exactly as ``ntksap run``
would (:mod:`ntksap.pack.train`).
"""

from .fuse import GroupedLinear, UnfusableModelError, fuse
from .plan import MemberResult, can_pack, pack_key
from .train import run_pack

__all__ = ["GroupedLinear", "MemberResult", "UnfusableModelError", "can_pack", "fuse",
           "pack_key", "run_pack"]
