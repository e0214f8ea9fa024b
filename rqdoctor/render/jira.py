"""The Jira renderer: a report document in Jira wiki markup (Jira Server/Data Center, and Cloud's wiki editor)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.console import Console

from rqdoctor.model import ProbeError
from rqdoctor.render import document as doc
from rqdoctor.render.layout import Col
from rqdoctor.render.workers import row_cap
from rqdoctor.views import fold_errors

ESCAPED = re.compile(r"[\\*?{}\[\]|!#]|(?<!\w)[-_+^~]|[-_+^~](?!\w)")
"""Characters that are markup somewhere in Jira wiki text (emphasis, macros, links, tables, images, lists,
dashes; ``-_+^~`` only at a word's edge, where they can open or close an effect), escaped with a backslash."""
MARKS = {"ok": "(/)", "warning": "(!)", "failed": "(x)"}
SEVERITY_COLOUR = {"critical": "red", "warning": "orange", "info": "blue"}


def escape(text: str) -> str:
    """Prose with its markup characters escaped, on one line."""
    return ESCAPED.sub(lambda m: "\\" + m.group(), text.replace("\n", " "))


def mono(text: str) -> str:
    """``{{text}}`` (monospace), escaped; empty text as ``-``."""
    return "{{" + escape(text) + "}}" if text else "-"


def inline(line: doc.Line) -> str:
    return "".join(escape(p) if isinstance(p, str) else mono(p.text) for p in line)


def verbatim(macro: str, lines: Sequence[str]) -> str:
    """A ``{noformat}`` or ``{code}`` block; a line that would close it early is neutralised."""
    close = "{" + macro.split(":")[0] + "}"
    body = [line.replace(close, close[:-1] + " }") for line in lines]
    return "\n".join(["{" + macro + "}", *body, close]) + "\n"


def render(report: doc.Report, console: Console) -> None:
    """Write the report as Jira wiki markup."""
    console.file.write(text(report))


def text(report: doc.Report) -> str:
    """``h1.`` title, the target, checks, summary, sections, findings and what could not be seen."""
    parts = [f"h1. {escape(report.title)}\n"]
    if report.notice:
        parts.append("{warning}" + escape(report.notice) + "{warning}\n")
    if report.target:
        parts.append(facts(report.target))
    if report.checks:
        parts.append(preflight(report.checks))
    if report.summary is not None:
        parts.append(f"*{escape(report.summary)}* — {verdict(report)}\n")
    for s in report.sections:
        if s.title:
            parts.append(f"h2. {escape(s.title)}\n")
        parts += [block(b) for b in s.blocks]
    if report.findings:
        parts.append(findings(report.findings))
    if report.errors:
        parts.append(errors(report.errors))
    return "\n".join(parts)


def verdict(report: doc.Report) -> str:
    """``2 critical, 1 warning`` in colour, or what was (not) found."""
    found, otherwise = doc.verdict(report)
    return ", ".join(f"{{color:{SEVERITY_COLOUR[s]}}}{n} {s}{{color}}" for s, n in found) or escape(otherwise)


def facts(rows: Sequence[doc.Fact]) -> str:
    return "".join(f"* *{escape(f.label)}:* {inline(f.value)}\n" for f in rows)


def block(b: doc.Block) -> str:
    """One block as Jira markup (ending with a newline)."""
    match b:
        case doc.Paragraph(line, _):
            return inline(line) + "\n"
        case doc.Items(items, level, numbered):
            return "".join(f"{('#' if numbered else '*') * (level + 1)} {inline(i)}\n" for i in items)
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
            return verbatim("noformat", [f"{lang}:", *lines] if lang else lines)
        case doc.Commands(lines):
            return verbatim("code:bash", lines)
        case doc.Details(title, subtitle, body, _):
            head = f"h3. {escape(title)}" + (f" — {escape(subtitle)}" if subtitle else "") + "\n"
            return "\n".join([head, *(block(i) for i in body)])
    raise AssertionError(f"no Jira rendering for {b!r}")


def table(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> str:
    """``||header||…`` then ``|cell|…`` rows; code columns monospace; an empty cell as ``-``."""
    lines = ["||" + "||".join(escape(c.header) for c in columns) + "||"]
    lines += ["|" + "|".join(mono(v) if c.code and v != "-" else escape(v) or "-"
                             for c, v in zip(columns, row, strict=True)) + "|" for row in rows]
    return "\n".join(lines) + "\n"


def findings(items: Sequence[doc.FindingItem]) -> str:
    """``h2. Findings``; per finding a line, its evidence and fix as a list, then its commands as a code block."""
    out = ["h2. Findings\n"]
    for f in items:
        lines = [f"* *{f.code}* {{color:{SEVERITY_COLOUR.get(f.severity, 'black')}}}({f.severity}){{color}} "
                 f"{escape(f.title)}: {mono(f.subject)}"]
        lines += [f"** {inline(e)}" for e in f.evidence]
        if f.fix:
            lines.append(f"** *Fix:* {inline(f.fix)}")
        lines.append(f"** More: {mono(f.more_info) if ' ' in f.more_info else f.more_info}")
        out.append("\n".join(lines) + "\n")
        if f.commands:
            out.append(verbatim("code:bash", f.commands))
    return "\n".join(out)


def errors(items: Sequence[ProbeError]) -> str:
    """``h2. Could not see`` and one line per (folded) error."""
    lines = ["h2. Could not see\n"]
    lines += [f"* *{escape(e.probe)}:* {escape(e.message)}" + (f" _(hint: {escape(e.hint)})_" if e.hint else "")
              for e in fold_errors(list(items))]
    return "\n".join(lines) + "\n"


def preflight(checks: Sequence[doc.Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"* {MARKS.get(c.status, '(?)')} *{escape(c.name)}:* {escape(c.detail)}")
        lines += [f"** fix: {mono(fix)}" for fix in c.fixes]
    return "\n".join(lines) + "\n" if lines else ""
