"""``rqdoctor stuck``: find what will never finish; with ``--kill``, end it safely and lose no job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from rqdoctor.collect_stuck import collect_stuck
from rqdoctor.commands.common import emit_report, exit_code, load_snapshots, require_redis, snapshot_report
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
    Verbose,
)
from rqdoctor.config import Target, discover
from rqdoctor.diagnose.rules_queues import TARGET_CODES
from rqdoctor.diagnose.rules_stuck import STUCK_CODES, unjudged_locks
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import Snapshot
from rqdoctor.render import stuck as stuck_render
from rqdoctor.render.document import Report

OlderThan = Annotated[str | None, typer.Option(
    "--older-than", help="Also treat running jobs older than this as stuck (e.g. 90s, 30m, 2h).")]
Kill = Annotated[bool, typer.Option("--kill", help="End the stuck work: print the plan, confirm, act, verify.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="With --kill: print the plan only; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="With --kill: do not ask (required when not on a terminal).")]
KillWorker = Annotated[bool, typer.Option(
    "--kill-worker", help="With --kill: also signal worker processes that run the job themselves "
    "(SimpleWorker, Frappe NoFork).")]
Requeue = Annotated[bool, typer.Option(
    "--requeue", help="With --kill: put orphaned started jobs back on their queue instead of failing them.")]
PruneGhosts = Annotated[bool, typer.Option(
    "--prune-ghosts", help="With --kill: remove ghost worker hashes (no process, no Redis connection).")]
AuditLog = Annotated[Path | None, typer.Option(
    "--audit-log", help="Append one JSON line per action here. Default: $XDG_STATE_HOME/rqdoctor/audit.jsonl "
    "(~/.local/state/rqdoctor/audit.jsonl).")]
Grace = Annotated[float, typer.Option(
    "--grace", min=0.0, max=300.0, help="With --kill: seconds a process gets after SIGTERM before SIGKILL.")]


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, fmt: FormatOpt = Format.text, output: Output = None,
            from_file: FromFile = None, verbose: Verbose = False, older_than: OlderThan = None,
            kill: Kill = False, dry_run: DryRun = False,
            yes: Yes = False, kill_worker: KillWorker = False, requeue: Requeue = False,
            prune_ghosts: PruneGhosts = False, audit_log: AuditLog = None, grace: Grace = 10.0,
            key_prefix: KeyPrefix = None) -> None:
    """Find the work that will never finish and, with --kill, end it safely and lose no job.

    Read-only without --kill: started entries no process runs, jobs past their timeout (and why RQ's hard kill
    did not come), orphaned, stopped and zombie horses, busy workers with no job, ghost workers, zombie job hashes
    (Frappe scheduled jobs above all) and Frappe leftovers (document lock files, Scheduled Job Log rows in Start).
    """
    older_than_s = parse_duration(older_than) if older_than is not None else None
    kill_only = [flag for flag, given in (("--dry-run", dry_run), ("--yes", yes), ("--kill-worker", kill_worker),
                                          ("--requeue", requeue), ("--prune-ghosts", prune_ghosts),
                                          ("--audit-log", audit_log is not None), ("--grace", grace != 10.0))
                 if given]
    if kill_only and not kill:
        raise RqdoctorError(f"{', '.join(kill_only)} only apply with --kill")
    if kill and from_file:
        several = " (of several hosts: run `rqdoctor stuck --kill` on the host each process runs on)" \
            if len(from_file) > 1 else ""
        raise RqdoctorError(f"--kill cannot act on --from FILE: a saved snapshot cannot be acted on{several}")
    target: Target | None = None
    if from_file:
        snapshot = load_snapshots(from_file)
    else:
        target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                          key_prefix=key_prefix)
        snapshot = collect_stuck(target, timeout)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, codes=set(STUCK_CODES | TARGET_CODES), older_than_s=older_than_s)
    if kill and fatal is None and target is not None:
        from rqdoctor.actions.flow import KillOptions, run_kill

        live = target
        options = KillOptions(dry_run=dry_run, yes=yes, kill_worker=kill_worker, requeue=requeue,
                              prune_ghosts=prune_ghosts, audit_log=audit_log, grace_s=grace, fmt=fmt, output=output,
                              redis_url=live.redis_url,
                              refresh=lambda ids: collect_stuck(live, timeout, known_ids=ids, fresh=True))
        raise typer.Exit(run_kill(snapshot, diagnosis.findings, options))
    emit_report(report(snapshot, diagnosis, older_than_s), fmt, output, fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("redis",)))


def report(snapshot: Snapshot, diagnosis: Diagnosis, older_than_s: float | None) -> Report:
    """What was covered, then the findings; JSON: the coverage lines, ``--older-than`` and the remedies."""
    coverage = stuck_render.coverage(snapshot, unjudged_locks(diagnosis.context))
    return snapshot_report("stuck", snapshot, diagnosis, stuck_render.summary_line(snapshot, diagnosis),
                           [stuck_render.coverage_section(coverage)], coverage=coverage, older_than_s=older_than_s,
                           remedies=stuck_render.remedies(diagnosis))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(value: str) -> float:
    """Seconds from ``90s``, ``30m``, ``2h``, ``1d`` (a bare number is seconds); a bad value is a one-line error."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise RqdoctorError(f"--older-than {value!r}: not a duration (use e.g. 90s, 30m, 2h, 1d)")
    return float(match[1]) * _UNITS[match[2] or "s"]
