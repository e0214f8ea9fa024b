"""The plan and the actions taken, as text, Markdown or JSON (presentation only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rqdoctor.actions.act import Result
from rqdoctor.actions.plan import Step, describe
from rqdoctor.diagnose.findings import Finding


@dataclass
class KillReport:
    """Everything ``stuck --kill`` shows at the end."""

    steps: list[Step]
    results: list[Result] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)
    """Actionable findings of the fresh snapshot taken after acting."""
    rechecked: bool = False
    leftovers: list[str] = field(default_factory=list)
    """Frappe leftovers of the stopped jobs (locks, logs left at Start), one line each."""
    audit_path: str = ""
    exit_code: int = 0
    dry_run: bool = False
    grace_s: float = 10.0
    requeue: bool = False


def plan_lines(steps: list[Step], grace_s: float, requeue: bool) -> list[str]:
    """``Plan:`` then one numbered line per step, refused ones marked with why."""
    if not steps:
        return ["Plan: nothing to do (no finding has a remedy rqdoctor can carry out)."]
    lines = [f"Plan ({len(steps)} step{'s' if len(steps) != 1 else ''}):"]
    for n, step in enumerate(steps, 1):
        mark = f"  [refused: {step.refused}]" if step.refused else ""
        lines.append(f"  {n}. {describe(step, grace_s, requeue)} ({step.code}: {step.remedy.reason}){mark}")
    return lines


def text(report: KillReport) -> str:
    """The plain-text report: the actions taken, what is left, the audit log."""
    lines = []
    if report.results:
        lines.append("Actions taken:")
        for n, res in enumerate(report.results, 1):
            lines.append(f"  {n}. {res.result.upper()}: {describe(res.step, report.grace_s, report.requeue)}")
            lines.append(f"     {res.detail}")
            lines += [f"     - {line['change']}: {line['result']}" for line in res.log if line["change"] != "none"]
    lines += _after(report)
    return "\n".join(lines) + "\n"


def _after(report: KillReport) -> list[str]:
    lines = []
    if report.rechecked:
        if report.remaining:
            lines.append("Still to do after a fresh look:")
            lines += [f"  - {f.code} {f.subject}: {f.remedy.reason if f.remedy else ''}" for f in report.remaining]
        elif report.results:
            lines.append("A fresh look finds nothing left to do.")
    if report.leftovers:
        lines.append("Left behind by the stopped jobs:")
        lines += [f"  - {line}" for line in report.leftovers]
    if report.audit_path:
        lines.append(f"Audit log: {report.audit_path}")
    return lines


def markdown(report: KillReport) -> str:
    """The report as Markdown: the plan and the actions as tables."""
    out = ["# rqdoctor stuck --kill", "", "## Plan", ""]
    out += [line.strip() for line in plan_lines(report.steps, report.grace_s, report.requeue)[1:]] or ["Nothing to do."]
    if report.results:
        out += ["", "## Actions taken", "", "| # | Result | Action | Detail |", "|---|---|---|---|"]
        for n, res in enumerate(report.results, 1):
            cells = [res.result, describe(res.step, report.grace_s, report.requeue), res.detail]
            out.append(f"| {n} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rest = _after(report)
    if rest:
        out += ["", "## After", "", *[f"- {line.strip(' -')}" for line in rest]]
    return "\n".join(out) + "\n"


def as_json(report: KillReport) -> dict[str, Any]:
    """The report as plain data (``--format json``)."""
    return {
        "command": "stuck --kill",
        "dry_run": report.dry_run,
        "exit_code": report.exit_code,
        "plan": [{"action": s.action, "finding": s.code, "also": s.also, "subject": s.subject,
                  "description": describe(s, report.grace_s, report.requeue), "reason": s.remedy.reason,
                  "refused": s.refused} for s in report.steps],
        "actions": [{"action": r.step.action, "finding": r.step.code, "result": r.result, "detail": r.detail,
                     "audit": r.log} for r in report.results],
        "rechecked": report.rechecked,
        "remaining": [{"code": f.code, "subject": f.subject, "action": f.remedy.action if f.remedy else None}
                      for f in report.remaining],
        "leftovers": report.leftovers,
        "audit_log": report.audit_path,
    }
