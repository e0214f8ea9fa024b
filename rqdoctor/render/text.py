"""Terminal output with rich: summary, tables, findings, and what could not be seen."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rqdoctor import views as worker_view
from rqdoctor.diagnose.findings import Finding
from rqdoctor.model import PreflightCheck, ProbeError, TargetInfo
from rqdoctor.render import workers
from rqdoctor.render.fmt import duration, short_queue, value
from rqdoctor.render.layout import TEXT, Col, Para, Records, whole
from rqdoctor.views import fold_errors

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def summary(line: str, findings: list[Finding], errors: list[ProbeError]) -> Text:
    """The first line of every report."""
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_STYLE}
    text = Text(line + " — ", style="bold")
    if not any(counts.values()):
        if errors:
            text.append(f"no problems found in what could be seen; {len(fold_errors(errors))} thing(s) could not be "
                        "seen (below)", style="magenta")
        else:
            text.append("no problems found", style="green")
        return text
    text.append(", ".join(f"{n} {s}" for s, n in counts.items() if n),
                style=SEVERITY_STYLE["critical" if counts["critical"] else "warning"])
    return text


def finding(f: Finding) -> RenderableType:
    """One finding: code, title, subject, evidence, fix, then each command whole on its own line."""
    head = Text()
    head.append(f"{f.code} ", style=SEVERITY_STYLE.get(f.severity, ""))
    head.append(f"[{f.severity}] ", style=SEVERITY_STYLE.get(f.severity, ""))
    head.append(f.title, style="bold")
    head.append(f"  ({f.subject})", style="dim")
    lines: list[RenderableType] = [Para(head, hang=4)]
    lines += [Para(f"    • {e}", hang=6) for e in f.evidence]
    if f.fix:
        fix = Text("    fix: ", style="green")
        fix.append(f.fix)
        lines.append(Para(fix, hang=9))
    lines += [command(c) for c in f.commands]
    return Group(*lines)


def command(text: str) -> Text:
    """A command to copy: on its own line, never wrapped or cut (it may run past the terminal's width)."""
    return Text(f"      {text}", style="bold", no_wrap=True, overflow="ignore")


def findings(items: list[Finding]) -> list[RenderableType]:
    """All findings, or nothing."""
    if not items:
        return []
    return [Text("Findings", style="bold underline"), *(finding(f) for f in items)]


def errors(items: list[ProbeError]) -> list[RenderableType]:
    """What could not be seen, and why; repeats of one kind folded into one line (JSON keeps every entry)."""
    if not items:
        return []
    out: list[RenderableType] = [Text("Could not see", style="bold underline")]
    for e in fold_errors(items):
        line = Text(f"  {e.probe}: ", style="magenta")
        line.append(e.message)
        if e.hint:
            line.append(f"  (hint: {e.hint})", style="dim")
        out.append(Para(line, hang=4))
    return out


PREFLIGHT_MARKS = {"ok": ("✓", "green"), "warning": ("!", "yellow"), "failed": ("✗", "bold red")}
"""Mark and style per :class:`PreflightCheck` status."""


def preflight(checks: list[PreflightCheck]) -> list[RenderableType]:
    """Preflight lines: mark, name and detail, then each fix whole on its own line."""
    out: list[RenderableType] = []
    for c in checks:
        mark, style = PREFLIGHT_MARKS.get(c.status, ("?", ""))
        line = Text(f"{mark} ", style=style)
        line.append(f"{c.name}: ", style="bold")
        line.append(c.detail)
        out.append(Para(line, hang=2))
        out += [whole(f"    fix: {fix}", style="dim") for fix in c.fix]
    return out


def table(columns: list[Col | str], rows: list[list[Any]], title: int = 0) -> RenderableType:
    """Rows at the console's width (see :class:`Records`; a plain header is an identifier column); a dim
    "(none)" when there are no rows."""
    if not rows:
        return Text("  (none)", style="dim")
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    return Records(cols, [[value(v) for v in row] for row in rows], title=title)


WORKER_COLUMNS = [Col("worker"), Col("host", drop=4), Col("pid", justify="right"), Col("where", drop=3),
                  Col("state"), Col("queues", TEXT, drop=2), Col("current job"), Col("running", drop=1),
                  Col("beat", drop=2, label="heartbeat"), Col("horse", justify="right"),
                  Col("supervisor", drop=5), Col("findings", TEXT)]
"""Workers' columns; when narrow, hidden from the highest ``drop`` down (supervisor first, running last)."""


def workers_table(rows: list[dict[str, Any]], prefix: str | None) -> RenderableType:
    """The ``rqdoctor workers`` table."""
    return table(
        WORKER_COLUMNS,
        [[r["name"], r["host"], r["pid"], r["location"], r["state"],
          ", ".join(short_queue(q, prefix) for q in r["queues"]), r["current_job"], duration(r["job_running_for_s"]),
          duration(r["heartbeat_age_s"]), r["horse_pid"], r["supervisor_program"], ", ".join(r["findings"])]
         for r in rows],
    )


class WorkersView:
    """The ``rqdoctor workers`` view: the summary, the rows worth showing (as many as the console shows, see
    :func:`rqdoctor.render.workers.row_cap`), and how many more there are."""

    def __init__(self, rows: list[dict[str, Any]], prefix: str | None, verbose: bool) -> None:
        self.rows, self.prefix, self.verbose = rows, prefix, verbose

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cap = workers.row_cap(self.verbose, console.height if console.is_terminal else None)
        shown, rest = worker_view.workers_shown(self.rows, cap)
        lines = workers.summary_lines(worker_view.worker_summary(self.rows), self.prefix, self.verbose)
        yield from (Para(line, indent=0 if n == 0 else 2, hang=4) for n, line in enumerate(lines))
        yield workers_table(shown, self.prefix)
        if rest:
            yield Para(Text(workers.more_line(rest), style="dim"), hang=2)


def workers_view(rows: list[dict[str, Any]], prefix: str | None, verbose: bool = False) -> RenderableType:
    """The ``rqdoctor workers`` view (``verbose``: every worker)."""
    return WorkersView(rows, prefix, verbose)


QUEUE_COLUMNS = [Col("queue"), Col("queued", justify="right"), Col("oldest", justify="right"),
                 Col("started", justify="right"), Col("failed", drop=1, justify="right"),
                 Col("finished", drop=3, justify="right"), Col("deferred", drop=2, justify="right"),
                 Col("scheduled", drop=2, justify="right"), Col("workers", justify="right"), Col("findings", TEXT)]


def queues_table(rows: list[dict[str, Any]], prefix: str | None) -> RenderableType:
    """The ``rqdoctor queues`` table."""
    return table(
        QUEUE_COLUMNS,
        [[short_queue(r["name"], prefix), r["queued"], duration(r["oldest_queued_age_s"]), r["started"],
          r["failed"], r["finished"], r["deferred"], r["scheduled"], r["listening_workers"], ", ".join(r["findings"])]
         for r in rows],
    )


def target(info: TargetInfo) -> RenderableType:
    """Where rqdoctor looks and why."""
    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("redis", f"{info.redis_url}  (from {info.redis_url_source})")
    t.add_row("bench", f"{info.bench_path}  (from {info.bench_source})" if info.bench_path
              else info.bench_source or "none found")
    if info.bench_id:
        t.add_row("bench id", f"{info.bench_id}  ({info.bench_id_source})")
    if info.queue_filter:
        queues = f"{info.queue_filter}* only (--all-queues shows every queue)"
    else:
        queues = "all (--all-queues)" if info.all_queues else "all (no bench, so no bench id to filter by)"
    t.add_row("queues", queues)
    if info.queue_timeouts:
        t.add_row("timeouts", ", ".join(f"{q} {s}s" for q, s in info.queue_timeouts.items()))
    for site in info.sites:
        where = f"socket {site.db_socket}" if site.db_socket else f"{site.db_host}:{site.db_port or 'default'}"
        t.add_row("site", f"{site.name}: {site.db_type} {where} db {site.db_name} user {site.db_user}")
    for url in info.db_urls:
        t.add_row("db", url)
    return Panel(t, title="rqdoctor target", title_align="left")

