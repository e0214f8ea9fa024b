"""The terminal renderer (rich): a report document as console output, identifiers never folded (``layout``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table as RichTable
from rich.text import Text

from rqdoctor.model import ProbeError
from rqdoctor.render import document as doc
from rqdoctor.render.layout import GAP, TEXT, Col, Para, Records, one_line, whole
from rqdoctor.render.workers import row_cap
from rqdoctor.views import fold_errors

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def summary(line: str, findings: Sequence[Any], errors: Sequence[ProbeError]) -> Text:
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


def finding(f: doc.FindingItem) -> RenderableType:
    """One finding: code, title, subject, evidence, fix, then each command whole on its own line."""
    head = Text()
    head.append(f"{f.code} ", style=SEVERITY_STYLE.get(f.severity, ""))
    head.append(f"[{f.severity}] ", style=SEVERITY_STYLE.get(f.severity, ""))
    head.append(f.title, style="bold")
    head.append(f"  ({f.subject})", style="dim")
    lines: list[RenderableType] = [Para(head, hang=4)]
    lines += [Para(f"    • {doc.plain(e)}", hang=6) for e in f.evidence]
    if f.fix:
        fix = Text("    fix: ", style="green")
        fix.append(doc.plain(f.fix))
        lines.append(Para(fix, hang=9))
    lines += [command(c) for c in f.commands]
    return Group(*lines)


def command(text: str) -> Text:
    """A command to copy: on its own line, never wrapped or cut (it may run past the terminal's width)."""
    return Text(f"      {text}", style="bold", no_wrap=True, overflow="ignore")


def findings(items: Sequence[doc.FindingItem]) -> list[RenderableType]:
    """All findings, or nothing."""
    if not items:
        return []
    return [Text("Findings", style="bold underline"), *(finding(f) for f in items)]


def errors(items: Sequence[ProbeError]) -> list[RenderableType]:
    """What could not be seen, and why; repeats of one kind folded into one line (JSON keeps every entry)."""
    if not items:
        return []
    out: list[RenderableType] = [Text("Could not see", style="bold underline")]
    for e in fold_errors(list(items)):
        line = Text(f"  {e.probe}: ", style="magenta")
        line.append(e.message)
        if e.hint:
            line.append(f"  (hint: {e.hint})", style="dim")
        out.append(Para(line, hang=4))
    return out


PREFLIGHT_MARKS = {"ok": ("✓", "green"), "warning": ("!", "yellow"), "failed": ("✗", "bold red")}
"""Mark and style per :class:`PreflightCheck` status."""


def preflight(checks: Sequence[doc.Check]) -> list[RenderableType]:
    """Preflight lines: mark, name and detail, then each fix whole on its own line."""
    out: list[RenderableType] = []
    for c in checks:
        mark, style = PREFLIGHT_MARKS.get(c.status, ("?", ""))
        line = Text(f"{mark} ", style=style)
        line.append(f"{c.name}: ", style="bold")
        line.append(c.detail)
        out.append(Para(line, hang=2))
        out += [whole(f"    fix: {fix}", style="dim") for fix in c.fixes]
    return out


TONE_STYLE: dict[str, str] = {"plain": "", "muted": "dim", "alert": "magenta", "ok": "green", **SEVERITY_STYLE}


def render(report: doc.Report, console: Console) -> None:
    """Print the report: target, checks, summary, sections, findings, then what could not be seen.

    One ``print`` of the whole report (rich's set-up per call was a fifth of the time of a big report); each
    top-level ``Text`` is first made what ``print`` makes of a ``Text`` printed alone, so the output is the same.
    """
    console.print(Group(*(as_printed(item) for item in renderables(report))), crop=False)


def as_printed(item: RenderableType) -> RenderableType:
    """``item`` as ``Console.print`` renders it alone: a ``Text`` joined into a new one, which drops its
    ``no_wrap``, ``overflow`` and ``justify`` (hence :func:`~rqdoctor.render.layout.whole`)."""
    return Text(" ", end="\n").join([item]) if isinstance(item, Text) else item


def renderables(report: doc.Report) -> list[RenderableType]:
    """The report as rich renderables, in order."""
    out: list[RenderableType] = []
    if report.notice:
        out.append(Para(Text(f"! {report.notice}", style="bold magenta"), hang=2))
    if report.target:
        out.append(facts(report.target))
    out += preflight(report.checks)
    if report.summary is not None:
        out.append(summary(report.summary, report.findings, report.errors))
    for part in report.sections:
        if part.title:
            out.append(Text(part.title, style="bold underline"))
        for b in part.blocks:
            out += block(b)
    return out + findings(report.findings) + errors(report.errors)


def facts(rows: Sequence[doc.Fact]) -> RenderableType:
    """``label: value`` lines, labels aligned, values folded only when longer than the line."""
    grid = RichTable.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=9)
    grid.add_column(overflow="fold")
    for f in rows:
        value = "".join(p if isinstance(p, str) else p.text for p in f.value)  # a value is the whole line: no marks
        grid.add_row(f"{f.label}:", Text(value, style="magenta" if f.alert else ""))
    return grid


def block(b: doc.Block, depth: int = 0) -> list[RenderableType]:
    """One block; ``depth`` 1 inside a :class:`~rqdoctor.render.document.Details`, indented under its title."""
    pad = "   " * depth
    match b:
        case doc.Paragraph(line, tone):
            return [Para(Text(doc.plain(line), style=TONE_STYLE[tone]), indent=len(pad)), Text("")]
        case doc.Items(items, level, numbered):
            indent = len(pad) + 2 * level
            marks = [f"{n}. " if numbered else "" for n in range(1, len(items) + 1)]
            return [Para(mark + doc.plain(i), indent=indent, hang=indent + (len(mark) or 2))
                    for mark, i in zip(marks, items, strict=True)]
        case doc.Facts(rows):
            return [facts(rows)]
        case doc.Checks(items):
            return preflight(items)
        case doc.Table() if b.brief:
            return [Brief(b.columns, b.rows, b.tones)]
        case doc.Table():
            return [LimitedTable(b) if b.limit else table(b.columns, b.rows)]
        case doc.CodeBlock(lines, short, _):
            shown = lines if short is None else short
            return [Para(Text(f"{pad}{line}", style="dim"), hang=len(pad) + 6) for line in shown]
        case doc.Commands(lines):
            return [command(c) for c in lines]
        case doc.Details(title, subtitle, body, tone):
            out: list[RenderableType] = [Text(""), whole(f"── {title}", style=f"bold {TONE_STYLE[tone]}".strip())]
            if subtitle:
                out.append(Para(f"   {subtitle}", hang=5))
            for inner in body:
                out += block(inner, depth + 1)
            return out
    raise AssertionError(f"no text rendering for {b!r}")


def table(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> RenderableType:
    """Rows at the console's width (see :class:`Records`); a dim "(none)" when there are no rows."""
    if not rows:
        return Text("  (none)", style="dim")
    return Records(list(columns), [list(r) for r in rows])


class LimitedTable:
    """A table with a :class:`~rqdoctor.render.document.Limit`: as many rows as the terminal's height shows
    (:func:`rqdoctor.render.workers.row_cap`), then what was left out."""

    def __init__(self, t: doc.Table) -> None:
        self.t = t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        limit = self.t.limit
        assert limit is not None
        cap = row_cap(limit.everything, console.height if console.is_terminal else None)
        shown = len(self.t.rows) if cap is None else max(cap, limit.least)
        yield table(self.t.columns, self.t.rows[:shown])
        if shown < len(self.t.rows):
            yield Para(Text(limit.more(shown), style="dim"), hang=2)


MIN_FREE = 16
"""Room a brief table keeps for its free text before it drops columns, then moves the identifiers first."""


class Brief:
    """One line per row, each whole at the console's width: the identifier columns, then the ``TEXT`` column cut
    with an ellipsis. When narrow, droppable columns go first; narrower still, the last column comes first and
    the widest last, so that nothing needs to line up after a long id; columns with ``detail`` are left out."""

    def __init__(self, columns: Sequence[Col], rows: Sequence[Sequence[str]], tones: Sequence[str]) -> None:
        keep = [i for i, c in enumerate(columns) if not c.detail and c.kind != TEXT]
        free = next((i for i, c in enumerate(columns) if not c.detail and c.kind == TEXT), None)
        self.header = [columns[i].header for i in keep]
        self.free_header = columns[free].header if free is not None else ""
        self.rows = [([row[i] for i in keep], row[free] if free is not None else "") for row in rows]
        self.tones = list(tones) or ["plain"] * len(rows)
        every = list(range(len(keep)))
        self.kept = [k for k in every if not columns[keep[k]].drop]
        self.orders = [every, self.kept] if self.kept != every else [every]

    def _narrowest(self, pad: list[int]) -> list[int]:
        order = [self.kept[-1], *self.kept[:-1]]
        widest = max(order[1:], key=lambda k: pad[k], default=None)
        return order if widest is None else [k for k in order if k != widest] + [widest]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        pad = [max(cell_len(c) for c in col) for col in zip(self.header, *(r for r, _ in self.rows), strict=True)]
        orders = [*self.orders, self._narrowest(pad)]
        order = next((o for o in orders if sum(pad[i] + len(GAP) for i in o) + MIN_FREE <= width), orders[-1])
        aligned = sum(pad[i] + len(GAP) for i in order) <= width
        if not aligned:
            pad = [0] * len(pad)  # identifiers longer than the line: no alignment, nothing cut
        head = one_line([self.header[i].ljust(pad[i]) for i in order], self.free_header if aligned else "", width)
        yield Text(head.rstrip(), style="dim", no_wrap=True, overflow="ignore")
        for (cells, free), tone in zip(self.rows, self.tones, strict=True):
            yield Text(one_line([cells[i].ljust(pad[i]) for i in order], free, width).rstrip(),
                       style=TONE_STYLE.get(tone, ""), no_wrap=True, overflow="ignore")
