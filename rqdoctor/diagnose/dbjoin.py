"""Join database sessions and lock waits to local processes, jobs and roles (pure)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rqdoctor.diagnose.link import Links
from rqdoctor.model import DbSession, LockWait, ProcessInfo, Snapshot

WEB_SERVERS = ("gunicorn", "uwsgi", "waitress", "frappe.app", "werkzeug")
DB_CLIENTS = ("mysql", "mariadb", "psql", "pgcli", "mycli")
CONSOLES = ("console", "ipython", "mariadb-console", "postgres-console", "jupyter")


@dataclass
class SessionRole:
    """Who is behind one database session."""

    role: str
    """``rq-job``, ``rq-worker``, ``web-worker``, ``console``, ``db-client``, ``process``, ``remote``, ``unmatched``."""
    pid: int | None = None
    job_id: str | None = None
    description: str = ""


@dataclass
class LockGraph:
    """The lock-wait graph of one snapshot with every session's role."""

    sessions: dict[tuple[str, int], DbSession] = field(default_factory=dict)
    roles: dict[tuple[str, int], SessionRole] = field(default_factory=dict)
    waits: list[LockWait] = field(default_factory=list)

    def session(self, server: str, session_id: int) -> DbSession | None:
        """A session by server and id."""
        return self.sessions.get((server, session_id))

    def role(self, server: str, session_id: int) -> SessionRole:
        """The role of a session (``unmatched`` when unknown)."""
        return self.roles.get((server, session_id), SessionRole("unmatched"))

    def blockers_of(self, server: str, session_id: int) -> list[LockWait]:
        """Edges where this session waits."""
        return [w for w in self.waits if w.server == server and w.waiting_session == session_id]

    def chain(self, wait: LockWait) -> tuple[list[int], bool]:
        """Session ids from the waiter along the blockers; True when it comes back on itself (a cycle)."""
        path = [wait.waiting_session]
        current = wait
        while True:
            if current.blocking_session in path:
                return [*path, current.blocking_session], True
            path.append(current.blocking_session)
            onward = self.blockers_of(wait.server, current.blocking_session)
            if not onward:
                return path, False
            current = onward[0]


def role_of_process(process: ProcessInfo | None, links: Links) -> SessionRole:
    """Classify a local client process."""
    if process is None:
        return SessionRole("unmatched")
    job = links.job_for_pid(process.pid)
    if job is not None:
        return SessionRole("rq-job", process.pid, job.job.job_id, f"RQ job {job.job.job_id}")
    argv = " ".join(process.cmdline)
    program = os.path.basename(process.cmdline[0]) if process.cmdline else ""
    if links.worker_for_pid(process.pid) is not None or (process.worker_like and "worker" in argv):
        return SessionRole("rq-worker", process.pid, description=f"RQ worker pid {process.pid}")
    if any(w in argv for w in WEB_SERVERS):
        return SessionRole("web-worker", process.pid, description=f"web worker pid {process.pid} ({program})")
    if program in DB_CLIENTS:
        return SessionRole("db-client", process.pid, description=f"{program} client pid {process.pid}")
    programs = {os.path.basename(a) for a in process.cmdline}
    if any(c in programs or c in program for c in CONSOLES):
        return SessionRole("console", process.pid, description=f"console pid {process.pid}")
    return SessionRole("process", process.pid, description=f"pid {process.pid}: {argv[:80]}")


def build_graph(snapshot: Snapshot, links: Links) -> LockGraph:
    """Sessions, roles and lock waits of the snapshot's database state."""
    graph = LockGraph()
    if snapshot.database is None:
        return graph
    processes = {p.pid: p for p in snapshot.processes}
    for s in snapshot.database.sessions:
        key = (s.server, s.session_id)
        graph.sessions[key] = s
        if s.client_pid is not None:
            graph.roles[key] = role_of_process(processes.get(s.client_pid), links)
            if graph.roles[key].role == "unmatched":
                graph.roles[key] = SessionRole("process", s.client_pid, description=f"pid {s.client_pid}")
        elif s.client_match == "remote":
            graph.roles[key] = SessionRole("remote", description=f"remote host {s.client_host}")
    graph.waits = list(snapshot.database.lock_waits)
    return graph


def is_postgres(server: str) -> bool:
    """True for a PostgreSQL server DSN."""
    return server.startswith("postgres")


def kill_statement(server: str, session_id: int) -> str:
    """The statement that ends a session (printed, never executed)."""
    if is_postgres(server):
        return f"SELECT pg_terminate_backend({session_id});"
    return f"KILL {session_id};"


def holding(session: DbSession | None) -> str:
    """What a blocking session is doing: its query, or how long it idles in its transaction."""
    if session is None:
        return "unknown (session not visible)"
    if session.idle_in_transaction or (session.command or "").lower() == "sleep":
        return f"idle in transaction for {session.time_s or 0:.0f} s"
    return f"running `{(session.query or '?')[:160]}` for {session.time_s or 0:.0f} s"


def blocker_dict(graph: LockGraph, wait: LockWait) -> dict[str, Any]:
    """The ``blocker`` object of a job's JSON: who holds the lock, what it does, how to end it."""
    session = graph.session(wait.server, wait.blocking_session)
    role = graph.role(wait.server, wait.blocking_session)
    chain, cycle = graph.chain(wait)
    who = role.description or role.role
    guess = "likely " if wait.inferred else ""
    return {
        "server": wait.server,
        "session_id": wait.blocking_session,
        "pid": role.pid,
        "role": role.role,
        "job_id": role.job_id,
        "doing": holding(session),
        "trx_age_s": session.trx_age_s if session else None,
        "table": wait.table,
        "lock_kind": wait.kind,
        "wait_age_s": wait.wait_age_s,
        "chain": chain,
        "cycle": cycle,
        "inferred": wait.inferred,
        "kill": kill_statement(wait.server, wait.blocking_session),
        "summary": f"{guess}session {wait.blocking_session} = {who}, {holding(session)}"
                   + (f", lock on {wait.table}" if wait.table else "")
                   + (" (a guess: the server does not say who holds metadata locks)" if wait.inferred else ""),
    }


def job_waits(graph: LockGraph) -> dict[str, LockWait]:
    """Job id -> the lock wait its database session is in."""
    found: dict[str, LockWait] = {}
    for wait in graph.waits:
        role = graph.role(wait.server, wait.waiting_session)
        if role.role == "rq-job" and role.job_id:
            found.setdefault(role.job_id, wait)
    return found
