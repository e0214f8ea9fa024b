"""``rqdoctor hangs``: every running job -> its process -> its live stack -> a verdict and a fix."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from rqdoctor.collect import CollectOptions
from rqdoctor.commands.common import emit, exit_code, require_redis, snapshot_for
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    DbUrl,
    Format,
    FormatOpt,
    FromFile,
    NoRootDb,
    Output,
    RedisUrl,
    Timeout,
    Verbose,
)
from rqdoctor.diagnose.context import DEFAULT_MIN_AGE_S
from rqdoctor.diagnose.dbjoin import access_dicts, access_lines
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import Snapshot
from rqdoctor.render import hangs as hangs_render
from rqdoctor.render import header, text
from rqdoctor.render import json as json_render
from rqdoctor.render import markdown as md
from rqdoctor.render.layout import Para
from rqdoctor.views import job_rows

Samples = Annotated[int, typer.Option("--samples", min=1, max=20, help="Stack samples per process.")]
Interval = Annotated[float, typer.Option("--interval", min=0.05, max=5.0, help="Seconds between samples.")]
Blocking = Annotated[bool, typer.Option(
    "--blocking", help="Pause each process while dumping (exact stacks; it is resumed, and SIGCONT is sent "
    "if it was left stopped). Default: non-blocking, production processes are never paused.")]
Native = Annotated[bool, typer.Option("--native", help="Include C frames (implies --blocking).")]
Locals = Annotated[bool, typer.Option("--locals", help="Include local variables (values redacted by name).")]
MinAge = Annotated[float, typer.Option(
    "--min-age", min=0.0, help="Only call a job stalled once it has run this many seconds.")]
NoDb = Annotated[bool, typer.Option("--no-db", help="Do not inspect the databases.")]


def collect_options(timeout: float, samples: int, interval: float, blocking: bool, native: bool,
                    with_locals: bool, database: bool) -> CollectOptions:
    """Options for a stack-sampling run."""
    return CollectOptions(timeout=timeout, stacks=True, samples=samples, interval=interval,
                          blocking=blocking or native, native=native, with_locals=with_locals, database=database)


def render(command: str, snapshot: Snapshot, diagnosis: Diagnosis, jobs: list[dict], fmt: Format,
           output: Path | None, verbose: bool, fatal: RqdoctorError | None = None) -> None:
    """Emit the job report in the chosen format (``fatal``: see ``common.require_redis``)."""
    local = sum(1 for j in jobs if j["location"] == "local")
    line = f"{len(jobs)} running job(s), {local} on this host ({snapshot.host})"
    emit(
        fmt, output,
        text=lambda: [header.text(snapshot), *text.preflight(snapshot.preflight),
                      text.summary(line, diagnosis.findings, snapshot.errors),
                      *(Para(a, hang=2) for a in access_lines(snapshot.database)),
                      *hangs_render.text_jobs(jobs, diagnosis.findings, verbose),
                      *text.findings(diagnosis.findings), *text.errors(snapshot.errors)],
        markdown=lambda: "\n".join([f"# rqdoctor {command}\n\n{header.markdown(snapshot)}\n"
                                    f"{md.preflight(snapshot.preflight)}{line}\n",
                                    *md_access(snapshot), md.findings(diagnosis.findings, snapshot.errors),
                                    "## Jobs\n", hangs_render.markdown(jobs, diagnosis.findings),
                                    md.errors(snapshot.errors)]),
        as_json=lambda: json_render.report(command, diagnosis, preflight=[asdict(c) for c in snapshot.preflight],
                                           jobs=jobs, database_access=access_dicts(snapshot.database)),
        fatal=fatal,
    )


def md_access(snapshot: Snapshot) -> list[str]:
    """The database access lines as a markdown list (nothing without a database probe)."""
    lines = access_lines(snapshot.database)
    return [*(f"- {line}" for line in lines), ""] if lines else []


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, fmt: FormatOpt = Format.text, output: Output = None,
            from_file: FromFile = None, verbose: Verbose = False, samples: Samples = 5, interval: Interval = 0.25,
            blocking: Blocking = False, native: Native = False, with_locals: Locals = False,
            min_age: MinAge = DEFAULT_MIN_AGE_S, db_url: DbUrl = None, no_db: NoDb = False,
            no_root_db: NoRootDb = False) -> None:
    """Show every running job: its process, live stack, what it waits on, for how long, and the fix."""
    options = collect_options(timeout, samples, interval, blocking, native, with_locals, not no_db)
    options.root_db = not no_root_db
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, min_age_s=min_age)
    render("hangs", snapshot, diagnosis, job_rows(diagnosis), fmt, output, verbose, fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",)))
