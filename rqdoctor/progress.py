"""What the run is doing, on stderr while it gathers facts: only when stderr is a terminal, gone before the report.

``with status():`` shows a transient spinner line on a stderr console; :func:`show` (from any
module, any thread) changes its text, e.g. ``show("sampling 12 of 64 processes…")``. With stderr
piped or redirected nothing is printed and :func:`show` does nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Show = Callable[[str], None]
_active: Any = None
"""The rich Status being shown, if any."""


def enabled() -> bool:
    """True when stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def status(first: str = "starting…") -> Iterator[Show]:
    """Show a status line on stderr for the duration of the block (nothing when stderr is not a terminal)."""
    global _active
    if not enabled() or _active is not None:
        yield show
        return
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    current = console.status(first)
    current.start()
    _active = current
    try:
        yield show
    finally:
        _active = None
        current.stop()


def show(text: str) -> None:
    """Set the status line's text (a no-op when none is shown)."""
    current = _active
    if current is not None:
        current.update(text)
