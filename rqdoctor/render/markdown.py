"""Markdown for incident tickets: a summary, tables, findings, then details."""

from __future__ import annotations

from typing import Any

from rqdoctor.diagnose.findings import Finding
from rqdoctor.model import PreflightCheck, ProbeError
from rqdoctor.render.fmt import duration, short_queue, value
from rqdoctor.render.workers import more_line, row_cap, summary_lines
from rqdoctor.views import fold_errors, worker_summary, workers_shown


def cell(v: Any) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return value(v).replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """``text`` as a code span (a longer fence when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(columns: list[str], rows: list[list[Any]], code_columns: tuple[int, ...] = ()) -> str:
    """A GitHub-flavoured Markdown table; identifiers of ``code_columns`` as code spans (``-`` when empty)."""
    def show(i: int, v: Any) -> str:
        text = cell(v)
        return code(text) if i in code_columns and text != "-" else text

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(show(i, v) for i, v in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def findings(items: list[Finding], errors: list[ProbeError]) -> str:
    """Findings as a list with evidence and fix."""
    if not items:
        if errors:
            return "No problems found in what could be seen; see **Could not see** below.\n"
        return "No problems found.\n"
    out = ["## Findings\n"]
    for f in items:
        out.append(f"- **{f.code}** ({f.severity}) {f.title}: `{f.subject}`")
        out += [f"  - {e}" for e in f.evidence]
        if f.fix:
            out.append(f"  - **Fix:** {f.fix}")
        if f.commands:
            out += ["", "    ```sh", *(f"    {c}" for c in f.commands), "    ```"]
    return "\n".join(out) + "\n"


def errors(items: list[ProbeError]) -> str:
    """What could not be seen; repeats of one kind folded into one line (JSON keeps every entry)."""
    if not items:
        return ""
    lines = ["## Could not see\n"]
    lines += [f"- **{e.probe}**: {e.message}" + (f" _(hint: {e.hint})_" if e.hint else "") for e in fold_errors(items)]
    return "\n".join(lines) + "\n"


PREFLIGHT_MARKS = {"ok": "✓", "warning": "!", "failed": "✗"}


def preflight(checks: list[PreflightCheck]) -> str:
    """Preflight lines as a list, each fix as a code span below its line (nothing when there are none)."""
    lines = []
    for c in checks:
        lines.append(f"- {PREFLIGHT_MARKS.get(c.status, '?')} **{c.name}**: {c.detail}")
        lines += [f"  - fix: {code(fix)}" for fix in c.fix]
    return "\n".join(lines) + "\n" if lines else ""


def workers_table(rows: list[dict[str, Any]], prefix: str | None) -> str:
    """Workers as a Markdown table."""
    return table(
        ["worker", "host", "pid", "where", "state", "queues", "current job", "running", "heartbeat", "horse",
         "findings"],
        [[r["name"], r["host"], r["pid"], r["location"], r["state"], [short_queue(q, prefix) for q in r["queues"]],
          r["current_job"], duration(r["job_running_for_s"]), duration(r["heartbeat_age_s"]), r["horse_pid"],
          r["findings"]] for r in rows],
        code_columns=(0, 2, 6, 9),
    )


def workers_view(rows: list[dict[str, Any]], prefix: str | None, verbose: bool = False) -> str:
    """The summary, then the workers worth showing (:data:`rqdoctor.render.workers.PIPE_ROWS` at most, every
    worker with a finding, all with ``verbose``), and a note of how many more there are."""
    shown, rest = workers_shown(rows, row_cap(verbose, None))
    lines = summary_lines(worker_summary(rows), prefix, verbose)
    out = "".join(f"- {line}\n" for line in lines) + ("\n" if lines else "") + workers_table(shown, prefix)
    return out + (f"\n_{more_line(rest)}_\n" if rest else "")


def queues_table(rows: list[dict[str, Any]], prefix: str | None) -> str:
    """Queues as a Markdown table."""
    return table(
        ["queue", "queued", "oldest", "started", "failed", "finished", "deferred", "scheduled", "workers",
         "findings"],
        [[short_queue(r["name"], prefix), r["queued"], duration(r["oldest_queued_age_s"]), r["started"], r["failed"],
          r["finished"], r["deferred"], r["scheduled"], r["listening_workers"], r["findings"]] for r in rows],
        code_columns=(0,),
    )
