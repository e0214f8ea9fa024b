"""The ``hangs`` / ``stack`` report's jobs as a document section: a one-line-per-job table, then one block per
job (folded in a ``<details>`` in Markdown)."""

from __future__ import annotations

from typing import Any

from rqdoctor.diagnose.activity import short_path
from rqdoctor.diagnose.findings import Finding
from rqdoctor.render.document import Block, CodeBlock, Details, Items, Section, Table, Tone, spans
from rqdoctor.render.fmt import duration, size, value
from rqdoctor.render.layout import TEXT, Col

TRIMMED_FRAMES = 8

def in_container(job: dict[str, Any]) -> str:
    """`` in container NAME (ID) pid N`` for a job run in a container (host pid first), else empty."""
    ctr = job.get("container")
    if not ctr:
        return ""
    short = f" ({ctr['id'][:12]})" if ctr.get("id") else ""
    return f" in container {ctr.get('name') or '?'}{short} pid {ctr.get('ns_pid')}"


def on_host(job: dict[str, Any], here: str | None) -> str:
    """`` on HOST`` for a job whose process runs on another host than ``here`` (``Snapshot.own_host``: empty when
    merged from several hosts, where every process is named with its host; None: never), else empty."""
    host = job.get("process_host")
    return f" on {host}" if here is not None and host and host != here else ""


def facts_lines(job: dict[str, Any], here: str | None) -> list[str]:
    """The key facts of one job as short lines (shared by text and Markdown); ``here``: see :func:`on_host`."""
    timeout = f", timeout {duration(job['timeout_s'])}" if job["timeout_s"] not in (None, -1) else ""
    lines = [f"queue {job['queue']}, status {value(job['status'])}, running {duration(job['running_for_s'])}{timeout}"]
    if job.get("usual_duration"):
        lines.append(job["usual_duration"]["summary"])
    if job["location"] == "remote":
        lines.append(f"runs on host {job['host']} (worker {job['worker']}): no process or stack from here")
    elif job["pid"]:
        lines.append(f"pid {job['pid']} ({job['runner_role']}){in_container(job)}{on_host(job, here)} of worker "
                     f"{value(job['worker'])}, "
                     f"CPU {value(job['cpu_percent'])} %, RSS {size(job['rss_bytes'])}")
    else:
        lines.append(f"no local process found for worker {value(job['worker'])}")
    lines += job.get("notes", [])
    activity = job["activity"]
    if activity:
        lines.append(f"{activity['kind']} ({activity['progress']}): {activity['detail']}")
        where = activity.get("where")
        if where:
            lines.append(f"in your code: {short_path(where['filename'])}:{where['line']} {where['name']}")
    blocker = job.get("blocker")
    if blocker:
        lines.append(f"blocked by: {blocker.get('summary', '')}")
    for child in job["children"]:
        lines.append(f"child pid {child['pid']}: {' '.join(child['cmdline'])[:120]} ({child['status']})")
    if job["findings"]:
        lines.append("findings: " + ", ".join(job["findings"]))
    return lines


def stack_lines(job: dict[str, Any], verbose: bool) -> list[str]:
    """Thread stacks, innermost frame first; trimmed to the job's main thread unless verbose."""
    threads = job["threads"]
    if not threads:
        return []
    main = (job["activity"] or {}).get("thread_name")
    if not verbose:
        threads = [t for t in threads if t["name"] == main] or threads[:1]
    lines = []
    for thread in threads:
        frames = thread["frames"] if verbose else thread["frames"][:TRIMMED_FRAMES]
        state = "active" if thread["active"] else "idle"
        if thread.get("source") == "faulthandler":
            state = "from the process's own dump, ASCII, at most 100 frames"
        lines.append(f"Thread {thread['thread_id']:#x} \"{thread['name']}\" ({state})")
        lines += [f"    {f['name']}  {short_path(f['filename'])}:{f['line']}" for f in frames]
        if len(frames) < len(thread["frames"]):
            lines.append(f"    … {len(thread['frames']) - len(frames)} more frames (-v shows all)")
    return lines


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def severity(job: dict[str, Any], findings: list[Finding]) -> str:
    """The most severe finding about this job (``ok`` when none)."""
    found = [f.severity for f in findings if f.job_id == job["job_id"]]
    return min(found, key=lambda s: SEVERITY_RANK.get(s, 9), default="ok")


def waits_on(job: dict[str, Any]) -> str:
    """What the job waits on, as free text: its activity, and the blocker when one is known."""
    activity = job["activity"] or {}
    detail = (job.get("blocker") or {}).get("summary") or activity.get("detail") or ""
    kind = activity.get("kind") or ("remote" if job["location"] == "remote" else "?")
    return f"{kind}: {detail}" if detail else kind


JOB_COLUMNS = (Col("severity"), Col("job", code=True), Col("method", code=True, detail=True), Col("site", drop=1),
               Col("age"), Col("pid", code=True), Col("waiting on", TEXT), Col("findings", detail=True))
"""The jobs table; a terminal shows it one line per job without ``detail`` columns, the site dropped first."""


def jobs_section(jobs: list[dict[str, Any]], findings: list[Finding], verbose: bool,
                 title: str = "Jobs", here: str | None = None) -> Section | None:
    """One line per job, then a block per job with its facts and stack (trimmed on a terminal unless
    ``verbose``); None without jobs. ``here``: the report's host (another host's pid is shown ``N on HOST``)."""
    if not jobs:
        return None
    table = Table(JOB_COLUMNS,
                  tuple((severity(j, findings), j["job_id"], value(j["method"]), value(j["site"]),
                         duration(j["running_for_s"]), value(j["pid"]) + on_host(j, here), waits_on(j),
                         value(j["findings"]))
                        for j in jobs),
                  tones=tuple(_tone(severity(j, findings)) for j in jobs), brief=True)
    blocks: list[Block] = [table]
    for job in jobs:
        stack = tuple(stack_lines(job, verbose=True))
        body: list[Block] = [Items(tuple(spans(line) for line in facts_lines(job, here)))]
        if stack:
            body.append(CodeBlock(stack, None if verbose else tuple(stack_lines(job, verbose=False))))
        blocks.append(Details(job["job_id"], f"{job['method'] or '?'} ({job['site'] or 'no site'})", tuple(body),
                              _tone(severity(job, findings))))
    return Section(title, tuple(blocks))


def _tone(level: str) -> Tone:
    return level if level in ("critical", "warning", "info") else "ok"  # type: ignore[return-value]
