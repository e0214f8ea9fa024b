"""One snapshot from the snapshots of several hosts of one bench (``--from a.json --from b.json``; pure, no I/O).

Each host's processes, stacks and errors keep their host; the Redis state is the newest snapshot's (all must
have read the same Redis server); database sessions seen from several hosts are one session each, and a
session whose client is on another collected host is tied to that host's process by its socket's address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from rqdoctor.model import (
    DatabaseState,
    DbAccess,
    DbSession,
    HealthState,
    HostSnapshot,
    LockWait,
    ProbeError,
    ProcessInfo,
    Snapshot,
)

SPREAD_S = 60.0
"""Snapshots collected further apart than this (by their hosts' clocks) get an error entry saying so."""
_MATCHED = ("tcp", "unix", "_pid")
"""``client_match`` values that name a process of the host whose database probe saw the session."""


class MergeError(ValueError):
    """The snapshots cannot be merged into one diagnosis (the message names the file)."""


def merge(sources: list[tuple[str, Snapshot]]) -> Snapshot:
    """Merge ``(file name, snapshot)`` pairs, one per host; raises :class:`MergeError` when they do not fit."""
    if len(sources) == 1:
        return sources[0][1]
    _check(sources)
    with_redis = [pair for pair in sources if pair[1].redis is not None]
    base = max(with_redis or sources, key=lambda pair: pair[1].generated_at)[1]
    merged = dataclasses.replace(base, processes=[], stacks=[], errors=[], preflight=[], database=None, hosts=[])
    for name, snap in sources:
        used = snap is base
        merged.hosts.append(HostSnapshot(snap.host, snap.generated_at, snap.rqdoctor_version, name, used,
                                         snap.target.bench_path, list(snap.target.bench_dirs)))
        merged.processes += [_stamped(p, snap.host) for p in snap.processes]
        merged.stacks += [dataclasses.replace(s, host=s.host or snap.host) for s in snap.stacks]
        # Another host's Redis read is not the one diagnosed: its failure says nothing about the state shown.
        merged.errors += [_host_error(e, snap.host) for e in snap.errors if used or e.probe != "redis"]
        merged.preflight += [c if used else dataclasses.replace(c, detail=f"{c.detail} (on {snap.host})")
                             for c in snap.preflight]
    spread = max(s.generated_at for _, s in sources) - min(s.generated_at for _, s in sources)
    if spread > SPREAD_S:
        merged.errors.append(ProbeError(
            "merge", "spread", f"the hosts' snapshots were collected {spread:.0f} s apart (by each host's clock): "
            "jobs that started or ended in between show as in the newest Redis state, their processes as each "
            "host saw them", "collect every host in one round (the ssh loop in parallel), with synchronised clocks"))
    merged.health = _health_of(sources, base, merged)
    merged.database = merge_databases([(s.host, s.database) for _, s in sources if s.database is not None])
    if merged.database is not None:
        match_remote_clients(merged.database.sessions, merged.processes)
    return merged


def _health_of(sources: list[tuple[str, Snapshot]], base: Snapshot, merged: Snapshot) -> HealthState | None:
    """The scheduler and bench health of the host where the scheduler runs (its process or held lock), else the
    newest snapshot's; the other hosts' OOM evidence is added, named by host. Marks the host used."""
    with_health = [s for _, s in sources if s.health is not None]
    if not with_health:
        return None
    running = [s for s in with_health if s.health is not None and (s.health.processes or (
        s.health.lock is not None and s.health.lock.state == "held"))]
    chosen = running[0] if running else (base if base.health is not None else with_health[0])
    assert chosen.health is not None
    health = dataclasses.replace(chosen.health, processes=[_stamped(p, chosen.host) for p in chosen.health.processes],
                                 oom_kills=dict(chosen.health.oom_kills), kernel_oom=list(chosen.health.kernel_oom))
    for snap in with_health:
        if snap is not chosen and snap.health is not None:
            health.oom_kills.update({f"{snap.host}:{path}": n for path, n in snap.health.oom_kills.items()})
            health.kernel_oom += [f"{snap.host}: {line}" for line in snap.health.kernel_oom]
            health.kernel_log_read = health.kernel_log_read or snap.health.kernel_log_read
    for h in merged.hosts:
        h.health_used = h.name == chosen.host
    return health


def _check(sources: list[tuple[str, Snapshot]]) -> None:
    """Refuse snapshots of one host twice, already merged ones, and ones of another Redis server or key prefix."""
    seen: dict[str, str] = {}
    for name, snap in sources:
        if snap.hosts:
            raise MergeError(f"{name}: already merged from several hosts; pass each host's own snapshot")
        if snap.host in seen:
            raise MergeError(f"{name}: host {snap.host} is already given by {seen[snap.host]} "
                             "(collect once per host)")
        seen[snap.host] = name
    with_redis = [(n, s) for n, s in sources if s.redis is not None]
    if not with_redis:
        return
    first_name, first = with_redis[0]
    for name, snap in with_redis[1:]:
        why = _other_redis(first, snap)
        if why:
            raise MergeError(f"{name}: {why} than {first_name}; a merge needs snapshots of one bench's Redis")


def _other_redis(a: Snapshot, b: Snapshot) -> str:
    """Why ``b`` read another Redis (or RQ key space) than ``a``; empty when it is the same."""
    assert a.redis is not None and b.redis is not None
    if a.redis.run_id and b.redis.run_id:
        if a.redis.run_id != b.redis.run_id:
            return f"another Redis server (run_id {b.redis.run_id[:12]}, not {a.redis.run_id[:12]})"
    elif a.target.redis_url != b.target.redis_url:
        return (f"another Redis URL ({b.target.redis_url}, not {a.target.redis_url}; no run_id recorded to tell "
                "whether it is the same server)")
    if a.target.key_prefix != b.target.key_prefix:
        return f"another RQ key prefix ({b.target.key_prefix!r}, not {a.target.key_prefix!r})"
    if a.target.queue_filter and b.target.queue_filter and a.target.queue_filter != b.target.queue_filter:
        return f"another bench id ({b.target.bench_id!r}, not {a.target.bench_id!r}: another bench's queues)"
    return ""


def _host_error(e: ProbeError, host: str) -> ProbeError:
    """``e`` with its host named (field and message)."""
    if e.host:
        return e
    return dataclasses.replace(e, host=host, message=f"{host}: {e.message}")


def _stamped(p: ProcessInfo, host: str) -> ProcessInfo:
    """``p`` with an identity that names its host."""
    ident = p.ident(host)
    return dataclasses.replace(p, identity=ident if ident.host else dataclasses.replace(ident, host=host))


def merge_databases(states: list[tuple[str, DatabaseState]]) -> DatabaseState | None:
    """One view of the database servers several hosts saw: a session once per (server, session id), preferring
    the copy whose host matched its client process (then stamped with that host)."""
    if not states:
        return None
    out = DatabaseState()
    sessions: dict[tuple[str, int], DbSession] = {}
    privileged: set[str] = set()
    for host, state in states:
        out.servers += [s for s in state.servers if s not in out.servers]
        out.scope += [s for s in state.scope if s not in out.scope]
        out.limited_view += [s for s in state.limited_view if s not in out.limited_view]
        privileged |= {a.server for a in state.access if a.privileged}
        out.access += _new_access(out.access, state.access)
        out.hidden_sessions = max(out.hidden_sessions, state.hidden_sessions)
        out.hidden_lock_waits = max(out.hidden_lock_waits, state.hidden_lock_waits)
        for s in state.sessions:
            key = (s.server, s.session_id)
            mine = dataclasses.replace(s, client_pid_host=s.client_pid_host or host) if s.client_pid else s
            if key not in sessions or (mine.client_pid and not sessions[key].client_pid):
                sessions[key] = mine
        out.lock_waits += _new_waits(out.lock_waits, state.lock_waits)
    out.limited_view = [s for s in out.limited_view if s not in privileged]
    out.sessions = list(sessions.values())
    return out


def _new_access(have: list[DbAccess], more: list[DbAccess]) -> list[DbAccess]:
    known = {a.server for a in have}
    return [a for a in more if a.server not in known]


def _new_waits(have: list[LockWait], more: list[LockWait]) -> list[LockWait]:
    known = {(w.server, w.waiting_session, w.blocking_session, w.kind) for w in have}
    return [w for w in more if (w.server, w.waiting_session, w.blocking_session, w.kind) not in known]


def match_remote_clients(sessions: Iterable[DbSession], processes: list[ProcessInfo]) -> None:
    """Tie each session whose client no host matched to the collected process whose TCP socket's local address
    is the client address the server reports (``client_match`` ``tcp@<host>``): on another host, or in a
    container of this one with its own network.

    Behind NAT or a proxy the server sees another address: no socket has it, and the session stays unmatched.
    """
    owners: dict[tuple[str, int], list[ProcessInfo]] = {}
    for p in processes:
        for c in p.connections:
            addr = _address(c.laddr)
            if addr is not None and c.raddr:
                owners.setdefault(addr, [])
                if p not in owners[addr]:
                    owners[addr].append(p)
    for s in sessions:
        if s.client_pid or s.client_match in _MATCHED or not s.client_host or s.client_port is None:
            continue
        if _loopback(s.client_host):
            continue  # each host has its own loopback: such an address names no process of another host
        found = owners.get((_canonical(s.client_host), s.client_port), [])
        hosts = {p.identity.host for p in found if p.identity is not None}
        if found and len(hosts) == 1:
            host = hosts.pop()
            # a socket shared across fork() (a worker and its horse): the youngest holder uses it, as on one host
            client = max(found, key=lambda p: p.create_time or 0.0)
            s.client_pid, s.client_pid_host, s.client_match = client.pid, host, f"tcp@{host}"


def _address(text: str) -> tuple[str, int] | None:
    """``(ip, port)`` of ``ip:port`` / ``[ip]:port``."""
    host, _, port = text.rpartition(":")
    return (_canonical(host.strip("[]")), int(port)) if port.isdigit() and host else None


def _canonical(host: str) -> str:
    """An IP in one spelling (IPv4-mapped IPv6 as IPv4); other names as given."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(_canonical(host)).is_loopback
    except ValueError:
        return host == "localhost"
