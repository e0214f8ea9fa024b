"""The findings catalogue: stable codes, each produced by one small rule function.

A rule states its code, severity and title once, in :func:`rule`; it yields :class:`Hit` values
(what it found and the evidence), and the registry stamps code, severity and title on each to
make a :class:`Finding`. Code ranges: RQD1xx running jobs, RQD2xx workers and horses, RQD4xx
database, RQD5xx queues and Redis, RQD6xx scheduler and bench. Every code has a section in ``docs/findings.md``
whose heading
repeats the registry's title and severity (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "warning", "info")


REMEDY_ACTIONS = ("stop_horse", "stop_orphan", "stop_worker", "fail_started", "prune_worker", "clear_job_hash")
"""What ``rqdoctor stuck --kill`` can do (``rqdoctor.actions``); a remedy with another action is only advice:

- ``stop_horse``: a live work-horse on this host: RQ's stop command, then SIGTERM, then SIGKILL to its
  process group; the job must end in failed or stopped;
- ``stop_orphan``: an orphaned horse (its worker is gone): SIGTERM, then SIGKILL to its group, then its
  started entry is moved to failed (no worker will);
- ``stop_worker``: the job runs in the worker process itself (SimpleWorker, Frappe NoFork): needs
  ``--kill-worker``;
- ``fail_started``: a started entry no process runs: moved to failed atomically (``--requeue``: to its queue);
- ``prune_worker``: a ghost worker hash with no process and no Redis connection: removed;
- ``clear_job_hash``: a zombie job hash (queued or started in no queue, registry or process): marked failed.
"""


@dataclass
class Remedy:
    """What can be done about a finding, as data: ``rqdoctor.actions`` acts on this, never on the fix text.

    The identity fields are what the actor re-verifies before every signal or Redis change.
    """

    action: str
    """One of :data:`REMEDY_ACTIONS`."""
    reason: str
    """One line: why (the evidence in short), written to the plan and the audit log."""
    host: str | None = None
    pid: int | None = None
    pgid: int | None = None
    create_time: float | None = None
    """The process's start time (epoch seconds) when it was seen; a different one means another process."""
    parent_pid: int | None = None
    """The registered worker's pid the process must still be a child of (None: an orphan, or no process)."""
    parent_create_time: float | None = None
    worker: str | None = None
    job_id: str | None = None
    execution_id: str | None = None
    queue: str | None = None
    member: str | None = None
    """The started-registry member exactly as stored (``job_id`` or ``job_id:execution_id``)."""
    expected: str = ""
    """The state after: ``failed``, ``stopped``, ``queued`` (with ``--requeue``) or ``absent``."""
    needs: str | None = None
    """A flag the action requires beyond ``--kill`` (``--kill-worker``, ``--prune-ghosts``), else None."""
    ns_pid: int | None = None
    """In a container: the process's pid in its own PID namespace (``pid`` stays the host pid signalled)."""
    pid_ns: int | None = None
    """In a container: the inode of its PID namespace, re-verified with ``ns_pid`` before a signal."""
    container_id: str | None = None
    container_name: str | None = None


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
    remedy: Remedy | None = None
    """What ``stuck --kill`` may do about it (None: nothing it can do safely)."""
    severity: str | None = None
    """Only to raise the rule's severity for this hit (the evidence says why); None keeps the rule's."""
    host: str | None = None
    """The host :attr:`pid` is on (a snapshot merged from several hosts names processes of each)."""


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
    remedy: Remedy | None = None
    host: str | None = None
    """The host ``pid`` is on (set with ``pid`` where the rule knows the process; None: unknown or no pid)."""

    @property
    def more_info(self) -> str:
        """Where this code is documented: ``rqdoctor explain CODE``, or its catalogue section's address."""
        from rqdoctor.catalogue import more_info  # imported when shown: diagnosing needs no package metadata

        return more_info(self.code)


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
                          hit.commands, hit.job_id, hit.pid, hit.worker, hit.data, hit.remedy, hit.host)


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
