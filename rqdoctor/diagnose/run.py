"""Apply every rule to a snapshot: the one entry point of diagnosis."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rqdoctor.diagnose import (  # noqa: F401  (registers rules)
    rules_bench,
    rules_db,
    rules_jobs,
    rules_locks,
    rules_queues,
    rules_sched,
    rules_stuck,
    rules_workers,
)
from rqdoctor.diagnose.activity import (
    KIND_DB_LOCK_WAIT,
    KIND_DB_QUERY,
    PROGRESS_PROGRESSING,
    Activity,
    classify,
    known_endpoints,
)
from rqdoctor.diagnose.context import DEFAULT_MIN_AGE_S, Context
from rqdoctor.diagnose.dbjoin import blocker_dict, build_graph, job_waits, likely_blocker_dict, likely_waits
from rqdoctor.diagnose.findings import RULES, Finding, severity_rank
from rqdoctor.diagnose.link import Links, link
from rqdoctor.model import ProcKey, Snapshot


@dataclass
class Diagnosis:
    """Findings plus the joins they were computed from (renderers show both)."""

    context: Context
    findings: list[Finding] = field(default_factory=list)
    blockers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Job id -> what holds the database lock it waits for (see the database join)."""

    @property
    def links(self) -> Links:
        """The job/worker/process join."""
        return self.context.links

    @property
    def activities(self) -> dict[ProcKey, Activity]:
        """Activity per sampled process."""
        return self.context.activities

    def problems(self) -> list[Finding]:
        """Findings of severity warning or worse."""
        return [f for f in self.findings if severity_rank(f.severity) <= severity_rank("warning")]


def diagnose(snapshot: Snapshot, codes: set[str] | None = None, min_age_s: float = DEFAULT_MIN_AGE_S,
             older_than_s: float | None = None) -> Diagnosis:
    """Run the rules (all, or those whose code starts with one of ``codes``) on ``snapshot``."""
    links = link(snapshot)
    context = Context(snapshot, links, classify_all(snapshot), min_age_s, build_graph(snapshot, links),
                      older_than_s=older_than_s)
    context.graph.likely = likely_waits(snapshot, context.graph, context.activities)
    blockers = mark_lock_waits(context)
    mark_query_progress(context)
    findings: list[Finding] = []
    for code, registered in sorted(RULES.items()):
        if codes is None or any(code.startswith(c) for c in codes):
            findings.extend(registered.findings(context))
    findings.sort(key=lambda f: (severity_rank(f.severity), f.code, f.subject))
    return Diagnosis(context, findings, blockers)


def mark_lock_waits(context: Context) -> dict[str, dict[str, Any]]:
    """Jobs whose DB session waits on a lock get activity ``db_lock_wait``; returns job id -> blocker."""
    blockers = {}
    for job_id, wait in job_waits(context.graph).items():
        blocker = blocker_dict(context.graph, wait)
        blockers[job_id] = blocker
        victim = context.graph.role(wait.server, wait.waiting_session).key
        if victim is None:
            continue
        detail = f"waiting {wait.wait_age_s or 0:.0f} s for a {wait.kind} lock" + (
            f" on {wait.table}" if wait.table else "") + f"; held by {blocker['summary']}"
        current = context.activities.get(victim)
        if current is None:
            context.activities[victim] = Activity(KIND_DB_LOCK_WAIT, detail, progress="blocked")
        else:
            context.activities[victim] = dataclasses.replace(current, kind=KIND_DB_LOCK_WAIT, detail=detail)
    for likely in context.graph.likely:
        holder = likely_blocker_dict(context.graph, likely, likely.holders[0]) if likely.holders else None
        if holder is not None:
            blockers.setdefault(likely.job_id, holder)
        detail = f"likely waiting {likely.waited_s:.0f} s for a row lock; " + (
            f"held by {holder['summary']}" if holder else "the holder is not visible to this account")
        current = context.activities.get(likely.key) if likely.key is not None else None
        if likely.key is not None and current is not None:
            context.activities[likely.key] = dataclasses.replace(current, kind=KIND_DB_LOCK_WAIT, detail=detail)
    return blockers


def mark_query_progress(context: Context) -> None:
    """A job waiting on its own query is not stuck while the server works on it (rows examined keep moving)."""
    for (server, session_id), session in context.graph.sessions.items():
        role = context.graph.role(server, session_id)
        current = context.activities.get(role.key) if role.role == "rq-job" and role.key is not None else None
        if current is None or current.kind != KIND_DB_QUERY or session.command != "Query":
            continue
        before, after = session.examined_rows, session.examined_rows_later
        if before is None or after is None or after == before:
            continue  # MariaDB 10.11 often updates the counter only at the end: unchanged proves nothing
        line = (f"its query (session {session_id}) examined {after - before:+d} rows between two reads: "
                "the server is working on it")
        context.activities[role.key] = dataclasses.replace(
            current, progress=PROGRESS_PROGRESSING, progress_evidence=[*current.progress_evidence, line])


def classify_all(snapshot: Snapshot) -> dict[ProcKey, Activity]:
    """Activity of every process that has stack samples."""
    processes = {snapshot.key(p): p for p in snapshot.processes}
    activities = {}
    for stacks in snapshot.stacks:
        if not stacks.samples:
            continue
        key = ProcKey(stacks.host or snapshot.host, stacks.pid)
        process = processes.get(key)
        children = [p for p in snapshot.processes if p.ppid == stacks.pid and snapshot.key(p).host == key.host]
        activities[key] = classify(stacks, process, children, known=known_endpoints(snapshot, process))
    return activities
