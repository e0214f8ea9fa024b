"""The ``workers`` view at any size: a summary by state, where, queue and host, then the rows worth showing.

Shared by the text and Markdown renderers (plain strings; JSON always carries every worker).
"""

from __future__ import annotations

from typing import Any

from rqdoctor.render.fmt import short_queue

PIPE_ROWS = 50
"""Workers listed when the output is not a terminal (a pipe, a file, ``--output``, Markdown); ``-v`` lists all."""
TERMINAL_RESERVE = 15
"""Lines of a terminal's height left for the rest of the report (target, summary, notes, findings)."""
LEAST_ROWS = 10
"""Workers listed on a terminal however short it is."""
NAMED = 10
"""Hosts and queues named in the summary (the rest counted); ``-v`` names them all."""


def row_cap(verbose: bool, terminal_height: int | None) -> int | None:
    """How many workers to list: all with ``-v``, as many as the terminal shows, else :data:`PIPE_ROWS`."""
    if verbose:
        return None
    if terminal_height is None:
        return PIPE_ROWS
    return max(LEAST_ROWS, terminal_height - TERMINAL_RESERVE)


def _n(count: int) -> str:
    return f"{count:,}"


def _plural(count: int, word: str) -> str:
    return f"{_n(count)} {word}{'' if count == 1 else 's'}"


def _states(states: dict[str, int], with_findings: int = 0, skip_idle: bool = False) -> str:
    parts = [f"{_n(n)} {s}" for s, n in states.items() if not (skip_idle and s == "idle")]
    if with_findings:
        parts.append(f"{_n(with_findings)} with findings")
    return ", ".join(parts)


def _groups(noun: str, groups: list[dict[str, Any]], verbose: bool, prefix: str | None = None) -> str:
    """``by host: a 40 (2 busy), b 40, … and 15 more hosts`` (queue names without the bench prefix)."""
    named = groups if verbose else groups[:NAMED]
    parts = []
    for g in named:
        name = short_queue(g["name"], prefix)
        detail = _states(g["states"], g["with_findings"], skip_idle=True)
        parts.append(f"{name} {_n(g['workers'])}" + (f" ({detail})" if detail else ""))
    rest = len(groups) - len(named)
    if rest:
        parts.append(f"and {_n(rest)} more {noun}{'' if rest == 1 else 's'} (-v names them)")
    return f"by {noun}: " + ", ".join(parts)


def summary_lines(summary: dict[str, Any], prefix: str | None, verbose: bool) -> list[str]:
    """``1,000 workers on 25 hosts: 940 idle, 52 busy…``, then where they run, by queue and by host."""
    if not summary["workers"]:
        return []
    hosts = summary["hosts"]
    lines = [f"{_plural(summary['workers'], 'worker')} on {_plural(len(hosts), 'host')}: "
             f"{_states(summary['states'], summary['with_findings'])}",
             "where: " + ", ".join(f"{_n(n)} {where}" for where, n in summary["locations"].items())]
    if summary["queues"]:
        lines.append(_groups("queue", summary["queues"], verbose, prefix))
    lines.append(_groups("host", hosts, verbose))
    return lines


def more_line(rest: list[dict[str, Any]]) -> str:
    """What the cap left out, and how to see it."""
    states: dict[str, int] = {}
    for r in rest:
        states[r["state"] or "unknown"] = states.get(r["state"] or "unknown", 0) + 1
    counts = ", ".join(f"{_n(n)} {s}" for s, n in sorted(states.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"… and {_plural(len(rest), 'more worker')} ({counts}, none with findings): "
            "-v lists them all; --format json has every worker")
