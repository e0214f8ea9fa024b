"""The ``stuck`` report's own parts: its summary line, what was covered (a section, and the JSON ``coverage``)
and the remedies (JSON)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rqdoctor.diagnose.run import Diagnosis
from rqdoctor.model import Snapshot
from rqdoctor.render.document import Items, Section, spans


def summary_line(snapshot: Snapshot, diagnosis: Diagnosis) -> str:
    """The first line: how many findings can be acted on."""
    actionable = sum(1 for f in diagnosis.findings if f.remedy is not None)
    return f"stuck work on {snapshot.target.redis_url}: {actionable} finding(s) that rqdoctor stuck --kill can act on"


def coverage(snapshot: Snapshot, unjudged: list[str] | None = None) -> list[str]:
    """What the run looked at, and where it stopped short (one line each); ``unjudged``: what diagnosis could
    not match."""
    lines = [f"stacks: {len(snapshot.stacks)} process(es) sampled in this snapshot (stuck's verdicts do not use them)"
             if snapshot.stacks else "stacks: not sampled (stuck judges from Redis and the process table only)"]
    scan = snapshot.redis.job_scan if snapshot.redis is not None else None
    if scan is None:
        lines.append("job hashes: not scanned")
    else:
        direct = sum(1 for j in scan.jobs if j.direct)
        how = "complete" if scan.complete else f"partial, stopped by the {scan.stopped_by or '?'}: hashes beyond " \
              "were not seen"
        lines.append(f"job hashes: {scan.keys_seen} key(s) scanned ({how}), {len(scan.jobs)} queued/started "
                     f"checked against their queues and registries" + (f", {direct} looked up by id" if direct else ""))
    frappe = snapshot.frappe
    if frappe is None:
        lines.append("Frappe leftovers: not read" + ("" if snapshot.target.bench_path else " (no bench)"))
    else:
        lines.append(f"document locks: {len(frappe.locks)} lock file(s) in {len(frappe.lock_dirs)} site lock "
                     "folder(s)")
        lines += unjudged or []
        sites = ", ".join(frappe.job_log_sites) or "none (see Could not see)"
        lines.append(f"Scheduled Job Log: read on {sites}")
    return lines


def remedies(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """The JSON report's ``remedies``: what ``stuck --kill`` may do about each finding, as data."""
    return [{"code": f.code, "subject": f.subject, **asdict(f.remedy)} for f in diagnosis.findings if f.remedy]


def coverage_section(lines: list[str]) -> Section:
    """The coverage lines, untitled, right under the summary."""
    return Section(None, (Items(tuple(spans(line) for line in lines)),))
