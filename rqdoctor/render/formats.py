"""One renderer per output format, chosen exhaustively: every :class:`Format` has exactly one."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from rqdoctor.commands.options import Format
from rqdoctor.render import jira, markdown, text
from rqdoctor.render import json as json_render
from rqdoctor.render.document import Report

Renderer = Callable[[Report, Console], None]
"""Writes a report document to a console (the terminal's, or one that buffers for ``--output``)."""

RENDERERS: dict[Format, Renderer] = {
    Format.text: text.render,
    Format.markdown: markdown.render,
    Format.json: json_render.render,
    Format.jira: jira.render,
}

_missing = set(Format) - set(RENDERERS)
if _missing:  # a new format is one renderer module plus its entry here
    raise ImportError(f"no renderer for format(s) {sorted(f.value for f in _missing)}")


def renderer(fmt: Format) -> Renderer:
    """The renderer of ``fmt``."""
    return RENDERERS[fmt]
