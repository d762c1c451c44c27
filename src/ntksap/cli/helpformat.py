"""Help text of the subcommands: each option's default shown once, descriptions as written."""

from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: X)`` to an option's help only where X says something (not None,
    False or an empty list) and the help does not state its default already; keeps the
    description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        silent = default is None or default is False or default == [] or (
            default is argparse.SUPPRESS)
        if silent or "default" in text or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def description(doc: str | None) -> str:
    """A module docstring as a command's description: whole paragraphs, reST ``literals``
    as plain text."""
    return (doc or "").strip().replace("``", "")
