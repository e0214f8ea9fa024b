"""Plumbing shared by the subcommands: target, snapshot source, output and exit code."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from rqdoctor.commands.options import Format
from rqdoctor.errors import RqdoctorError

if TYPE_CHECKING:  # imported where used: ``--help`` needs none of them, ``--from`` neither the probes nor the rules
    from collections.abc import Callable

    from rqdoctor.collect import CollectOptions
    from rqdoctor.config import Target
    from rqdoctor.diagnose.run import Diagnosis
    from rqdoctor.model import PreflightCheck, Snapshot
    from rqdoctor.render.document import Block, Check, Report, Section

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_CANNOT_DIAGNOSE = 0, 1, 2


def snapshot_for(from_file: list[Path] | None, options: CollectOptions, redis_url: str | None, bench: Path | None,
                 all_queues: bool, db_urls: list[str] | None = None, key_prefix: str | None = None,
                 then: Callable[[Target, Snapshot], None] | None = None) -> Snapshot:
    """A saved snapshot (``--from``; several: merged), or a fresh one gathered from this host (``then``: the
    command's further reads, done while the processes' CPU window is open, see :func:`rqdoctor.collect.collect`)."""
    if from_file:
        return load_snapshots(from_file)
    from rqdoctor.collect import collect, open_cpu_window_early
    from rqdoctor.config import discover

    early = open_cpu_window_early(options)
    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                      db_urls=db_urls, key_prefix=key_prefix)
    return collect(target, options, then=(lambda snapshot: then(target, snapshot)) if then else None, early=early)


def load_snapshots(paths: list[Path]) -> Snapshot:
    """The snapshot of one ``--from`` file, or the merge of several, one per host (:mod:`rqdoctor.merge`)."""
    from rqdoctor.merge import MergeError, merge

    if len(paths) > 1 and any(str(p) == "-" for p in paths):
        raise RqdoctorError("--from -: standard input cannot be merged with other snapshots",
                            "save each host's snapshot to a file: `ssh HOST rqdoctor collect > HOST.json`")
    try:
        return merge([(str(p), load_snapshot(p)) for p in paths])
    except MergeError as exc:
        raise RqdoctorError(str(exc)) from None


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot saved by ``--format json`` (a whole report or a bare snapshot; ``-``: standard input),
    migrated when an older rqdoctor wrote it."""
    from rqdoctor import schema
    from rqdoctor.model import Snapshot

    stdin = str(path) == "-"
    where = "stdin" if stdin else str(path)
    if stdin and sys.stdin.isatty():
        raise RqdoctorError("--from -: standard input is a terminal",
                            "pipe a snapshot in: `rqdoctor hangs --from - < FILE`")
    try:
        data = json.loads(sys.stdin.read() if stdin else path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RqdoctorError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RqdoctorError(f"{where}: not a JSON snapshot ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("snapshot"), dict):
        data = data["snapshot"]
    if not isinstance(data, dict):
        raise RqdoctorError(f"{where}: not a JSON snapshot (expected an object)")
    try:
        return Snapshot.from_dict(schema.upgrade(data))
    except schema.NewerSchema as exc:
        raise RqdoctorError(f"{where}: written by a newer rqdoctor: {exc}",
                            "upgrade rqdoctor (pip install -U rqdoctor) to read it") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RqdoctorError(f"{where}: not a usable snapshot ({exc})",
                            "save one with `rqdoctor hangs --format json -o FILE`") from None


def require_redis(snapshot: Snapshot, fmt: Format) -> RqdoctorError | None:
    """For commands that need Redis: when it could not be read at all, one error line and exit 2.

    Text and Markdown get no report (raised here); JSON still gets its report, which records the
    failure (``--from`` reads it back): the error is returned, for :func:`emit_report`
    to raise once it is written.
    """
    from rqdoctor.render import header

    error = header.redis_error(snapshot)
    if error is None:
        return None
    source = snapshot.target.redis_url_source
    failure = RqdoctorError(f"{error.message} (Redis URL from {source}); nothing diagnosed", error.hint)
    if fmt is not Format.json:
        raise failure
    return failure


def emit_report(report: Report, fmt: Format, output: Path | None, fatal: RqdoctorError | None = None) -> None:
    """Render the report document in the chosen format to stdout or ``--output`` (created only once it is ready).

    ``fatal`` (from :func:`require_redis`) is raised once the report is written.
    """
    from rqdoctor.render.formats import renderer

    render = renderer(fmt)
    if output is None:
        render(report, Console(highlight=False))
    else:
        buffer = io.StringIO()
        render(report, Console(file=buffer, width=120, highlight=False, color_system=None, force_terminal=False))
        _save(output, buffer.getvalue())
    if fatal is not None:
        raise fatal


def _save(output: Path, body: str) -> None:
    try:
        output.write_text(body, encoding="utf-8")
    except OSError as exc:
        raise RqdoctorError(f"{output}: cannot write ({exc.strerror or exc})") from None
    typer.echo(f"rqdoctor: report written to {output}", err=True)


def snapshot_report(command: str, snapshot: Snapshot, diagnosis: Diagnosis, summary: str,
                    sections: list[Section], with_checks: bool = False, **data: Any) -> Report:
    """The report document of a diagnosing command: its target, summary line, sections, findings and errors
    (``with_checks``: the preflight checks its stack dumps failed, first); ``data``: the command's own JSON
    sections (``jobs=…``), around which the JSON report is built."""
    from rqdoctor.render import document, header
    from rqdoctor.render import json as json_render

    return document.report(command, lambda: json_render.report(command, diagnosis, **data),
                           target=header.fact_rows(snapshot),
                           checks=checks_of(snapshot.preflight) if with_checks else (),
                           summary=summary, sections=sections, findings=diagnosis.findings, errors=snapshot.errors)


def checks_of(checks: list[PreflightCheck]) -> tuple[Check, ...]:
    """Preflight results as document checks."""
    from rqdoctor.render.document import Check

    return tuple(Check(c.status, c.name, c.detail, tuple(c.fix)) for c in checks)


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def exit_code(diagnosis: Diagnosis, snapshot: Snapshot, essential: tuple[str, ...], fail_on: str | None = None) -> int:
    """1 when problems were found (with ``fail_on``: a finding of that severity or worse), else 2 when an essential
    probe failed, else 0."""
    if fail_on is not None:
        if any(SEVERITY_RANK.get(f.severity, 9) <= SEVERITY_RANK[fail_on] for f in diagnosis.findings):
            return EXIT_PROBLEMS
    elif diagnosis.problems():
        return EXIT_PROBLEMS
    if any(e.probe in essential and e.kind not in ("corrupt", "limited", "vanished") for e in snapshot.errors):
        return EXIT_CANNOT_DIAGNOSE
    return EXIT_HEALTHY


def table_report(command: str, snapshot: Snapshot, diagnosis: Diagnosis, rows: list[dict[str, Any]],
                 blocks: list[Block]) -> Report:
    """A one-table report (``workers``, ``queues``): target, summary, the view's blocks, findings and errors."""
    from rqdoctor.render.document import Section

    line = f"{len(rows):,} {command} on {snapshot.target.redis_url}"
    return snapshot_report(command, snapshot, diagnosis, line, [Section(None, tuple(blocks))], **{command: rows})
