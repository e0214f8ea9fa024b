"""``rqdoctor scheduler``: is the Frappe scheduler running, and does every site's scheduled work get done?"""

from __future__ import annotations

import typer

from rqdoctor.commands.common import emit_report, exit_code, load_snapshots, snapshot_report
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
from rqdoctor.config import discover
from rqdoctor.diagnose.rules_sched import SCHED_CODES
from rqdoctor.diagnose.run import diagnose
from rqdoctor.render.document import section
from rqdoctor.render.scheduler import (
    cron_blocks,
    failure_blocks,
    log_blocks,
    process_blocks,
    scheduler_view,
    site_blocks,
)


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, timeout: Timeout = 15.0,
            fmt: FormatOpt = Format.text, output: Output = None, from_file: FromFile = None,
            key_prefix: KeyPrefix = None) -> None:
    """Check the scheduler: its process and lock, each site's pause keys, skipped, stuck and failing jobs.

    Read-only: the lock on config/scheduler_process is only tried (non-blocking) and released at once. Redis is
    not required: without it the Redis-side checks are error entries.
    """
    if from_file:
        snapshot = load_snapshots(from_file)
    else:
        from rqdoctor.collect_health import collect_health

        target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                          key_prefix=key_prefix)
        snapshot = collect_health(target, timeout)
    diagnosis = diagnose(snapshot, codes=set(SCHED_CODES))
    view = scheduler_view(diagnosis)
    sites = view.get("sites") or []
    summary = (f"{len(sites)} site(s), scheduler lock {view['lock']['state'] if view.get('lock') else 'not probed'}, "
               f"{len(view.get('processes') or [])} frappe schedule process(es)")
    sections = [section("Scheduler process", *process_blocks(view)), section("Sites", *site_blocks(view)),
                section("Scheduled Job Log", *log_blocks(view)), section("rq cron schedulers", *cron_blocks(view)),
                section("Recent failures", *failure_blocks(view))]
    report = snapshot_report("scheduler", snapshot, diagnosis, summary, [s for s in sections if s.blocks],
                             scheduler=view)
    emit_report(report, fmt, output)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("scheduler", "redis")))
