"""Text placed in the Markdown files ntksap writes (results.md, masks.md, spectrum.md).

Names and labels come from users (method labels, mask labels, sweep and setting names), and
MkDocs or a Git host renders these files as HTML: :func:`escape` makes such text show as
written instead of acting as HTML or breaking the table (``<``, ``>``, ``&``, ``|``, newlines).
"""

from __future__ import annotations

from typing import Any

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "`": "&#96;"}


def escape(value: Any) -> str:
    """``value`` as Markdown text that renders as written (one line, no HTML, no cell
    break)."""
    text = " ".join(str(value).splitlines())
    return "".join(_ENTITIES.get(ch, ch) for ch in text)
