"""Compatibility: :func:`ntksap.init.kaiming_init_` lives outside the model zoo (the engine and
the methods use it on any model); this name keeps older imports working."""

from __future__ import annotations

from ..init import kaiming_init_

__all__ = ["kaiming_init_"]
