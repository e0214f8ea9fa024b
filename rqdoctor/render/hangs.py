"""The ``hangs`` / ``stack`` report: a one-line-per-job summary, then one block (text) or ``<details>`` (Markdown)
per job."""

from __future__ import annotations

import html
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.text import Text

from rqdoctor.diagnose.activity import short_path
from rqdoctor.diagnose.findings import Finding
from rqdoctor.render.fmt import duration, size, value
from rqdoctor.render.layout import GAP, Para, one_line, whole
from rqdoctor.render.text import SEVERITY_STYLE

TRIMMED_FRAMES = 8
MIN_FREE = 16
"""Room the summary keeps for "what it waits on" before it drops the site, then moves the identifiers first."""
ORDERS = ((0, 1, 2, 3, 4), (0, 1, 3, 4), (4, 0, 3, 1))
"""Summary columns by index in (severity, job, site, age, pid), widest layout first; the narrowest puts the
pid first and the job id last, so that nothing needs to line up after a long id."""


def _headline(job: dict[str, Any]) -> str:
    return f"{job['job_id']} — {job['method'] or '?'} ({job['site'] or 'no site'})"


def facts_lines(job: dict[str, Any]) -> list[str]:
    """The key facts of one job as short lines (shared by text and Markdown)."""
    timeout = f", timeout {duration(job['timeout_s'])}" if job["timeout_s"] not in (None, -1) else ""
    lines = [f"queue {job['queue']}, status {value(job['status'])}, running {duration(job['running_for_s'])}{timeout}"]
    if job.get("usual_duration"):
        lines.append(job["usual_duration"]["summary"])
    if job["location"] == "remote":
        lines.append(f"runs on host {job['host']} (worker {job['worker']}): no process or stack from here")
    elif job["pid"]:
        lines.append(f"pid {job['pid']} ({job['runner_role']}) of worker {value(job['worker'])}, "
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


class JobSummary:
    """One line per job (severity, job, site, age, pid, what it waits on), each whole at the console's width:
    only the free text is cut, with an ellipsis; when narrow, the identifiers come first."""

    def __init__(self, jobs: list[dict[str, Any]], findings: list[Finding]) -> None:
        self.rows = [(severity(j, findings), j["job_id"], value(j["site"]), duration(j["running_for_s"]),
                      value(j["pid"]), waits_on(j)) for j in jobs]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        header = ("severity", "job", "site", "age", "pid")
        pad = [max(cell_len(c) for c in col) for col in zip(header, *(r[:5] for r in self.rows), strict=True)]
        order = next((o for o in ORDERS if sum(pad[i] + len(GAP) for i in o) + MIN_FREE <= width), ORDERS[-1])
        aligned = sum(pad[i] + len(GAP) for i in order) <= width
        if not aligned:
            pad = [0] * len(pad)  # identifiers longer than the line: no alignment, nothing cut
        head = one_line([header[i].ljust(pad[i]) for i in order], "waiting on" if aligned else "", width)
        yield Text(head.rstrip(), style="dim", no_wrap=True, overflow="ignore")
        for row in self.rows:
            yield Text(one_line([row[i].ljust(pad[i]) for i in order], row[5], width).rstrip(),
                       style=SEVERITY_STYLE.get(row[0], "green"), no_wrap=True, overflow="ignore")


def text_jobs(jobs: list[dict[str, Any]], findings: list[Finding], verbose: bool) -> list[RenderableType]:
    """The one-line-per-job summary, then each job's facts and stack (wrapped at spaces, identifiers whole)."""
    if not jobs:
        return []
    out: list[RenderableType] = [Text("Jobs", style="bold underline"), JobSummary(jobs, findings)]
    for job in jobs:
        style = SEVERITY_STYLE.get(severity(job, findings), "green")
        out.append(Text(""))
        out.append(whole(f"── {job['job_id']}", style=f"bold {style}"))
        out.append(Para(f"   {job['method'] or '?'} ({job['site'] or 'no site'})", hang=5))
        out += [Para(f"   {line}", hang=5) for line in facts_lines(job)]
        out += [Para(Text(f"   {line}", style="dim"), hang=9) for line in stack_lines(job, verbose)]
    return out


def markdown(jobs: list[dict[str, Any]], findings: list[Finding]) -> str:
    """A summary table, then a ``<details>`` block per job with its full stack."""
    from rqdoctor.render.markdown import table

    out = [table(["severity", "job", "method", "site", "running", "pid", "waiting on", "findings"],
                 [[severity(j, findings), j["job_id"], j["method"], j["site"], duration(j["running_for_s"]), j["pid"],
                   waits_on(j), j["findings"]] for j in jobs], code_columns=(1, 2, 5))]
    for job in jobs:
        out.append(f"<details><summary>{html.escape(_headline(job))}</summary>\n")
        out += [f"- {line}" for line in facts_lines(job)]
        stack = stack_lines(job, verbose=True)
        if stack:
            out += ["", "```", *stack, "```"]
        out.append("\n</details>\n")
    return "\n".join(out) + "\n"
