"""``stuck --kill``: plan from the findings' remedies, confirm, act, verify, audit.

Exit codes of ``run_kill`` (also in ``docs/actions.md``):

- 0: everything planned was done, or there was nothing to do;
- 1: ``--dry-run`` with something to do (the plan was printed, nothing changed);
- 2: cannot diagnose: Redis could not be read for the plan, or cannot be reached to act (nothing signalled);
- 3: refused: not confirmed (no terminal and no ``--yes``, or the answer was no: nothing done), or a step
  was refused (a flag it needs was not given, or re-verification failed) while the others were done;
- 4: failed: a step was attempted and did not reach its expected state (or the audit log cannot be written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console

from rqdoctor.actions import report as render
from rqdoctor.actions.act import Actor
from rqdoctor.actions.audit import default_path, open_log
from rqdoctor.actions.identity import this_host
from rqdoctor.actions.plan import Step, build_plan, step_key
from rqdoctor.commands.common import emit_report
from rqdoctor.commands.options import Format
from rqdoctor.diagnose.findings import REMEDY_ACTIONS, Finding
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import Snapshot
from rqdoctor.redact import MASK, shown_url
from rqdoctor.render import text
from rqdoctor.render.document import Report
from rqdoctor.rqkeys import Keys

EXIT_DONE, EXIT_PLANNED, EXIT_CANNOT_DIAGNOSE, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 3, 4
REDIS_TIMEOUT_S = 5.0
"""Socket and connect timeout of the connection the actions write through."""

Refresh = Callable[[list[str]], Snapshot]


@dataclass
class KillOptions:
    """What the user allowed on the command line."""

    dry_run: bool = False
    yes: bool = False
    kill_worker: bool = False
    requeue: bool = False
    prune_ghosts: bool = False
    audit_log: Path | None = None
    grace_s: float = 10.0
    fmt: Format = Format.text
    output: Path | None = None
    redis_url: str | None = field(default=None, repr=False)
    """The real Redis URL (the snapshot holds only a redacted one); None: the snapshot's, if it holds no mask."""
    refresh: Refresh | None = field(default=None, repr=False)
    """A fresh ``stuck`` snapshot of the same target with these job ids' hashes read directly, taken after
    acting to prove nothing is left and to find the stopped jobs' Frappe leftovers; None: no re-check."""


def run_kill(snapshot: Snapshot, findings: list[Finding], options: KillOptions) -> int:
    """Plan, confirm, act and verify; return the exit code (see the module docstring)."""
    if snapshot.redis is None:
        _err("Redis could not be read, so there is no plan: nothing signalled, nothing changed")
        return EXIT_CANNOT_DIAGNOSE
    host = this_host()
    flags = {name for name, given in (("--kill-worker", options.kill_worker), ("--prune-ghosts", options.prune_ghosts),
                                      ("--requeue", options.requeue)) if given}
    steps = build_plan(findings, flags, host)
    report = render.KillReport(steps, dry_run=options.dry_run, grace_s=options.grace_s, requeue=options.requeue)
    _show_plan(steps, options)
    runnable = [s for s in steps if not s.refused]
    if not steps:
        return _emit(report, options, EXIT_DONE)
    if options.dry_run:
        return _emit(report, options, EXIT_PLANNED if runnable else EXIT_REFUSED)
    if not runnable:
        _err("every step is refused (see the plan): nothing done")
        return _emit(report, options, EXIT_REFUSED)
    if not _confirmed(len(runnable), options.yes):
        return _emit(report, options, EXIT_REFUSED)
    code = _act(snapshot, steps, options, host, report)
    if code is not None:
        return _emit(report, options, code)
    _recheck(snapshot, report, options)
    return _emit(report, options, _exit_code(report))


def _act(snapshot: Snapshot, steps: list[Step], options: KillOptions, host: str,
         report: render.KillReport) -> int | None:
    """Connect, open the audit log, carry out every step; an exit code when nothing could be started."""
    from rqdoctor.probes.redis_rq import connect

    url = options.redis_url or snapshot.target.redis_url
    if MASK in url and not options.redis_url:
        _err(f"the snapshot holds only a masked Redis URL ({shown_url(url)}): nothing done")
        return EXIT_CANNOT_DIAGNOSE
    try:
        client = connect(url, REDIS_TIMEOUT_S)
    except RqdoctorError as exc:
        _err(f"{exc.message}: nothing signalled, nothing changed")
        return EXIT_CANNOT_DIAGNOSE
    path = options.audit_log or default_path()
    try:
        audit = open_log(path, host)
    except OSError as exc:
        client.close()
        _err(f"cannot open the audit log {path} ({exc.strerror or exc}): nothing done (use --audit-log PATH)")
        return EXIT_FAILED
    report.audit_path = str(audit.path)
    versions = {w.name: w.version or "" for w in snapshot.redis.workers} if snapshot.redis else {}
    actor = Actor(client, audit, host, options.kill_worker, options.requeue, options.grace_s, versions, audit.user,
                  Keys(snapshot.target.key_prefix))
    try:
        report.results = [actor.run(step) for step in steps]
    finally:
        audit.close()
        client.close()
    return None


def _recheck(snapshot: Snapshot, report: render.KillReport, options: KillOptions) -> None:
    """A fresh snapshot, diagnosed by the ``stuck`` rules: what is still actionable, what the stopped jobs left."""
    if options.refresh is None:
        return
    from rqdoctor.diagnose.leftovers import leftovers
    from rqdoctor.diagnose.rules_queues import TARGET_CODES
    from rqdoctor.diagnose.rules_stuck import STUCK_CODES
    from rqdoctor.diagnose.run import diagnose

    stopped = sorted({j for r in report.results if r.result == "done" and (j := r.step.remedy.job_id)})
    fresh = options.refresh(stopped)
    report.rechecked = True
    findings = diagnose(fresh, codes=set(STUCK_CODES | TARGET_CODES)).findings
    report.remaining = [f for f in findings if f.remedy is not None and f.remedy.action in REMEDY_ACTIONS]
    killed = [j for j in snapshot.redis.jobs if j.job_id in stopped] if snapshot.redis else []
    report.leftovers = [f"{f.code} {f.subject}: {f.fix}" for f in leftovers(fresh, stopped, killed)]


def _exit_code(report: render.KillReport) -> int:
    done_keys = {step_key(r.step.remedy) for r in report.results if r.result == "done"}
    still = [f for f in report.remaining if f.remedy is not None and step_key(f.remedy) in done_keys]
    if still or any(r.result == "failed" for r in report.results):
        for finding in still:
            _err(f"{finding.code} {finding.subject} is still there after its step was done")
        return EXIT_FAILED
    if any(r.result == "refused" for r in report.results):
        return EXIT_REFUSED
    return EXIT_DONE


def _confirmed(count: int, yes: bool) -> bool:
    """``--yes``, or a terminal whose user answers yes; a non-terminal without ``--yes`` is refused."""
    if yes:
        return True
    if not _is_terminal():
        _err("not on a terminal and --yes not given: nothing done (give --yes to act from a script)")
        return False
    try:
        answer = typer.confirm(f"Carry out {count} step{'s' if count != 1 else ''}?", default=False, err=True)
    except (typer.Abort, EOFError):
        answer = False
    if not answer:
        _err("not confirmed: nothing done")
    return answer


def _is_terminal() -> bool:
    return sys.stdin.isatty()


def _show_plan(steps: list[Step], options: KillOptions) -> None:
    """The plan goes first, to stdout for a text report on stdout, else to stderr (the report stays clean)."""
    to_stderr = options.fmt is not Format.text or options.output is not None
    plan = Report("stuck --kill", dict, sections=(render.plan_section(steps, options.grace_s, options.requeue),))
    text.render(plan, Console(stderr=to_stderr, highlight=False))


def _emit(report: render.KillReport, options: KillOptions, code: int) -> int:
    """Write the final report in the chosen format (with the plan, unless a terminal was just shown it);
    returns ``code``, also when the report cannot be written."""
    report.exit_code = code
    with_plan = options.fmt is not Format.text or options.output is not None
    try:
        emit_report(render.document(report, with_plan), options.fmt, options.output)
    except RqdoctorError as exc:
        _err(exc.message)
    return code


def _err(message: str) -> None:
    typer.echo(f"rqdoctor: {message}", err=True)
