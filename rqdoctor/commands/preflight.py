"""``rqdoctor preflight``: what rqdoctor can and cannot see on this host, each gap with its fix."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console

from rqdoctor.commands.common import EXIT_CANNOT_DIAGNOSE, EXIT_HEALTHY, EXIT_PROBLEMS
from rqdoctor.commands.options import Bench, DbUrl, Format, FormatOpt, RedisUrl, Timeout
from rqdoctor.config import discover
from rqdoctor.deadline import Deadline
from rqdoctor.preflight import FAIL, WARN, Check, run_checks
from rqdoctor.render import markdown as md
from rqdoctor.render import text


def command(redis_url: RedisUrl = None, bench: Bench = None, db_url: DbUrl = None, timeout: Timeout = 15.0,
            fmt: FormatOpt = Format.text) -> None:
    """Check py-spy, ptrace permission, the workers' Python versions, the bench, Redis and the databases."""
    deadline = Deadline.for_run(timeout).for_probes()
    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, db_urls=db_url)
    checks = run_checks(target, deadline)
    if fmt is Format.json:
        typer.echo(json.dumps({"checks": [asdict(c) for c in checks]}, indent=2))
    elif fmt is Format.markdown:
        typer.echo(f"# rqdoctor preflight\n\n{md.preflight(checks)}", nl=False)
    else:
        console = Console(highlight=False)
        for line in text.preflight(checks):
            console.print(line, crop=False)
    raise typer.Exit(exit_code(checks))


def exit_code(checks: list[Check]) -> int:
    """2 when a check failed, 1 for warnings only, 0 when everything is ready."""
    if any(c.status == FAIL for c in checks):
        return EXIT_CANNOT_DIAGNOSE
    return EXIT_PROBLEMS if any(c.status == WARN for c in checks) else EXIT_HEALTHY
