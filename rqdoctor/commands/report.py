"""``rqdoctor report``: run every probe once and write a bundle for an incident ticket, readable by its owner only."""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rqdoctor.bundle import HostMasker, bundle_paths, scrub, write_private
from rqdoctor.commands.common import exit_code, require_redis, snapshot_for
from rqdoctor.commands.hangs import Interval, MinAge, NoDb, Samples, collect_options
from rqdoctor.commands.locks import lock_rows
from rqdoctor.commands.options import AllQueues, Bench, DbUrl, Format, FromFile, KeyPrefix, NoRootDb, RedisUrl, Timeout
from rqdoctor.diagnose.context import DEFAULT_MIN_AGE_S
from rqdoctor.diagnose.dbjoin import access_dicts
from rqdoctor.diagnose.run import diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.redact import redact_text
from rqdoctor.render import json as json_render
from rqdoctor.render.bundle import bundle_report
from rqdoctor.render.formats import renderer
from rqdoctor.views import job_rows, queue_rows, worker_rows

SUFFIX = {Format.markdown: ".md", Format.jira: ".jira"}
"""The formats a bundle is written in, and their files' suffix (the JSON is always written beside)."""

BundleFormat = Annotated[Format, typer.Option(
    "--format", "-f", help="markdown (default) or jira (Jira wiki markup); the JSON is always written beside it.")]
BundleOutput = Annotated[Path | None, typer.Option(
    "--output", "-o", help="A directory (created owner-only; report.md and report.json inside) or a file "
    "(report.md: its JSON goes to report.json). Default: ./rqdoctor-report-<UTC time>/. Never overwrites.")]
RedactHosts = Annotated[bool, typer.Option(
    "--redact-hosts", help="Mask hostnames, site names and IP addresses (loopback kept): each one becomes the "
    "same token (host-1, ip-1…) everywhere in the bundle.")]


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 20.0, fmt: BundleFormat = Format.markdown, output: BundleOutput = None,
            from_file: FromFile = None, redact_hosts: RedactHosts = False, samples: Samples = 5,
            interval: Interval = 0.25, min_age: MinAge = DEFAULT_MIN_AGE_S, db_url: DbUrl = None,
            no_db: NoDb = False, no_root_db: NoRootDb = False, key_prefix: KeyPrefix = None) -> None:
    """Run every probe once and write a report bundle (Markdown or Jira, and its JSON) for a ticket."""
    if fmt not in SUFFIX:
        raise RqdoctorError(f"rqdoctor report writes markdown or jira, not {fmt.value}",
                            "its JSON is always written beside the report")
    options = collect_options(timeout, samples, interval, False, False, False, not no_db)
    options.root_db = not no_root_db
    from rqdoctor.collect_health import report_facts  # what stuck and scheduler read besides

    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url, key_prefix=key_prefix,
                            then=report_facts(timeout, not no_db))
    fatal = require_redis(snapshot, Format.json)  # the bundle records the failure, then exit 2
    diagnosis = diagnose(snapshot, min_age_s=min_age)
    views = {"jobs": job_rows(diagnosis), "workers": worker_rows(diagnosis), "queues": queue_rows(diagnosis),
             "locks": lock_rows(diagnosis)}
    data = scrub(json_render.report("report", diagnosis, preflight=[asdict(c) for c in snapshot.preflight],
                                    **views, database_access=access_dicts(snapshot.database)))
    buffer = io.StringIO()
    renderer(fmt)(bundle_report(diagnosis, views, lambda: data),
                  Console(file=buffer, width=120, highlight=False, color_system=None, force_terminal=False))
    body = redact_text(buffer.getvalue())
    if redact_hosts:
        masker = HostMasker(data)
        body, data = masker.text(body), masker.value(data)
    where = output or Path(time.strftime("rqdoctor-report-%Y%m%dT%H%M%SZ", time.gmtime()))
    report_path, json_path = bundle_paths(where, SUFFIX[fmt])
    write_private(report_path, body)
    write_private(json_path, json.dumps(data, indent=2, default=str) + "\n")
    typer.echo(f"rqdoctor: report written to {report_path} and {json_path} (readable by you only; it may contain "
               "sensitive data: read it before sharing)", err=True)
    if fatal is not None:
        raise fatal
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",)))
