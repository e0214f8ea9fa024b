"""Rendering alone, in-process: the ``hangs`` report of a recorded snapshot scaled to N running jobs, in every
format, median of N rounds.

The recorded snapshot (tests/data/snapshots/frappe-15.54.1-lockwait.json: a row-lock victim and its blocker,
with live stacks and database sessions) is copied N/2 times with fresh job ids, worker names, pids and session
ids, then diagnosed once; only the renderer is timed, into an in-memory console as ``--output`` does.
"""

from __future__ import annotations

import copy
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rqdoctor import schema
from rqdoctor.commands.hangs import report as hangs_report
from rqdoctor.commands.options import Format
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import Snapshot
from rqdoctor.render import document as doc
from rqdoctor.render import indented
from rqdoctor.render.formats import renderer
from rqdoctor.views import job_rows

RECORDED = Path(__file__).parent.parent / "tests" / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
PID_KEYS = {"pid", "ppid", "pgid", "sid", "client_pid"}
SESSION_KEYS = {"session_id", "waiting_session", "blocking_session"}


def _renamed(value: Any, k: int, names: dict[str, str]) -> Any:
    """``value`` with every pid and session id offset by ``k`` copies and every name of ``names`` suffixed."""
    if isinstance(value, dict):
        return {key: (v + 100_000 * k if key in PID_KEYS | SESSION_KEYS and isinstance(v, int) else
                      _renamed(v, k, names)) for key, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, k, names) for v in value]
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
        return value
    return value


def scaled_snapshot(jobs: int) -> Snapshot:
    """The recorded snapshot with ``jobs`` running jobs (its two, copied ``jobs // 2`` times)."""
    data = schema.upgrade(json.loads(RECORDED.read_text()))
    originals = copy.deepcopy({key: data[key] for key in ("redis", "processes", "stacks", "database")})
    names = [j["job_id"] for j in data["redis"]["jobs"]] + [w["name"] for w in data["redis"]["workers"]]
    for key in ("workers", "jobs"):
        data["redis"][key] = []
    data["processes"], data["stacks"] = [], []
    data["database"] = {**data["database"], "sessions": [], "lock_waits": []}
    for k in range(jobs // 2):
        copy_k = _renamed(originals, k, {n: f"{n}-{k}" for n in names} if k else {})
        for key in ("workers", "jobs"):
            data["redis"][key] += copy_k["redis"][key]
        data["processes"] += copy_k["processes"]
        data["stacks"] += copy_k["stacks"]
        data["database"]["sessions"] += copy_k["database"]["sessions"]
        data["database"]["lock_waits"] += copy_k["database"]["lock_waits"]
    return Snapshot.from_dict(data)


def scaled_report(jobs: int) -> doc.Report:
    """The ``hangs`` report document of :func:`scaled_snapshot`."""
    snapshot = scaled_snapshot(jobs)
    diagnosis = diagnose(snapshot)
    return hangs_report("hangs", snapshot, diagnosis, job_rows(diagnosis), verbose=False)


def console(width: int, colour: bool) -> Console:
    """An in-memory console; ``colour``: as on a terminal (ANSI styles), else as ``--output``."""
    return Console(file=io.StringIO(), width=width, height=50, highlight=False, force_terminal=colour,
                   color_system="truecolor" if colour else None)


CASES: dict[str, Callable[[], tuple[Format, Console]]] = {
    "text 80": lambda: (Format.text, console(80, False)),
    "text 200": lambda: (Format.text, console(200, False)),
    "text 120 colour": lambda: (Format.text, console(120, True)),
    "markdown": lambda: (Format.markdown, console(120, False)),
    "jira": lambda: (Format.jira, console(120, False)),
    "json": lambda: (Format.json, console(120, False)),
}


def time_case(report: doc.Report, case: str, repeats: int) -> tuple[float, int]:
    """(median seconds, lines of output) of rendering ``report`` as ``case``."""
    times, lines = [], 0
    for _ in range(repeats):
        fmt, out = CASES[case]()
        start = time.perf_counter()
        renderer(fmt)(report, out)
        times.append(time.perf_counter() - start)
        lines = out.file.getvalue().count("\n")  # type: ignore[attr-defined]
    return statistics.median(times), lines


def json_dumps(report: doc.Report, repeats: int) -> tuple[float, float, float]:
    """Median seconds of encoding the report's data: ``json.dumps`` with ``indent=2``, the renderer's
    :func:`rqdoctor.render.indented.dumps` (the same bytes), and ``json.dumps`` without an indent (C encoder)."""
    data = report.data()

    def median(encode: Callable[[], str]) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    return (median(lambda: json.dumps(data, indent=2, default=str)), median(lambda: indented.dumps(data, default=str)),
            median(lambda: json.dumps(data, default=str)))


def run(sizes: list[int], repeats: int) -> str:
    """A table: one row per size, one column per format (milliseconds, output lines), then json.dumps."""
    head = ["jobs", "findings", *CASES]
    rows = [head, ["-" * len(h) for h in head]]
    dumps = []
    for jobs in sizes:
        report = scaled_report(jobs)
        cells = [str(jobs), str(len(report.findings))]
        for case in CASES:
            seconds, lines = time_case(report, case, repeats)
            cells.append(f"{seconds * 1000:.1f} ms ({lines} lines)")
        rows.append(cells)
        stdlib, ours, compact = json_dumps(report, repeats)
        dumps.append(f"{jobs} jobs, encoding the JSON data: json.dumps indent=2 {stdlib * 1000:.1f} ms, "
                     f"indented.dumps {ours * 1000:.1f} ms, json.dumps compact {compact * 1000:.1f} ms")
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return f"{table}\n\nmedian of {repeats} rounds each\n" + "\n".join(dumps)
