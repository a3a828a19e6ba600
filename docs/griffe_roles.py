"""A griffe extension for the API reference: our docstrings' Sphinx roles, read as Markdown.

The package's docstrings are Google style ("Args:") but cross-reference with Sphinx
roles (``:class:`Notifier```, ``:meth:`~.Store.now```) and end literal blocks' lead-in
lines with ``::``. mkdocstrings renders Markdown, where those would show as
``:class:`` followed by code. This turns them into code spans as Sphinx would show
them (``~`` keeps the last name, ``()`` after functions and methods), and ``::`` into
``:`` (the indented block after it is a code block in Markdown already).

Registered in mkdocs.yml under the python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|meth|func|mod|attr|data|exc|obj|const|term)(?::`|`)([^`]+)`")
_LITERAL_LEAD = re.compile(r"(\S)::$", re.MULTILINE)


def _shown(match: re.Match[str]) -> str:
    role, target = match.group(1), match.group(2).strip()
    # "~a.b.C" shows "C"; ".b.C" (relative to the module) shows "b.C"
    target = target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target.lstrip(".")
    if role in ("meth", "func") and not target.endswith(")"):
        target += "()"
    return f"`{target}`"


def plain_markdown(text: str) -> str:
    """A docstring with Sphinx roles as code spans and ``::`` lead-ins as ``:``."""
    return _LITERAL_LEAD.sub(r"\1:", _ROLE.sub(_shown, text))


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites every docstring once, as griffe creates its object."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = plain_markdown(docstring.value)
