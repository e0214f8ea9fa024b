"""``rqdoctor stuck``: find what will never finish; with ``--kill``, end it safely and lose no job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, fmt: FormatOpt = Format.text, output: Output = None,
            from_file: FromFile = None, verbose: Verbose = False, older_than: OlderThan = None,
            db_url: DbUrl = None, no_root_db: NoRootDb = False, kill: Kill = False, dry_run: DryRun = False,
            yes: Yes = False, kill_worker: KillWorker = False, requeue: Requeue = False,
            prune_ghosts: PruneGhosts = False, audit_log: AuditLog = None) -> None:
    """Find the work that will never finish and, with --kill, end it safely and lose no job."""
    raise NotImplementedError("issue 9: detection (commands/stuck.py) and rqdoctor.actions.flow.run_kill")
