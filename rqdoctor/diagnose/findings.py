"""The findings catalogue: stable codes, each produced by one small rule function.

A rule states its code, severity and title once, in :func:`rule`; it yields :class:`Hit` values
(what it found and the evidence), and the registry stamps code, severity and title on each to
make a :class:`Finding`. Code ranges: RQD1xx running jobs, RQD2xx workers and horses, RQD4xx
database, RQD5xx queues and Redis. Every code has a section in ``docs/findings.md`` whose heading
repeats the registry's title and severity (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "warning", "info")
DOCS_URL = "docs/findings.md"


@dataclass
class Hit:
    """What a rule found: its subject, the evidence it rests on, and the fix."""

    subject: str
    """What it is about: ``job <id>``, ``worker <name>``, ``queue <name>``, ``db session <id>``, ``process <pid>``."""
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    """Prose; commands go in :attr:`commands`, never inline."""
    commands: list[str] = field(default_factory=list)
    """Exact commands the fix suggests, with real values, each printed whole on its own line (never run)."""
    job_id: str | None = None
    pid: int | None = None
    worker: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable details (blocker, peer, child…) for JSON consumers."""
    severity: str | None = None
    """Only to raise the rule's severity for this hit (the evidence says why); None keeps the rule's."""


@dataclass
class Finding:
    """One problem found, with its evidence and the fix (a :class:`Hit` stamped by its rule)."""

    code: str
    severity: str
    title: str
    subject: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    commands: list[str] = field(default_factory=list)
    job_id: str | None = None
    pid: int | None = None
    worker: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def more_info(self) -> str:
        """Link to the catalogue section of this code."""
        return f"{DOCS_URL}#{self.code.lower()}"


Check = Callable[[Any], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: its code, default severity, title and the function that applies it."""

    code: str
    severity: str
    title: str
    check: Check

    def findings(self, context: Any) -> Iterator[Finding]:
        """Apply the rule and stamp its code, severity and title on every hit."""
        for hit in self.check(context):
            yield Finding(self.code, hit.severity or self.severity, self.title, hit.subject, hit.evidence, hit.fix,
                          hit.commands, hit.job_id, hit.pid, hit.worker, hit.data)


RULES: dict[str, Rule] = {}


def rule(code: str, severity: str, title: str) -> Callable[[Check], Check]:
    """Register ``check(context) -> hits`` under a stable code, severity and title."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity}")

    def register(check: Check) -> Check:
        if code in RULES:
            raise ValueError(f"duplicate rule code {code}")
        RULES[code] = Rule(code, severity, title, check)
        return check

    return register


def severity_rank(severity: str) -> int:
    """0 for critical, 1 warning, 2 info: for sorting."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
