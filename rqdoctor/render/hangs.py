"""The ``hangs`` / ``stack`` report: one panel (text) or one ``<details>`` (Markdown) per job."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from rqdoctor.diagnose.activity import short_path
from rqdoctor.render.fmt import duration, size, value

TRIMMED_FRAMES = 8


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


def text_panels(jobs: list[dict[str, Any]], verbose: bool) -> list[RenderableType]:
    """One rich panel per job."""
    panels: list[RenderableType] = []
    for job in jobs:
        style = "red" if job["findings"] else "green"
        body = [Text(line) for line in facts_lines(job)]
        stack = stack_lines(job, verbose)
        if stack:
            body.append(Text("\n".join(stack), style="dim"))
        panels.append(Panel(Group(*body), title=_headline(job), title_align="left", border_style=style))
    return panels


def markdown(jobs: list[dict[str, Any]]) -> str:
    """A summary table, then a ``<details>`` block per job with its full stack."""
    from rqdoctor.render.markdown import table

    out = [table(["job", "method", "site", "running", "pid", "doing", "findings"],
                 [[j["job_id"], j["method"], j["site"], duration(j["running_for_s"]), j["pid"],
                   (j["activity"] or {}).get("kind"), j["findings"]] for j in jobs])]
    for job in jobs:
        out.append(f"<details><summary>{_headline(job)}</summary>\n")
        out += [f"- {line}" for line in facts_lines(job)]
        stack = stack_lines(job, verbose=True)
        if stack:
            out += ["", "```", *stack, "```"]
        out.append("\n</details>\n")
    return "\n".join(out) + "\n"
