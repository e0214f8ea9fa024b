"""``rqdoctor hangs``: every running job -> its process -> its live stack -> a verdict and a fix."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from rqdoctor.collect import CollectOptions
from rqdoctor.commands.common import emit_report, exit_code, require_redis, snapshot_for, snapshot_report
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    DbUrl,
    FailOn,
    Format,
    FormatOpt,
    FromFile,
    KeyPrefix,
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
from rqdoctor.render.document import Items, Report, section, spans
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
    emit_report(report(command, snapshot, diagnosis, jobs, verbose), fmt, output, fatal)


def report(command: str, snapshot: Snapshot, diagnosis: Diagnosis, jobs: list[dict], verbose: bool) -> Report:
    """The job report: the database access lines, the jobs, then findings (``verbose``: whole stacks)."""
    local = sum(1 for j in jobs if j["location"] == "local")
    if snapshot.hosts:
        names = ", ".join(h.name for h in snapshot.hosts)
        line = f"{len(jobs)} running job(s), {local} on the {len(snapshot.hosts)} hosts collected ({names})"
    else:
        line = f"{len(jobs)} running job(s), {local} on this host ({snapshot.host})"
    access = access_lines(snapshot.database)
    sections = [section(None, Items(tuple(spans(a) for a in access)) if access else None),
                hangs_render.jobs_section(jobs, diagnosis.findings, verbose, here=snapshot.own_host)]
    return snapshot_report(command, snapshot, diagnosis, line, [s for s in sections if s and s.blocks], True,
                           preflight=[asdict(c) for c in snapshot.preflight], jobs=jobs,
                           database_access=access_dicts(snapshot.database))


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, fmt: FormatOpt = Format.text, output: Output = None,
            from_file: FromFile = None, verbose: Verbose = False, samples: Samples = 5, interval: Interval = 0.25,
            blocking: Blocking = False, native: Native = False, with_locals: Locals = False,
            min_age: MinAge = DEFAULT_MIN_AGE_S, db_url: DbUrl = None, no_db: NoDb = False,
            no_root_db: NoRootDb = False, key_prefix: KeyPrefix = None,
            fail_on: FailOn = None) -> None:
    """Show every running job: its process, live stack, what it waits on, for how long, and the fix."""
    options = collect_options(timeout, samples, interval, blocking, native, with_locals, not no_db)
    options.root_db = not no_root_db
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url, key_prefix=key_prefix)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, min_age_s=min_age)
    render("hangs", snapshot, diagnosis, job_rows(diagnosis), fmt, output, verbose, fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",), fail_on=fail_on.value if fail_on else None))
