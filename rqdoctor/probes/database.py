"""Database probe: sessions, open transactions and lock waits on MariaDB/MySQL and PostgreSQL.

One read-only connection per distinct server (an admin ``--db-url`` preferred over site accounts),
all servers at once, each bounded by the deadline. Sessions are then tied to local processes
through the socket tables (:mod:`rqdoctor.probes.sockets`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType

import psutil

from rqdoctor.config import DbTarget
from rqdoctor.dbroutes import ROUTE_SITE, is_privileged_route, route_of
from rqdoctor.deadline import Deadline
from rqdoctor.model import DatabaseState, DbAccess, DbSession, LockWait, ProbeError, ProcessInfo
from rqdoctor.probes.processes import is_worker_argv, redact_argv
from rqdoctor.probes.sockets import LocalSockets
from rqdoctor.redact import MASK, redact_text

PROBE = "database"
QUERY_FETCH = 2000
"""Characters of query text fetched from the server (redacted, then cut to QUERY_CHARS)."""
QUERY_CHARS = 500
DRIVER_SHARE = 0.9
"""Driver timeouts use this share of the time left, so their precise error beats the hard cut-off."""
TIMEOUT_HINT = "Raise --timeout to wait longer"
_MODULES = {"mariadb": "rqdoctor.probes.db_mariadb", "postgres": "rqdoctor.probes.db_postgres"}
_MYSQL_CLIENTS = {"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin"}
LIMITED_HINT = {
    "mariadb": "pass --db-url mysql://root@HOST:3306 (or a user with the PROCESS privilege) to see every session",
    "postgres": "pass --db-url postgresql://postgres@HOST:5432 (or a role with pg_read_all_stats) to see every session",
}


class MissingDriver(Exception):
    """The database driver cannot be imported."""

    def __init__(self, package: str, install: str) -> None:
        super().__init__(f"the {package} driver is not importable")
        self.hint = f"install it in rqdoctor's environment: {install}"


@dataclass
class ServerView:
    """What one server showed through one connection (the probe's internal result)."""

    target: DbTarget
    server_ports: set[int] = field(default_factory=set)
    """Ports the server listens on (as reported, and as configured)."""
    server_ip: str | None = None
    """Address the probe reached it at; None over a Unix socket."""
    unix_paths: set[str] = field(default_factory=set)
    sessions: list[DbSession] = field(default_factory=list)
    lock_waits: list[LockWait] = field(default_factory=list)
    attr_pids: dict[int, int] = field(default_factory=dict)
    """Session id -> ``_pid`` connection attribute."""
    limited: str = ""
    """What this account cannot see; empty when it sees everything."""
    notes: list[ProbeError] = field(default_factory=list)
    """Reads that failed while the rest succeeded."""

    @property
    def dsn(self) -> str:
        return self.target.redacted()

    def partial(self, what: str, read: Callable[[], object]) -> None:
        """Run one optional read; its failure becomes a note instead of losing the whole server."""
        try:
            read()
        except Exception as exc:
            self.notes.append(describe_error(self.target, exc, f"{what} unreadable: "))


def driver_timeout(deadline: Deadline) -> float:
    """Timeout for one driver operation."""
    return deadline.timeout() * DRIVER_SHARE


def clean_query(text: str | bytes | None) -> str | None:
    """Query text as stored: secrets masked, cut to QUERY_CHARS."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= QUERY_CHARS else text[: QUERY_CHARS - 1] + "…"


def probe_databases(targets: list[DbTarget], deadline: Deadline, errors: list[ProbeError]) -> DatabaseState:
    """Read every distinct server once through the given accounts (see :func:`probe_groups`)."""
    return probe_groups(server_groups(targets), deadline, errors)


def probe_groups(groups: list[list[DbTarget]], deadline: Deadline, errors: list[ProbeError],
                 scope: Iterable[str] = ()) -> DatabaseState:
    """Read every server once (its candidate accounts in order), concurrently; failures go to ``errors``.

    With a ``scope`` (database names), sessions of other databases are dropped and counted, unless a
    lock wait ties them to a session in scope.
    """
    outcomes = _run_all([lambda c=c: _probe_server(c, deadline) for c in groups], deadline)
    state = DatabaseState(scope=sorted(set(scope)))
    views = []
    for candidates, outcome in zip(groups, outcomes, strict=True):
        dsn = candidates[-1].redacted()
        if outcome is None:
            errors.append(ProbeError(PROBE, "timeout",
                                     f"{dsn}: no complete reply within the {deadline.seconds:g} s deadline",
                                     "the server accepts connections but does not answer: is it overloaded or hung? "
                                     + TIMEOUT_HINT, subject=dsn))
            continue
        view, problems, tried = outcome
        errors.extend(problems)
        if view is None:
            continue
        if state.scope:
            hidden_sessions, hidden_waits = keep_scope(view, set(state.scope))
            state.hidden_sessions += hidden_sessions
            state.hidden_lock_waits += hidden_waits
        views.append(view)
        errors.extend(view.notes)
        state.servers.append(view.dsn)
        state.sessions.extend(view.sessions)
        state.lock_waits.extend(view.lock_waits)
        state.access.append(DbAccess(server=view.dsn, user=view.target.user, route=route_of(view.target),
                                     detail=view.target.source, privileged=not view.limited, tried=tried))
        if view.limited:
            state.limited_view.append(view.dsn)
            hint = LIMITED_HINT[view.target.kind] + (f"; privileged routes tried first: {'; '.join(tried)}"
                                                     if tried else "")
            errors.append(ProbeError(PROBE, "limited", f"{view.dsn}: seen through account {view.target.user!r} "
                                     f"({view.target.source}); {view.limited}", hint, subject=view.dsn))
    attach_clients(views, LocalSockets())
    return state


def keep_scope(view: ServerView, scope: set[str]) -> tuple[int, int]:
    """Drop sessions of databases outside ``scope`` unless a lock wait links them to one inside; counts dropped."""
    kept = {s.session_id for s in view.sessions if s.db in scope}
    waits = view.lock_waits
    grew = True
    while grew:
        linked = {sid for w in waits if {w.waiting_session, w.blocking_session} & kept
                  for sid in (w.waiting_session, w.blocking_session)}
        grew = not linked <= kept
        kept |= linked
    before = (len(view.sessions), len(view.lock_waits))
    view.sessions = [s for s in view.sessions if s.session_id in kept]
    view.lock_waits = [w for w in waits if w.waiting_session in kept]
    return before[0] - len(view.sessions), before[1] - len(view.lock_waits)


def server_groups(targets: Iterable[DbTarget]) -> list[list[DbTarget]]:
    """Targets grouped by server, each group's admin (``--db-url``) targets first."""
    groups: dict[tuple[str, str, int | None, str], list[DbTarget]] = {}
    for target in targets:
        groups.setdefault(target.key(), []).append(target)
    return [sorted(group, key=lambda t: not t.admin) for group in groups.values()]


Outcome = tuple[ServerView | None, list[ProbeError], list[str]]


def _run_all(jobs: list[Callable[[], Outcome]], deadline: Deadline) -> list[Outcome | None]:
    """Run each job in a daemon thread; a job still running at the deadline yields None (and is abandoned)."""
    results: list[Outcome | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,), name=f"rqdoctor-db-{i}", daemon=True) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline.remaining())
    return list(results)


def _probe_server(candidates: list[DbTarget], deadline: Deadline) -> Outcome:
    """The first account that logs in and sees everything reads the server, else the first that logged in.

    A failed privileged route is only noted (``tried``); an unreachable server is not retried.
    """
    problems: list[ProbeError] = []
    tried: list[str] = []
    fallback: ServerView | None = None
    for target in candidates:
        if deadline.expired():
            if fallback is None and not problems:
                dsn = candidates[-1].redacted()
                problems.append(ProbeError(PROBE, "timeout", f"{dsn}: not read, no time left before the "
                                           f"{deadline.seconds:g} s deadline", TIMEOUT_HINT, subject=dsn))
            break
        privileged = is_privileged_route(target)
        try:
            view = _module(target.kind).read_server(target, deadline)
        except Exception as exc:
            error = describe_error(target, exc)
            if privileged:
                tried.append(f"{target.source}: {error.message}")
                continue
            problems.append(error)
            if error.kind != "auth":
                break
            continue
        if not view.limited:
            return view, problems, tried
        if fallback is None:
            fallback = view
        if privileged:
            tried.append(f"{target.source}: logged in as {target.user!r} but {view.limited}")
        elif route_of(target) == ROUTE_SITE:
            break
    return fallback, problems, tried


def _module(kind: str) -> ModuleType:
    return importlib.import_module(_MODULES[kind])


def describe_error(target: DbTarget, exc: BaseException, what: str = "") -> ProbeError:
    """A driver (or any) exception as a one-line ProbeError (``DSN: what + cause``), the password scrubbed."""
    dsn = target.redacted()
    if isinstance(exc, MissingDriver):
        return ProbeError(PROBE, "missing_tool", f"{dsn}: {exc}", exc.hint, subject=dsn)
    try:
        kind, hint = _module(target.kind).classify(exc) or ("error", "")
    except Exception:
        kind, hint = "error", ""
    text = _one_line(exc)
    if target.password:
        text = text.replace(target.password, MASK)
    return ProbeError(PROBE, kind, f"{dsn}: {what}{redact_text(text)}", hint, subject=dsn)


def _one_line(exc: BaseException) -> str:
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        text = f"{args[1]} (error {args[0]})"
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:2]) or type(exc).__name__


# --- sessions -> local processes ---------------------------------------------------------


def attach_clients(views: list[ServerView], sockets: LocalSockets) -> None:
    """Fill ``client_pid`` and ``client_match`` of every session from the local socket tables."""
    for view in views:
        unix_pid, unix_reason = _only_unix_client(view, sockets)
        holders = ServerClients(view, sockets)
        for session in view.sessions:
            session.client_pid, session.client_match = _client_of(session, view, sockets, unix_pid, unix_reason,
                                                                  holders)


def _client_of(session: DbSession, view: ServerView, sockets: LocalSockets, unix_pid: int | None,
               unix_reason: str, holders: ServerClients) -> tuple[int | None, str]:
    attr = view.attr_pids.get(session.session_id)
    host, port = session.client_host, session.client_port
    if host is None:
        return None, "hidden"
    if port is not None:
        server_ip = None if view.server_ip is None or sockets.is_local(view.server_ip) else view.server_ip
        owners = sockets.tcp_owners(host, port, view.server_ports, server_ip)
        if owners:
            return _pick(owners, attr), "tcp"
        if not sockets.is_local(host):
            return None, "remote"
    elif view.target.kind == "postgres":
        owners = [pid for pids in sockets.unix_client_owners(view.unix_paths, session.session_id).values()
                  for pid in pids]
        if owners:
            return _pick(owners, attr), "unix"
    verified = holders.by_attr(attr) if attr is not None else None
    if verified is not None:
        return verified, "_pid"
    if port is None and view.target.kind != "postgres":
        return unix_pid, ("unix" if unix_pid else unix_reason)
    return None, "no_local_socket"


class ServerClients:
    """The local holders of a connection to one server, read once, to verify ``_pid`` connection attributes."""

    def __init__(self, view: ServerView, sockets: LocalSockets) -> None:
        self.view, self.sockets = view, sockets

    @cached_property
    def _namespace_pids(self) -> dict[int, int | None]:
        """Holder host pid -> its innermost ``NSpid`` (the pid it sees itself as)."""
        from rqdoctor.probes.namespaces import last_nspid

        pids = {pid for owners in self.sockets.unix_client_owners(self.view.unix_paths).values() for pid in owners}
        pids |= {c.pid for c in self.sockets.tcp if c.raddr and c.raddr.port in self.view.server_ports}
        pids.discard(os.getpid())
        return {pid: last_nspid(pid) for pid in pids}

    def by_attr(self, attr: int) -> int | None:
        """The one holder a ``_pid`` attribute names: its host pid is ``attr``, or (in a container, where the client
        reports its namespace pid, which on the host may be an unrelated process) its innermost ``NSpid`` is.
        None for none or several: the session stays unmatched rather than name the wrong process."""
        found = {pid for pid, inner in self._namespace_pids.items() if attr in (pid, inner)}
        return found.pop() if len(found) == 1 else None


def _only_unix_client(view: ServerView, sockets: LocalSockets) -> tuple[int | None, str]:
    """MariaDB does not say which Unix connection is which session: usable only when one process has them all."""
    if view.target.kind == "postgres" or not any(s.client_port is None for s in view.sessions):
        return None, ""
    owners = {pid for pids in sockets.unix_client_owners(view.unix_paths).values() for pid in pids} - {os.getpid()}
    if len(owners) == 1:
        return owners.pop(), ""
    return None, "unix_ambiguous" if owners else "no_local_socket"


def _pick(owners: list[int], attr: int | None) -> int:
    """One pid among the holders of a socket shared across fork(): the ``_pid`` one, else the youngest."""
    unique = set(owners)
    if attr in unique:
        return attr
    if len(unique) == 1:
        return unique.pop()

    def born(pid: int) -> float:
        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return 0.0

    return max(unique, key=born)


def client_pids(state: DatabaseState) -> set[int]:
    """Local pids found behind database sessions."""
    return {s.client_pid for s in state.sessions if s.client_pid}


def client_processes(pids: Iterable[int]) -> list[ProcessInfo]:
    """ProcessInfo (command line redacted) for client processes not yet in the snapshot; gone ones are skipped."""
    infos = []
    for pid in pids:
        try:
            infos.append(_describe_client(psutil.Process(pid)))
        except (psutil.Error, OSError):
            continue
    return infos


def _describe_client(proc: psutil.Process) -> ProcessInfo:
    with proc.oneshot():
        argv = proc.cmdline()
        info = ProcessInfo(pid=proc.pid, ppid=proc.ppid(), create_time=proc.create_time(),
                           cmdline=_redact_client_argv(argv), status=proc.status(), worker_like=is_worker_argv(argv))
        readers: dict[str, Callable[[], object]] = {
            "username": proc.username, "cwd": proc.cwd, "num_threads": proc.num_threads,
            "rss": lambda: proc.memory_info().rss,
        }
        for name, read in readers.items():
            with contextlib.suppress(psutil.AccessDenied):
                setattr(info, name, read())
    info.pgid, info.sid = os.getpgid(proc.pid), os.getsid(proc.pid)
    return info


def _redact_client_argv(argv: list[str]) -> list[str]:
    """``redact_argv`` plus the MySQL clients' glued ``-pSECRET``."""
    argv = redact_argv(argv)
    if argv and os.path.basename(argv[0]) in _MYSQL_CLIENTS:
        argv = [f"-p{MASK}" if a.startswith("-p") and len(a) > 2 else a for a in argv]
    return argv
