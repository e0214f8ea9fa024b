"""The findings catalogue: stable codes, each produced by one small rule function.

Code ranges: RQD1xx running jobs, RQD2xx workers and horses, RQD4xx database, RQD5xx queues and
Redis. Every code has a section in ``docs/findings.md`` (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "warning", "info")
DOCS_URL = "docs/findings.md"


@dataclass
class Finding:
    """One problem found, with its evidence and the fix."""

    code: str
    severity: str
    title: str
    subject: str
    """What it is about: ``job <id>``, ``worker <name>``, ``queue <name>``, ``db session <id>``."""
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    job_id: str | None = None
    pid: int | None = None
    worker: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """Machine-readable details (blocker, peer, child…) for JSON consumers."""

    @property
    def more_info(self) -> str:
        """Link to the catalogue section of this code."""
        return f"{DOCS_URL}#{self.code.lower()}"


@dataclass(frozen=True)
class Rule:
    """A registered rule: its code, default severity, title and the function that applies it."""

    code: str
    severity: str
    title: str
    check: Callable[[Any], Iterable[Finding]]


RULES: dict[str, Rule] = {}


Check = Callable[[Any], Iterable[Finding]]


def rule(code: str, severity: str, title: str) -> Callable[[Check], Check]:
    """Register ``check(context) -> findings`` under a stable code."""
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
