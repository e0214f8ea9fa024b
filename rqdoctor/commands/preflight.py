"""``rqdoctor preflight``: what rqdoctor can and cannot see on this host, each gap with its fix."""

from __future__ import annotations

from dataclasses import asdict

import typer

from rqdoctor.commands.common import EXIT_CANNOT_DIAGNOSE, EXIT_HEALTHY, EXIT_PROBLEMS, checks_of, emit_report
from rqdoctor.commands.options import Bench, DbUrl, Format, FormatOpt, KeyPrefix, RedisUrl, Timeout
from rqdoctor.config import discover
from rqdoctor.deadline import Deadline
from rqdoctor.preflight import FAIL, WARN, Check, run_checks
from rqdoctor.render.document import Checks, report, section


def command(redis_url: RedisUrl = None, bench: Bench = None, db_url: DbUrl = None, timeout: Timeout = 15.0,
            fmt: FormatOpt = Format.text, key_prefix: KeyPrefix = None) -> None:
    """Check py-spy, ptrace permission, the workers' Python versions, the bench, Redis and the databases."""
    deadline = Deadline.for_run(timeout).for_probes()
    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, db_urls=db_url,
                      key_prefix=key_prefix)
    checks = run_checks(target, deadline)
    emit_report(report("preflight", lambda: {"checks": [asdict(c) for c in checks]},
                       sections=[section(None, Checks(checks_of(checks)))]), fmt, None)
    raise typer.Exit(exit_code(checks))


def exit_code(checks: list[Check]) -> int:
    """2 when a check failed, 1 for warnings only, 0 when everything is ready."""
    if any(c.status == FAIL for c in checks):
        return EXIT_CANNOT_DIAGNOSE
    return EXIT_PROBLEMS if any(c.status == WARN for c in checks) else EXIT_HEALTHY
