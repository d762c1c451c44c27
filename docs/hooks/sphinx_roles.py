"""MkDocs hook: the docstrings cite code Sphinx-style (``:func:`name```); drop the role so that
the API pages show plain code (``name``)."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: object) -> str:
    return ROLE.sub("", html)
