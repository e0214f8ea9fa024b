"""The plan and the actions taken as a report document (JSON: :func:`as_json`; presentation only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rqdoctor.actions.act import Result
from rqdoctor.actions.plan import Step, describe
from rqdoctor.diagnose.findings import Finding
from rqdoctor.render.document import (
    Code,
    Details,
    Fact,
    Facts,
    Items,
    Paragraph,
    Report,
    Section,
    Tone,
    section,
    spans,
)


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


RESULT_TONE: dict[str, Tone] = {"done": "ok", "nothing": "muted", "refused": "warning", "failed": "critical"}


def document(report: KillReport, with_plan: bool = True) -> Report:
    """The report document: the plan (``with_plan``; a terminal was shown it before it was confirmed), the actions
    taken, what a fresh look still finds, what the stopped jobs left behind, the audit log; JSON: :func:`as_json`."""
    sections = [plan_section(report.steps, report.grace_s, report.requeue)] if with_plan else []
    if report.results:
        sections.append(Section("Actions taken", tuple(_action(n, r, report) for n, r in enumerate(report.results, 1))))
    if report.rechecked and report.remaining:
        sections.append(Section("Still to do after a fresh look", (Items(tuple(
            (f"{f.code} {f.subject}: {f.remedy.reason if f.remedy else ''}",) for f in report.remaining)),)))
    elif report.rechecked and report.results:
        sections.append(section(None, Paragraph(("A fresh look finds nothing left to do.",), "ok")))
    if report.leftovers:
        sections.append(Section("Left behind by the stopped jobs", (Items(tuple(spans(x) for x in report.leftovers)),)))
    if report.audit_path:
        sections.append(section(None, Facts((Fact("audit log", (Code(report.audit_path),)),))))
    return Report("stuck --kill", lambda: as_json(report), sections=tuple(sections))


def plan_section(steps: list[Step], grace_s: float, requeue: bool) -> Section:
    """``Plan (n steps)``, one numbered line per step (what, to what, the finding and why), refused ones with why
    not; or that there is nothing to do."""
    if not steps:
        return section(None, Paragraph(("Plan: nothing to do (no finding has a remedy rqdoctor can carry out).",)))
    lines = tuple((f"{describe(s, grace_s, requeue)} ({s.code}: {s.remedy.reason})"
                   + (f"  [refused: {s.refused}]" if s.refused else ""),) for s in steps)
    return Section(f"Plan ({len(steps)} step{'s' if len(steps) != 1 else ''})", (Items(lines, numbered=True),))


def _action(n: int, res: Result, report: KillReport) -> Details:
    """Step ``n``: its result, what it was, what became of it, each signal or Redis change and its result."""
    changes = tuple((f"{line['change']}: {line['result']}",) for line in res.log if line["change"] != "none")
    what = f"{describe(res.step, report.grace_s, report.requeue)} ({res.step.code})"
    return Details(f"{n}. {res.result.upper()}", what, (Items(((res.detail,), *changes)),),
                   RESULT_TONE.get(res.result, "plain"))


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
