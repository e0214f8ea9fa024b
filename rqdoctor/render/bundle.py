"""The ``rqdoctor report`` document: everything one run saw, in the order an incident ticket reads it."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

from rqdoctor import __version__
from rqdoctor.diagnose.findings import REMEDY_ACTIONS
from rqdoctor.diagnose.run import Diagnosis
from rqdoctor.render import header
from rqdoctor.render.document import (
    Block,
    Code,
    CodeBlock,
    Fact,
    Items,
    Paragraph,
    Report,
    Section,
    Table,
    counts,
    report,
    section,
)
from rqdoctor.render.fmt import duration, short_queue, value
from rqdoctor.render.hangs import jobs_section, severity
from rqdoctor.render.layout import TEXT, Col
from rqdoctor.render.scheduler import (
    cron_blocks,
    failure_blocks,
    log_blocks,
    process_blocks,
    scheduler_view,
    site_blocks,
)
from rqdoctor.render.tables import queues_blocks, workers_blocks

NOTICE = ("This report may contain sensitive data: host and database names, job ids and arguments, SQL text, "
          "stacks and command lines. Passwords and tokens are masked; read it before sharing it.")


def bundle_report(diagnosis: Diagnosis, views: dict[str, list[dict[str, Any]]],
                  data: Callable[[], dict[str, Any]]) -> Report:
    """The bundle: header, verdict, hung jobs, stuck jobs, lock waits, workers, queues, scheduler, recent
    failures, then the findings in full and what could not be seen. ``views``: the rows of the ``jobs``,
    ``workers``, ``queues`` and ``locks`` views; ``data``: the JSON written beside it."""
    snapshot = diagnosis.context.snapshot
    prefix = snapshot.target.queue_filter
    jobs = views["jobs"]
    sections = [
        section("Verdict", *verdict(diagnosis)),
        hung_jobs(jobs, diagnosis),
        section("Stuck jobs", *stuck(diagnosis)),
        section("Lock waits", *lock_waits(views["locks"])),
        section("Workers", *workers_blocks(views["workers"], prefix, verbose=False)),
        section("Queues", *queues_blocks(views["queues"], prefix)),
        section("Scheduler", *scheduler(diagnosis, views["queues"])),
        section("Recent failures", *failures(diagnosis, views["queues"])),
    ]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.generated_at))
    found = counts(diagnosis.findings)
    head = [Fact("generated", (when,)), Fact("host", (Code(snapshot.host),)),
            Fact("rqdoctor", (f"{__version__} (Python {platform.python_version()})",)),
            Fact("findings", (", ".join(f"{n} {s}" for s, n in found.items()),))]
    target = [*head, *(f for f in header.fact_rows(snapshot) if f.label != "host")]
    line = (f"{len(jobs)} running job(s), {len(views['workers'])} worker(s), {len(views['queues'])} queue(s), "
            f"{len(views['locks'])} lock wait(s)")
    return report("report", data, target=target, summary=line, sections=sections, findings=diagnosis.findings,
                  errors=snapshot.errors, notice=NOTICE)


def hung_jobs(jobs: list[dict[str, Any]], diagnosis: Diagnosis) -> Section:
    """The jobs (a table, then each job's facts and stack folded), then each job -> process -> blocker chain."""
    table = jobs_section(jobs, diagnosis.findings, verbose=False, here=diagnosis.context.snapshot.own_host)
    return section("Hung jobs", *(table.blocks if table else ()), *chains(jobs, diagnosis))


def verdict(diagnosis: Diagnosis) -> list[Block]:
    """One line per finding, most severe first (each in full under Findings)."""
    if not diagnosis.findings:
        return [Paragraph(("No problems found in what could be seen.",), "ok")]
    ranked = sorted(diagnosis.findings, key=lambda f: ("critical", "warning", "info").index(f.severity)
                    if f.severity in ("critical", "warning", "info") else 9)
    return [Items(tuple((f"{f.severity}: {f.code} {f.title}: ", Code(f.subject)) for f in ranked))]


def _label(text: str) -> str:
    """A Mermaid node label: quoted, its quotes and angle brackets as entities."""
    return '"' + text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def chains(jobs: list[dict[str, Any]], diagnosis: Diagnosis) -> list[Block]:
    """Each running job -> its process -> what blocks it, as a Mermaid flowchart (and as lines)."""
    if not jobs:
        return [Items((("no running job",),))]
    lines = ["flowchart LR"]  # one chain per job, left to right
    items = []
    for n, job in enumerate(jobs, 1):
        level = severity(job, diagnosis.findings)
        proc = f"pid {job['pid']} ({job['runner_role']})" if job["pid"] else f"no local process ({job['location']})"
        blocker = job.get("blocker") or {}
        waits = blocker.get("summary") or ((job.get("activity") or {}).get("detail")) or "nothing seen"
        head = _label(f"job {job['job_id']} ({level})")
        lines.append(f"  j{n}[{head}] --> p{n}[{_label(proc)}]")
        lines.append(f"  p{n} --> b{n}[{_label(waits)}]")
        items.append((Code(job["job_id"]), f" → {proc} → {waits}"))
    return [CodeBlock(tuple(lines), lang="mermaid"), Items(tuple(items))]


def stuck(diagnosis: Diagnosis) -> list[Block]:
    """Findings with a remedy ``rqdoctor stuck --kill`` can apply: the work that will not finish by itself."""
    rows = [(f.code, f.subject, f.remedy.action, f.remedy.reason) for f in diagnosis.findings
            if f.remedy is not None and f.remedy.action in REMEDY_ACTIONS]
    if not rows:
        return [Items((("none: no finding has a remedy ", Code("rqdoctor stuck --kill"), " would apply"),))]
    return [Table((Col("finding"), Col("subject", code=True), Col("remedy"), Col("why", TEXT)), tuple(rows))]


LOCK_COLUMNS = (Col("server"), Col("waiting session", code=True), Col("waiting job/pid", code=True),
                Col("waited"), Col("lock"), Col("table"), Col("blocking session", code=True),
                Col("blocker job/pid", code=True), Col("blocker doing", TEXT), Col("to end it", code=True))


def lock_waits(locks: list[dict[str, Any]]) -> list[Block]:
    """The lock-wait edges as a table and as a Mermaid graph (waiter -> blocker, cycles shown as such)."""
    if not locks:
        return [Items((("no lock wait",),))]
    rows = tuple(tuple(value(v) for v in (
        r["server"], r["waiting"]["session_id"], r["waiting"]["job_id"] or r["waiting"]["pid"],
        duration(r["wait_age_s"]), r["kind"], r["table"], r["blocker"]["session_id"],
        r["blocker"]["job_id"] or r["blocker"]["pid"], r["blocker"]["doing"], r["blocker"]["kill"])) for r in locks)
    nodes: dict[tuple[str, str], str] = {}
    graph = ["flowchart LR"]

    def node(server: str, side: dict[str, Any]) -> str:
        key = (server, str(side["session_id"]))
        if key not in nodes:
            nodes[key] = f"s{len(nodes) + 1}"
            who = side.get("job_id") or (f"pid {side['pid']}" if side.get("pid") else side.get("role") or "?")
            label = _label(f"session {side['session_id']}: {who}")
            graph.append(f"  {nodes[key]}[{label}]")
        return nodes[key]

    for r in locks:
        waiter, blocker = node(r["server"], r["waiting"]), node(r["server"], r["blocker"])
        what = f"{r['kind']} {r['table'] or ''} {duration(r['wait_age_s'])}".strip()
        graph.append(f"  {waiter} -->|{_label('waits: ' + what)}| {blocker}")
    return [Table(LOCK_COLUMNS, rows), CodeBlock(tuple(graph), lang="mermaid")]


def scheduler(diagnosis: Diagnosis, queues: list[dict[str, Any]]) -> list[Block]:
    """RQ's suspension and scheduled registries, then the Frappe scheduler: its lock and process, each site's
    settings and job types (next due time, stuck job id), the Scheduled Job Log and rq's cron schedulers."""
    redis = diagnosis.context.snapshot.redis
    prefix = diagnosis.context.snapshot.target.queue_filter
    out: list[Block] = []
    if redis is None:
        out.append(Items((("Redis was not read",),)))
    else:
        scheduled = [(short_queue(q["name"], prefix), q["scheduled"]) for q in queues if q["scheduled"]]
        suspended_key = f"{diagnosis.context.snapshot.target.key_prefix}:suspended"
        out.append(Items((("RQ is suspended (", Code(suspended_key), " is set): workers take no job")
                          if redis.suspended else ("RQ is not suspended",),
                          (f"{sum(n for _, n in scheduled)} scheduled job(s)" + (" in " if scheduled else ""),
                           *(p for name, n in scheduled for p in (Code(name), f" {n} "))))))
    view = scheduler_view(diagnosis)
    return [*out, *process_blocks(view), *(site_blocks(view) if view.get("read") else ()), *log_blocks(view),
            *cron_blocks(view)]


def failures(diagnosis: Diagnosis, queues: list[dict[str, Any]]) -> list[Block]:
    """Failed-registry counts per queue, the newest failures per method with their last error line, and the
    recent failed runs per method."""
    redis = diagnosis.context.snapshot.redis
    out: list[Block] = []
    prefix = diagnosis.context.snapshot.target.queue_filter
    failed = [(short_queue(q["name"], prefix), str(q["failed"])) for q in queues if q["failed"]]
    out.append(Table((Col("queue", code=True), Col("failed")), tuple(failed)) if failed
               else Items((("no failed job in the queues' failed registries",),)))
    view = scheduler_view(diagnosis)
    if failed and view.get("read"):
        out += failure_blocks(view)
    methods = [m for m in redis.history.methods if m.failed] if redis is not None else []
    if methods:
        out.append(Table((Col("method", code=True), Col("recent failed runs"), Col("recent finished runs"),
                          Col("longest failed run")),
                         tuple((m.method, str(len(m.failed)), str(len(m.finished)), duration(max(m.failed)))
                               for m in methods)))
    return out
