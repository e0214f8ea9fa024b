"""``rqdoctor workers``: every RQ worker, its process, state, current job and heartbeat."""

from __future__ import annotations

import typer

from rqdoctor.commands.common import emit_report, exit_code, require_redis, snapshot_for, table_report
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    FailOn,
    Format,
    FormatOpt,
    FromFile,
    KeyPrefix,
    Output,
    RedisUrl,
    Timeout,
    Verbose,
)


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, timeout: Timeout = 10.0,
            fmt: FormatOpt = Format.text, output: Output = None, from_file: FromFile = None,
            verbose: Verbose = False, key_prefix: KeyPrefix = None, fail_on: FailOn = None) -> None:
    """List RQ workers with their local process, state, current job, heartbeat age and horse.

    Text and Markdown open with counts by state, where, queue and host, then list the workers worth showing
    (with findings, busy, then the others) as far as the terminal shows (50 when piped); -v lists them all,
    --format json always has every worker.
    """
    from rqdoctor.collect import CollectOptions  # here, not above: `workers --help` needs none of them
    from rqdoctor.diagnose.rules_queues import TARGET_CODES
    from rqdoctor.diagnose.run import diagnose
    from rqdoctor.render.tables import workers_blocks
    from rqdoctor.views import worker_rows

    snapshot = snapshot_for(from_file, CollectOptions(timeout=timeout), redis_url, bench, all_queues,
                            key_prefix=key_prefix)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, codes={"RQD2", *TARGET_CODES})
    rows = worker_rows(diagnosis)
    blocks = workers_blocks(rows, snapshot.target.queue_filter, verbose)
    emit_report(table_report("workers", snapshot, diagnosis, rows, blocks), fmt, output, fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",), fail_on=fail_on.value if fail_on else None))
