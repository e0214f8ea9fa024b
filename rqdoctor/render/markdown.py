"""The Markdown renderer (GitHub-flavoured, for incident tickets): a report document as one Markdown text."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from rich.console import Console

from rqdoctor.model import ProbeError
from rqdoctor.render import document as doc
from rqdoctor.render.layout import Col
from rqdoctor.render.workers import row_cap
from rqdoctor.views import fold_errors

ESCAPED = re.compile(r"[\\`*<>\[\]]|(?<!\w)_|_(?!\w)")
"""What would turn prose into markup: backslash, backtick, emphasis, HTML, links; ``_`` only at a word's edge."""


def escape(text: str) -> str:
    """Prose with its markup characters escaped."""
    return ESCAPED.sub(lambda m: "\\" + m.group(), text)


def code(text: str) -> str:
    """``text`` as a code span (a longer fence when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(line: doc.Line) -> str:
    """Inline parts: prose escaped, code as code spans."""
    return "".join(escape(p) if isinstance(p, str) else code(p.text) for p in line)


def cell(value: str, as_code: bool = False) -> str:
    """A table cell: newlines flattened, pipes escaped (also in code spans, as GFM tables require)."""
    text = value.replace("\n", " ")
    shown = code(text) if as_code and text != "-" else escape(text)
    return shown.replace("|", "\\|")


def fenced(lines: Sequence[str], info: str = "", indent: str = "") -> str:
    """A fenced code block, its fence longer than any run of backticks inside."""
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([f"{indent}{fence}{info}", *(f"{indent}{line}" for line in lines), f"{indent}{fence}"]) + "\n"


def render(report: doc.Report, console: Console) -> None:
    """Write the report as Markdown."""
    console.file.write(text(report))


def text(report: doc.Report) -> str:
    """``# rqdoctor <command>``, the target, checks, summary, sections, findings, what could not be seen."""
    parts = [f"# {report.title}\n"]
    if report.notice:
        parts.append(f"> **Warning:** {escape(report.notice)}\n")
    if report.target:
        parts.append(facts(report.target))
    if report.checks:
        parts.append(preflight(report.checks))
    if report.summary is not None:
        parts.append(f"**{escape(report.summary)}** — {verdict(report)}\n")
    for s in report.sections:
        if s.title:
            parts.append(f"## {escape(s.title)}\n")
        parts += [block(b) for b in s.blocks]
    if report.findings:
        parts.append(findings(report.findings))
    if report.errors:
        parts.append(errors(report.errors))
    return "\n".join(parts)


def verdict(report: doc.Report) -> str:
    """``2 critical, 1 info``, or what was (not) found."""
    found, otherwise = doc.verdict(report)
    return ", ".join(f"{n} {s}" for s, n in found) or otherwise


def facts(rows: Sequence[doc.Fact]) -> str:
    """``label: value`` lines as a list."""
    return "".join(f"- **{escape(f.label)}:** {inline(f.value)}\n" for f in rows)


def block(b: doc.Block) -> str:
    """One block as Markdown (ending with a newline)."""
    match b:
        case doc.Paragraph(line, _):
            return inline(line) + "\n"
        case doc.Items(items, level, numbered):
            return "".join(f"{'  ' * level}{f'{n}.' if numbered else '-'} {inline(i)}\n"
                           for n, i in enumerate(items, 1))
        case doc.Facts(rows):
            return facts(rows)
        case doc.Checks(items):
            return preflight(items)
        case doc.Table(columns, rows, _, _, limit):
            cap = None if limit is None else row_cap(limit.everything, None)
            shown = len(rows) if cap is None or limit is None else max(cap, limit.least)
            out = table(columns, rows[:shown])
            return out + (f"\n_{escape(limit.more(shown))}_\n" if limit and shown < len(rows) else "")
        case doc.CodeBlock(lines, _, lang):
            return fenced(lines, lang)
        case doc.Commands(lines):
            return fenced(lines, "sh")
        case doc.Details(title, subtitle, body, _):
            summary = html.escape(f"{title} — {subtitle}" if subtitle else title)
            return "\n".join([f"<details><summary>{summary}</summary>\n", *(block(i) for i in body), "</details>\n"])
    raise AssertionError(f"no Markdown rendering for {b!r}")


def table(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; cells of ``Col.code`` columns as code spans."""
    lines = ["| " + " | ".join(escape(c.header) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v, c.code) for c, v in zip(columns, row, strict=True)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def findings(items: Sequence[doc.FindingItem]) -> str:
    """Findings as a list with evidence and fix, each one's commands in a block under it (a report shows them
    only when there are some: its summary line carries the verdict)."""
    out = ["## Findings\n"]
    for f in items:
        out.append(f"- **{f.code}** ({f.severity}) {escape(f.title)}: {code(f.subject)}")
        out += [f"  - {inline(e)}" for e in f.evidence]
        if f.fix:
            out.append(f"  - **Fix:** {inline(f.fix)}")
        out.append(f"  - More: {code(f.more_info) if ' ' in f.more_info else f.more_info}")
        if f.commands:
            out += ["", fenced(f.commands, "sh", indent="    ").rstrip("\n")]
    return "\n".join(out) + "\n"


def errors(items: Sequence[ProbeError]) -> str:
    """What could not be seen; repeats of one kind folded into one line (JSON keeps every entry)."""
    if not items:
        return ""
    lines = ["## Could not see\n"]
    lines += [f"- **{e.probe}**: {escape(e.message)}" + (f" _(hint: {escape(e.hint)})_" if e.hint else "")
              for e in fold_errors(list(items))]
    return "\n".join(lines) + "\n"


PREFLIGHT_MARKS = {"ok": "✓", "warning": "!", "failed": "✗"}


def preflight(checks: Sequence[doc.Check]) -> str:
    """Preflight lines as a list, each fix as a code span below its line (nothing when there are none)."""
    lines = []
    for c in checks:
        lines.append(f"- {PREFLIGHT_MARKS.get(c.status, '?')} **{escape(c.name)}**: {escape(c.detail)}")
        lines += [f"  - fix: {code(fix)}" for fix in c.fixes]
    return "\n".join(lines) + "\n" if lines else ""
