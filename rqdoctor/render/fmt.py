"""Small value formatters shared by the text and Markdown renderers."""

from __future__ import annotations

from typing import Any


def duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``; None -> ``-``."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size(num_bytes: int | None) -> str:
    """Bytes as ``123M``."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}G"


def value(v: Any) -> str:
    """Any cell value as text (None -> ``-``)."""
    if v is None or v == "" or v == []:
        return "-"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def short_queue(name: str, prefix: str | None) -> str:
    """Drop the bench prefix from a queue name for display."""
    return name[len(prefix):] if prefix and name.startswith(prefix) else name
