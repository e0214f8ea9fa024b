"""One format-neutral report document: a command builds a :class:`Report`, each format's renderer shows it.

Prose is a tuple of inline parts: plain ``str`` and :class:`Code` (an identifier, query or command inside a
sentence). Nothing here holds Markdown or console markup; the only place backtick notation is read is
:func:`spans`, at the boundary with the diagnosis, whose evidence strings mark code as `` `x` ``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rqdoctor.diagnose.findings import Finding
from rqdoctor.model import ProbeError
from rqdoctor.render.layout import Col

Tone = Literal["plain", "muted", "alert", "ok", "critical", "warning", "info"]
"""How a line reads: plain, muted (secondary), alert (something could not be seen), ok, or a severity."""


@dataclass(frozen=True)
class Code:
    """An identifier, path, query or command inside prose (a code span in Markdown, ``{{…}}`` in Jira)."""

    text: str


Inline = str | Code
Line = tuple[Inline, ...]


def spans(text: str) -> Line:
    """Prose with `` `code` `` marks (as the diagnosis writes them) as inline parts."""
    parts: list[Inline] = []
    for n, piece in enumerate(re.split(r"`([^`]*)`", text)):
        if n % 2:
            parts.append(Code(piece))
        elif piece:
            parts.append(piece)
    return tuple(parts)


def plain(line: Line) -> str:
    """The line as plain text, code parts between backticks (how the terminal shows it)."""
    return "".join(p if isinstance(p, str) else f"`{p.text}`" for p in line)


@dataclass(frozen=True)
class Paragraph:
    """A sentence or a few: free text that wraps."""

    line: Line
    tone: Tone = "plain"


@dataclass(frozen=True)
class Items:
    """A list of short lines; ``level`` 1 is a sub-list of the line before it; ``numbered``: numbered from 1
    (steps the rest of the report refers to by number)."""

    items: tuple[Line, ...]
    level: int = 0
    numbered: bool = False


@dataclass(frozen=True)
class Fact:
    """One ``label: value`` line; ``alert`` when it says that something was not read or is hidden."""

    label: str
    value: Line
    alert: bool = False


@dataclass(frozen=True)
class Facts:
    """``label: value`` lines, labels aligned where the format can."""

    rows: tuple[Fact, ...]


@dataclass(frozen=True)
class Check:
    """One preflight check: status ``ok``/``warning``/``failed``, what, and the commands that fix it."""

    status: str
    name: str
    detail: str
    fixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checks:
    """Preflight checks, each with its fixes."""

    items: tuple[Check, ...]


@dataclass(frozen=True)
class Limit:
    """How many rows of a long table a human format lists: every one when ``everything``, else as many as the
    output shows (a terminal's height, else ``render.workers.PIPE_ROWS``) but never fewer than ``least``;
    ``more(shown)`` says what was left out and how to see it."""

    least: int
    more: Callable[[int], str]
    everything: bool = False


@dataclass(frozen=True)
class Table:
    """Rows of cells (plain strings, ``-`` for none). Columns say which cells are identifiers (``Col.kind``), which
    may be hidden when narrow (``Col.drop``), which are code (``Col.code``).

    ``brief``: a one-line-per-row summary where a format can (the terminal): columns with ``Col.detail`` left out,
    the one ``TEXT`` column cut to the line. ``tones``: one per row (its severity), or empty.
    """

    columns: tuple[Col, ...]
    rows: tuple[tuple[str, ...], ...]
    tones: tuple[Tone, ...] = ()
    brief: bool = False
    limit: Limit | None = None


@dataclass(frozen=True)
class CodeBlock:
    """Lines shown verbatim (a stack); ``short``: the trimmed lines a terminal shows instead, when given;
    ``lang``: what they are, e.g. ``mermaid`` (a diagram: drawn where the format can, else its source)."""

    lines: tuple[str, ...]
    short: tuple[str, ...] | None = None
    lang: str = ""


@dataclass(frozen=True)
class Commands:
    """Commands to copy, one a line, never wrapped."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Details:
    """A block about one subject: a title line (``title``, then ``subtitle``), then its body; folded away
    (``<details>``) where the format can."""

    title: str
    subtitle: str
    body: tuple[Block, ...]
    tone: Tone = "plain"


Block = Paragraph | Items | Facts | Checks | Table | CodeBlock | Commands | Details


@dataclass(frozen=True)
class Section:
    """A titled part of the report (``title`` None: it follows the summary untitled)."""

    title: str | None
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class FindingItem:
    """A finding as shown: code, severity, title, subject, evidence, fix, commands and where it is documented."""

    code: str
    severity: str
    title: str
    subject: str
    evidence: tuple[Line, ...]
    fix: Line
    commands: tuple[str, ...]
    more_info: str

    @classmethod
    def of(cls, f: Finding) -> FindingItem:
        return cls(f.code, f.severity, f.title, f.subject, tuple(spans(e) for e in f.evidence), spans(f.fix),
                   tuple(f.commands), f.more_info)


@dataclass(frozen=True)
class Report:
    """What a command shows, in this order: ``title``, ``target`` (what was diagnosed, how it was found),
    ``checks`` (preflight failures), ``summary`` (one line; the verdict follows from findings and errors),
    ``sections``, ``findings``, ``errors`` (what could not be seen). ``data`` builds the JSON output itself
    (only when it is asked for: it holds the whole snapshot). ``notice``: a warning shown before everything."""

    command: str
    data: Callable[[], dict[str, Any]]
    target: tuple[Fact, ...] = ()
    checks: tuple[Check, ...] = ()
    summary: str | None = None
    sections: tuple[Section, ...] = ()
    findings: tuple[FindingItem, ...] = ()
    errors: tuple[ProbeError, ...] = field(default_factory=tuple)
    notice: str | None = None

    @property
    def title(self) -> str:
        return f"rqdoctor {self.command}"


def report(command: str, data: Callable[[], dict[str, Any]], *, target: Sequence[Fact] = (),
           checks: Sequence[Check] = (), summary: str | None = None, sections: Sequence[Section] = (),
           findings: Sequence[Finding] = (), errors: Sequence[ProbeError] = (), notice: str | None = None) -> Report:
    """A :class:`Report` from plain lists and the diagnosis' findings."""
    return Report(command, data, tuple(target), tuple(checks), summary, tuple(sections),
                  tuple(FindingItem.of(f) for f in findings), tuple(errors), notice)


def section(title: str | None, *blocks: Block | None) -> Section:
    """A section of the blocks given (None ones left out)."""
    return Section(title, tuple(b for b in blocks if b is not None))


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def counts(findings: Sequence[FindingItem | Finding]) -> dict[str, int]:
    """Findings per severity, most severe first."""
    return {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_RANK}


def verdict(report: Report) -> tuple[list[tuple[str, int]], str]:
    """(severity, count) of the findings found, most severe first; when none, what that means instead."""
    found = [(s, n) for s, n in counts(report.findings).items() if n]
    if found:
        return found, ""
    if report.errors:
        return [], "no problems found in what could be seen; some things could not be seen (below)"
    return [], "no problems found"
