"""Options shared by several subcommands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Format(str, Enum):
    """Output formats."""

    text = "text"
    markdown = "markdown"
    json = "json"
    jira = "jira"


class Severity(str, Enum):
    """Finding severities, most severe first."""

    critical = "critical"
    warning = "warning"
    info = "info"


FailOn = Annotated[Severity | None, typer.Option(
    "--fail-on", help="Probe mode: exit 1 only when a finding of this severity or worse exists (critical: only "
    "critical ones; info: any finding); 2 still means rqdoctor could not diagnose. Default: warning or worse.")]
RedisUrl = Annotated[str | None, typer.Option(
    "--redis-url", help="RQ's Redis, e.g. redis://:pw@host:6379/0, rediss://…, unix:///path?db=0. "
    "Default: env RQDOCTOR_REDIS_URL, FRAPPE_REDIS_QUEUE, RQ_REDIS_URL, REDIS_URL, the bench's redis_queue.")]
Bench = Annotated[Path | None, typer.Option(
    "--bench", help="Bench root (holds sites/common_site_config.json). Default: env FRAPPE_BENCH_ROOT, the "
    "current directory or a parent, else (only when no Redis URL is given) the bench of running Frappe workers; "
    "several such benches: rqdoctor lists them and asks for --bench.")]
KeyPrefix = Annotated[str | None, typer.Option(
    "--key-prefix", help="RQ's key prefix (RQ_KEY_PREFIX of rq 3.0: keys named <prefix>:worker:…). Default: env "
    "RQ_KEY_PREFIX, else the running workers' RQ_KEY_PREFIX (their /proc/<pid>/environ: root or their user), else rq.")]
AllQueues = Annotated[bool, typer.Option("--all-queues", help="Show every queue, not only this bench's.")]
Timeout = Annotated[float, typer.Option(
    "--timeout", min=1.0, max=600.0, help="Deadline of the whole run in seconds, counted from rqdoctor's start: "
    "every connection, query and py-spy run ends by then; what could not be read in time is reported as such.")]
FormatOpt = Annotated[Format, typer.Option(
    "--format", "-f", help="Output format: text (the terminal), markdown (tickets), json (scripts, --from), "
    "jira (Jira wiki markup).")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to this file.")]
FromFile = Annotated[list[Path] | None, typer.Option(
    "--from", help="Diagnose a saved snapshot (the JSON output of any command or of `rqdoctor collect`; - reads "
    "standard input) instead of this host. Repeat it to merge the snapshots of several hosts of one bench "
    "(docs/multihost.md). One of an older rqdoctor is migrated; one of a newer rqdoctor is refused.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show everything (all frames, all workers).")]
DbUrl = Annotated[list[str] | None, typer.Option(
    "--db-url", help="Database to inspect (repeatable): mysql://user:pw@host:3306/ or postgresql://user@host/db. "
    "An admin account sees every session. Default: each site's site_config.json.")]
NoRootDb = Annotated[bool, typer.Option(
    "--no-root-db", help="Use only --db-url and the site accounts: do not try the bench's root_password nor the "
    "local socket as OS root (also: env RQDOCTOR_NO_ROOT_DB=1).")]
