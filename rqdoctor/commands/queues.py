"""``rqdoctor queues``: queued, oldest, started, failed… and who listens."""

from __future__ import annotations

import typer

from rqdoctor.commands.common import emit_report, exit_code, require_redis, snapshot_for, table_report
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    Format,
    FormatOpt,
    FromFile,
    KeyPrefix,
    Output,
    RedisUrl,
    Timeout,
)


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, timeout: Timeout = 10.0,
            fmt: FormatOpt = Format.text, output: Output = None, from_file: FromFile = None,
            key_prefix: KeyPrefix = None) -> None:
    """List RQ queues: queued count, oldest queued age, registries and listening workers."""
    from rqdoctor.collect import CollectOptions  # here, not above: `queues --help` needs none of them
    from rqdoctor.diagnose.run import diagnose
    from rqdoctor.render.tables import queues_blocks
    from rqdoctor.views import queue_rows

    options = CollectOptions(timeout=timeout, cpu_window=None)  # no CPU shown: no window to wait for
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, key_prefix=key_prefix)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, codes={"RQD5"})
    rows = queue_rows(diagnosis)
    blocks = queues_blocks(rows, snapshot.target.queue_filter)
    emit_report(table_report("queues", snapshot, diagnosis, rows, blocks), fmt, output, fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",)))
