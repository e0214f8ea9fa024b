"""Presentation rows computed from a diagnosis: shared by the text, Markdown and JSON renderers."""

from __future__ import annotations

import dataclasses
from typing import Any

from rqdoctor.diagnose.activity import Activity
from rqdoctor.diagnose.context import age
from rqdoctor.diagnose.run import Diagnosis
from rqdoctor.model import ProbeError, ProcessInfo, ProcKey, plain


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _flags_by_subject(diagnosis: Diagnosis) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for f in diagnosis.findings:
        flags.setdefault(f.subject, []).append(f.code)
    return flags


def worker_rows(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One row per Redis worker: identity, process, state, current job, heartbeat, horse."""
    ctx = diagnosis.context
    flags = _flags_by_subject(diagnosis)
    jobs = {j.job.job_id: j.job for j in diagnosis.links.jobs}
    rows = []
    for link in diagnosis.links.workers:
        w = link.worker
        current = w.current_job or (w.executions[0].rsplit(":", 1)[0] if w.executions else None)
        job = jobs.get(current) if current else None
        rows.append({
            "name": w.name,
            "host": w.hostname,
            "pid": w.pid,
            "location": link.location,
            "problems": link.problems,
            "state": w.state,
            "queues": w.queues,
            "current_job": current,
            "job_running_for_s": _round(age(ctx.now, job.started_at)) if job else None,
            "heartbeat_age_s": _round(age(ctx.now, w.last_heartbeat)),
            "ttl_s": w.ttl,
            "host_pid": link.process.pid if link.process else None,
            "process_host": link.host if link.process else None,
            "container": container_dict(link.process),
            "horse_pid": link.horse.pid if link.horse else None,
            "pool_parent_pid": link.pool_parent.pid if link.pool_parent else None,
            "supervisor_program": link.process.supervisor_program if link.process else None,
            "cpu_percent": link.process.cpu_percent if link.process else None,
            "rss_bytes": link.process.rss if link.process else None,
            "rq_version": w.version,
            "findings": flags.get(f"worker {w.name}", []),
        })
    return rows


def _tally(values: list[str]) -> dict[str, int]:
    """Counts, most frequent first (then by name)."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _group(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "workers": len(rows), "states": _tally([r["state"] or "unknown" for r in rows]),
            "with_findings": sum(1 for r in rows if r["findings"])}


def worker_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of :func:`worker_rows` by state, location, host and queue (the head of the ``workers`` view).

    Hosts and queues are listed with findings first, then the most workers first, then by name.
    """
    by_host: dict[str, list[dict[str, Any]]] = {}
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(r["host"] or "unknown", []).append(r)
        for q in r["queues"]:
            by_queue.setdefault(q, []).append(r)

    def groups(by: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return sorted((_group(k, v) for k, v in by.items()), key=lambda g: (-g["with_findings"], -g["workers"],
                                                                              g["name"]))

    return {"workers": len(rows), "states": _tally([r["state"] or "unknown" for r in rows]),
            "locations": _tally([r["location"] for r in rows]), "with_findings": sum(1 for r in rows if r["findings"]),
            "hosts": groups(by_host), "queues": groups(by_queue)}


def worker_priority(row: dict[str, Any]) -> int:
    """Which workers are worth showing first: with findings, then busy, then in another state than idle."""
    if row["findings"]:
        return 0
    return 1 if row["state"] == "busy" else 3 if row["state"] == "idle" else 2


def workers_shown(rows: list[dict[str, Any]], cap: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shown, not shown): the rows in :func:`worker_priority` order, at most ``cap`` of them (None: all), except
    that a worker with a finding is always shown."""
    ordered = sorted(rows, key=worker_priority)
    if cap is None:
        return ordered, []
    keep = max(cap, sum(1 for r in ordered if r["findings"]))
    return ordered[:keep], ordered[keep:]


def queue_rows(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One row per queue: counts, oldest queued age and listening workers."""
    ctx = diagnosis.context
    redis = ctx.snapshot.redis
    if redis is None:
        return []
    flags = _flags_by_subject(diagnosis)
    rows = []
    for q in redis.queues:
        listening = [lk.worker.name for lk in diagnosis.links.workers
                     if q.name in lk.worker.queues and lk.location not in ("dead", "not-found")]
        rows.append({
            "name": q.name,
            "queued": q.queued,
            "oldest_queued_age_s": _round(age(ctx.now, q.oldest_enqueued_at)),
            "started": q.started,
            "failed": q.failed,
            "finished": q.finished,
            "deferred": q.deferred,
            "scheduled": q.scheduled,
            "canceled": q.canceled,
            "listening_workers": len(listening),
            "findings": flags.get(f"queue {q.name}", []),
        })
    return rows


def container_dict(p: ProcessInfo | None) -> dict[str, Any] | None:
    """``{"name", "id", "ns_pid", "pid_ns"}`` of a process in a foreign PID namespace (None: not in one)."""
    ident = p.identity if p is not None else None
    if ident is None or not ident.foreign_ns:
        return None
    return {"name": ident.container_name, "id": ident.container_id, "ns_pid": ident.ns_pid, "pid_ns": ident.pid_ns}


def threads_of(diagnosis: Diagnosis, key: ProcKey | None) -> list[dict[str, Any]]:
    """Threads of the last stack sample of a process, frames innermost first."""
    stacks = diagnosis.context.snapshot.stacks_of(key) if key is not None else None
    if stacks is None or not stacks.samples:
        return []
    sample = stacks.samples[-1]
    source = {} if sample.source == "py-spy" else {"source": sample.source}
    return [{"thread_id": t.thread_id, "name": t.name, "active": t.active, "owns_gil": t.owns_gil,
             "frames": [{"name": f.name, "filename": f.filename, "line": f.line,
                         **({"locals": f.locals} if f.locals else {})} for f in t.frames], **source}
            for t in sample.threads]


def activity_dict(activity: Activity | None) -> dict[str, Any] | None:
    """An activity as plain JSON data."""
    if activity is None:
        return None
    return plain(activity)


def job_rows(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """Every started job joined to its process, stack activity and findings (the ``hangs`` view)."""
    ctx = diagnosis.context
    codes: dict[str, list[str]] = {}
    for f in diagnosis.findings:
        if f.job_id:
            codes.setdefault(f.job_id, []).append(f.code)
    rows = []
    for facts in ctx.job_facts(include_gone=True):
        job, link, runner = facts.link.job, facts.link, facts.link.runner
        rows.append({
            "job_id": job.job_id,
            "queue": job.queue,
            "site": job.site,
            "method": job.method,
            "status": job.status,
            "running_for_s": _round(facts.running_for_s),
            "timeout_s": facts.timeout_s,
            "usual_duration": None if facts.usual is None else {**plain(facts.usual),
                                                                "summary": facts.history()[0]},
            "worker": job.worker_name,
            "host": link.worker.hostname if link.worker else None,
            "location": link.location,
            "pid": runner.pid if runner else None,
            "process_host": ctx.snapshot.key(runner).host if runner else None,
            "container": container_dict(runner),
            "runner_role": link.runner_role,
            "gone": link.gone,
            "notes": [f"pid {runner.pid} exited during the scan: no verdict about it; run rqdoctor again"]
            if link.gone and runner else [],
            "cpu_percent": runner.cpu_percent if runner else None,
            "rss_bytes": runner.rss if runner else None,
            "activity": activity_dict(facts.activity),
            "blocker": diagnosis.blockers.get(job.job_id),
            "children": [{"pid": c.pid, "cmdline": c.cmdline, "cpu_percent": c.cpu_percent, "status": c.status}
                         for c in link.children],
            "threads": threads_of(diagnosis, ctx.snapshot.key(runner) if runner else None),
            "findings": codes.get(job.job_id, []),
        })
    return rows


@dataclasses.dataclass
class ErrorLine:
    """One "Could not see" line: a probe error, or several of one kind about different processes folded."""

    probe: str
    kind: str
    message: str
    hint: str = ""
    subjects: list[str] = dataclasses.field(default_factory=list)
    """The pids (or other subjects) it covers, in order."""


FOLDED = {"permission": "permission denied", "vanished": "exited during the scan", "timeout": "timed out",
          "unsupported": "not a readable Python process", "failed": "failed", "corrupt": "unreadable output"}
"""What a folded line says of each kind of per-process error."""
SHOWN_PIDS = 10


def fold_errors(errors: list[ProbeError]) -> list[ErrorLine]:
    """Errors of one probe, kind and hint about two or more processes become one line with a count and the pids.

    Others stay as they are, in order (a folded line stands where the first of its errors was).
    """
    groups: dict[tuple[str, str, str, str] | int, list[tuple[ProbeError, str | None]]] = {}
    for i, e in enumerate(errors):
        pid = _pid_subject(e.subject)
        key = (e.probe, e.kind, e.hint, e.host) if pid is not None else i
        groups.setdefault(key, []).append((e, pid))
    out = []
    for items in groups.values():
        first = items[0][0]
        pids = list(dict.fromkeys(pid for _, pid in items if pid is not None))
        if len(pids) < 2:
            out += [ErrorLine(e.probe, e.kind, e.message, e.hint, [e.subject] if e.subject else []) for e, _ in items]
            continue
        shown = ", ".join(pids[:SHOWN_PIDS]) + (f" and {len(pids) - SHOWN_PIDS} more" if len(pids) > SHOWN_PIDS else "")
        on = f" on {first.host}" if first.host else ""
        message = f"{FOLDED.get(first.kind, first.kind)} for {len(pids)} processes{on} (pids {shown})"
        out.append(ErrorLine(first.probe, first.kind, message, first.hint, pids))
    return out


def _pid_subject(subject: str) -> str | None:
    """The pid a subject names (``123`` or ``pid 123``), else None."""
    digits = subject.removeprefix("pid ").strip()
    return digits if digits.isdigit() else None
