"""Plumbing shared by the subcommands: target, snapshot source, output and exit code."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, RenderableType

from rqdoctor.commands.options import Format
from rqdoctor.errors import RqdoctorError

if TYPE_CHECKING:  # imported where used: ``--help`` needs none of them, ``--from`` neither the probes nor the rules
    from rqdoctor.collect import CollectOptions
    from rqdoctor.diagnose.run import Diagnosis
    from rqdoctor.model import Snapshot

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_CANNOT_DIAGNOSE = 0, 1, 2


def snapshot_for(from_file: Path | None, options: CollectOptions, redis_url: str | None, bench: Path | None,
                 all_queues: bool, db_urls: list[str] | None = None) -> Snapshot:
    """A saved snapshot (``--from``), or a fresh one gathered from this host."""
    if from_file is not None:
        return load_snapshot(from_file)
    from rqdoctor.collect import collect
    from rqdoctor.config import discover

    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                      db_urls=db_urls)
    return collect(target, options)


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot saved by ``--format json`` (a whole report or a bare snapshot)."""
    from rqdoctor.model import Snapshot

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RqdoctorError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RqdoctorError(f"{path}: not a JSON snapshot ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("snapshot"), dict):
        data = data["snapshot"]
    if not isinstance(data, dict):
        raise RqdoctorError(f"{path}: not a JSON snapshot (expected an object)")
    try:
        return Snapshot.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RqdoctorError(f"{path}: not a usable snapshot ({exc})",
                            "save one with `rqdoctor hangs --format json -o FILE`") from None


def require_redis(snapshot: Snapshot, fmt: Format) -> RqdoctorError | None:
    """For commands that need Redis: when it could not be read at all, one error line and exit 2.

    Text and Markdown get no report (raised here); JSON still gets its report, which records the
    failure (``--from`` reads it back): the error is returned, for :func:`emit` to raise once it is written.
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


def emit(fmt: Format, output: Path | None, text: Callable[[], list[RenderableType]],
         markdown: Callable[[], str], as_json: Callable[[], dict[str, Any]],
         fatal: RqdoctorError | None = None) -> None:
    """Write the report in the chosen format to stdout or ``--output`` (created only once it is ready).

    ``fatal`` (from :func:`require_redis`) is raised once the report is written.
    """
    _write(fmt, output, text, markdown, as_json)
    if fatal is not None:
        raise fatal


def _write(fmt: Format, output: Path | None, text: Callable[[], list[RenderableType]],
           markdown: Callable[[], str], as_json: Callable[[], dict[str, Any]]) -> None:
    if fmt is Format.json:
        body = json.dumps(as_json(), indent=2, sort_keys=False, default=str) + "\n"
    elif fmt is Format.markdown:
        body = markdown()
    else:
        renderables = text()
        if output is None:
            console = Console(highlight=False)
            for item in renderables:
                console.print(item, crop=False)
            return
        console = Console(record=True, width=120, file=io.StringIO(), highlight=False)
        for item in renderables:
            console.print(item, crop=False)
        body = console.export_text()
    if output is None:
        sys.stdout.write(body)
        return
    try:
        output.write_text(body, encoding="utf-8")
    except OSError as exc:
        raise RqdoctorError(f"{output}: cannot write ({exc.strerror or exc})") from None
    typer.echo(f"rqdoctor: report written to {output}", err=True)


def exit_code(diagnosis: Diagnosis, snapshot: Snapshot, essential: tuple[str, ...]) -> int:
    """1 when problems were found, else 2 when an essential probe failed, else 0."""
    if diagnosis.problems():
        return EXIT_PROBLEMS
    if any(e.probe in essential and e.kind not in ("corrupt", "limited", "vanished") for e in snapshot.errors):
        return EXIT_CANNOT_DIAGNOSE
    return EXIT_HEALTHY


def report_table(command: str, snapshot: Snapshot, diagnosis: Diagnosis, rows: list[dict[str, Any]],
                 text_table: Callable[[list[dict[str, Any]], str | None], RenderableType],
                 md_table: Callable[[list[dict[str, Any]], str | None], str], fmt: Format,
                 output: Path | None, fatal: RqdoctorError | None = None) -> None:
    """Emit a one-table report (``workers``, ``queues``): target, summary, table, findings and errors."""
    from rqdoctor.render import header, text
    from rqdoctor.render import json as json_render
    from rqdoctor.render import markdown as md

    prefix = snapshot.target.queue_filter
    line = f"{len(rows):,} {command} on {snapshot.target.redis_url}"
    emit(
        fmt, output,
        text=lambda: [header.text(snapshot), text.summary(line, diagnosis.findings, snapshot.errors),
                      text_table(rows, prefix), *text.findings(diagnosis.findings), *text.errors(snapshot.errors)],
        markdown=lambda: "\n".join([f"# rqdoctor {command}\n\n{header.markdown(snapshot)}\n{line}\n",
                                    md_table(rows, prefix), md.findings(diagnosis.findings, snapshot.errors),
                                    md.errors(snapshot.errors)]),
        as_json=lambda: json_render.report(command, diagnosis, **{command: rows}),
        fatal=fatal,
    )
