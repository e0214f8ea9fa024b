"""``rqdoctor demo``: start real workers running shipped hang scenarios, diagnose them, clean up."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from rqdoctor.collect import CollectOptions, collect
from rqdoctor.commands.common import EXIT_CANNOT_DIAGNOSE, EXIT_HEALTHY
from rqdoctor.commands.hangs import render
from rqdoctor.commands.options import Format, FormatOpt, Timeout, Verbose
from rqdoctor.config import DEFAULT_REDIS_URL, discover, parse_db_url
from rqdoctor.demo import LOCAL_DATABASES, Demo
from rqdoctor.diagnose.run import diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import Snapshot
from rqdoctor.redact import redact_url
from rqdoctor.views import job_rows

DemoRedisUrl = Annotated[str, typer.Option(
    "--redis-url", help="A Redis the demo may use. It takes an empty DB (the one the URL names, else the highest "
    "empty one of 15…1), claims it with a marker key and FLUSHes it at the end.")]
Keep = Annotated[float, typer.Option(
    "--keep", min=0.0, max=3600.0, help="Leave the scenarios running this many seconds after the report, to run "
    "`rqdoctor hangs` on them yourself (Ctrl-C ends it early).")]
DemoDbUrl = Annotated[str | None, typer.Option(
    "--db-url", help="MariaDB/MySQL or PostgreSQL server for the row-lock scenario (it creates and drops a "
    "database there). Default: root@127.0.0.1:3306, then postgres@127.0.0.1:5432.")]
NoDb = Annotated[bool, typer.Option("--no-db", help="Skip the database row-lock scenario.")]


def _say(message: str) -> None:
    typer.echo(f"rqdoctor demo: {message}", err=True)


def _fail(exc: RqdoctorError) -> NoReturn:
    _say(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    raise typer.Exit(EXIT_CANNOT_DIAGNOSE)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the cleanup in `finally`, as on Ctrl-C


def command(redis_url: DemoRedisUrl = DEFAULT_REDIS_URL, fmt: FormatOpt = Format.text, timeout: Timeout = 20.0,
            keep: Keep = 0.0, db_url: DemoDbUrl = None, no_db: NoDb = False, verbose: Verbose = False) -> None:
    """Run shipped hang scenarios on real RQ workers against a local Redis and show the `hangs` report."""
    try:
        import rq  # noqa: F401 - only checks that the demo extra is installed
    except ImportError:
        _say("needs the rq library: pip install 'rqdoctor[demo]'")
        raise typer.Exit(EXIT_CANNOT_DIAGNOSE) from None
    try:
        candidates = [] if no_db else [parse_db_url(u) for u in ([db_url] if db_url else LOCAL_DATABASES)]
    except RqdoctorError as exc:
        _fail(exc)
    demo = Demo(redis_url, keep_s=keep, db_candidates=candidates, say=_say)
    try:
        demo.claim()
    except RqdoctorError as exc:
        _fail(exc)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            demo.start()
        except RqdoctorError as exc:
            _fail(exc)
        _say(f"{len(demo.workers)} RQ workers on {redact_url(demo.redis_url)}, one hung job each:")
        for s in demo.scenarios:
            _say(f"  {s.queue:<28} {s.what}")
        _say("running `rqdoctor hangs` on them…")
        _report(demo, fmt, timeout, verbose)
        if keep:
            db_urls = "".join(f" --db-url {d.redacted()}" for d in demo.db_targets())
            _say(f"the scenarios keep running for {keep:.0f} s (Ctrl-C ends it): try "
                 f"`rqdoctor hangs --redis-url {redact_url(demo.redis_url)} --all-queues{db_urls}`")
            time.sleep(keep)
    finally:
        _say(demo.cleanup())
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(EXIT_HEALTHY)


def _report(demo: Demo, fmt: Format, timeout: float, verbose: bool) -> None:
    """The ``hangs`` pipeline on the demo's private Redis DB and database, limited to its own processes."""
    target = discover(redis_url=demo.redis_url, all_queues=True, env={}, cwd=Path("/"), scan_processes=False)
    target.db_targets = demo.db_targets()
    options = CollectOptions(timeout=timeout, stacks=True, database=bool(target.db_targets),
                             since_process_start=False)
    snapshot = collect(target, options)
    _scope(snapshot, demo.pids())
    diagnosis = diagnose(snapshot, min_age_s=0)
    render("demo", snapshot, diagnosis, job_rows(diagnosis), fmt, None, verbose)


def _scope(snapshot: Snapshot, pids: set[int]) -> None:
    """Keep only the demo's own processes (other worker-like processes on this host are not its business)."""
    snapshot.processes = [p for p in snapshot.processes if p.pid in pids]
    snapshot.stacks = [s for s in snapshot.stacks if s.pid in pids]
    snapshot.errors = [e for e in snapshot.errors if not _foreign(e.probe, e.subject, pids)]


def _foreign(probe: str, subject: str | None, pids: set[int]) -> bool:
    """A process or stack error about pids none of which is the demo's."""
    named = {int(n) for n in re.findall(r"\d+", subject or "")}
    return probe in ("processes", "stacks") and bool(named) and not named & pids
