"""``rqdoctor collect``: this host's whole snapshot as JSON, to merge with other hosts' (``--from`` repeated)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rqdoctor.commands.common import EXIT_CANNOT_DIAGNOSE, EXIT_HEALTHY, snapshot_for
from rqdoctor.commands.hangs import Blocking, Interval, Locals, Native, NoDb, Samples, collect_options
from rqdoctor.commands.options import AllQueues, Bench, DbUrl, KeyPrefix, NoRootDb, RedisUrl, Timeout
from rqdoctor.errors import RqdoctorError
from rqdoctor.render import header

SnapshotOutput = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write the snapshot to this file (mode 0600) instead of standard output.")]


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, output: SnapshotOutput = None, samples: Samples = 5,
            interval: Interval = 0.25, blocking: Blocking = False, native: Native = False,
            with_locals: Locals = False, db_url: DbUrl = None, no_db: NoDb = False, no_root_db: NoRootDb = False,
            key_prefix: KeyPrefix = None) -> None:
    """Gather this host's whole snapshot (what hangs, stuck, scheduler and report read) and write it as JSON.

    Made to run on every host of a bench and merge: `ssh HOST rqdoctor collect > HOST.json`, then
    `rqdoctor hangs --from a.json --from b.json` (docs/multihost.md). Secrets are redacted as in --format json.
    Exit 0 when written; 2 when Redis could not be read (what was seen is written all the same).
    """
    options = collect_options(timeout, samples, interval, blocking, native, with_locals, not no_db)
    options.root_db = not no_root_db
    from rqdoctor.collect_health import report_facts  # what stuck, scheduler and report read besides

    snapshot = snapshot_for(None, options, redis_url, bench, all_queues, db_url, key_prefix=key_prefix,
                            then=report_facts(timeout, not no_db))
    body = json.dumps(snapshot.to_dict(), indent=2, default=str) + "\n"
    if output is None:
        sys.stdout.write(body)
        sys.stdout.flush()
    else:
        _write_private(output, body)
        typer.echo(f"rqdoctor: snapshot of {snapshot.host} written to {output}", err=True)
    error = header.redis_error(snapshot)
    if error is not None:
        typer.echo(f"rqdoctor: error: {error.message} (Redis URL from {snapshot.target.redis_url_source}); the "
                   "snapshot holds no Redis state", err=True)
        raise typer.Exit(EXIT_CANNOT_DIAGNOSE)
    raise typer.Exit(EXIT_HEALTHY)


def _write_private(path: Path, body: str) -> None:
    """Write ``path`` readable by its owner only (replacing an earlier snapshot there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise RqdoctorError(f"{path}: cannot write ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)  # an existing file keeps no wider mode
        f.write(body)
