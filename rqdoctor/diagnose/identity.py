"""The one resolver from an RQ worker hash (hostname, pid) to a process of the snapshot (pure, no I/O).

A hash names a local process when its hostname is this host's and its pid a process in rqdoctor's own PID
namespace, or when a foreign PID namespace (a container, ``unshare``) whose UTS hostname is the hash's
holds a process whose last ``NSpid`` is the hash's pid. Every other hash is remote. Nothing else in
diagnosis maps a hash's pid to a process.
"""

from __future__ import annotations

from dataclasses import dataclass

from rqdoctor.model import ProcessInfo, Snapshot, WorkerInfo


@dataclass(frozen=True)
class Resolution:
    """Where a worker hash lives and the process holding its pid there (None: no such process)."""

    local: bool
    """Its hostname is this host's, or a container's on this host."""
    process: ProcessInfo | None = None
    container: str | None = None
    """The container (UTS) hostname it was resolved through; None for this host's own namespace."""


def container_names(processes: list[ProcessInfo]) -> set[str]:
    """UTS hostnames of the foreign namespaces seen on this host."""
    return {p.identity.uts_hostname for p in processes
            if p.identity is not None and p.identity.foreign_ns and p.identity.uts_hostname}


def resolve(hostname: str | None, pid: int | None, host: str, processes: list[ProcessInfo]) -> Resolution:
    """Resolve ``(hostname, pid)`` from a worker hash against the snapshot's ``host`` and ``processes``."""
    if not hostname:
        return Resolution(False)
    if hostname == host:
        own = [p for p in processes if p.pid == pid and not (p.identity is not None and p.identity.foreign_ns)]
        return Resolution(True, own[0] if own else None)
    if hostname not in container_names(processes):
        return Resolution(False)
    inside = [p for p in processes if p.identity is not None and p.identity.foreign_ns
              and p.identity.uts_hostname == hostname and p.identity.ns_pid == pid]
    # Several namespaces may share a hostname (a restarted pod): the newest process wins.
    inside.sort(key=lambda p: p.create_time or 0.0)
    return Resolution(True, inside[-1] if inside else None, hostname)


def resolve_worker(w: WorkerInfo, snapshot: Snapshot) -> Resolution:
    """:func:`resolve` for a worker hash of ``snapshot``."""
    return resolve(w.hostname, w.pid, snapshot.host, snapshot.processes)


def is_local_hostname(hostname: str | None, host: str, processes: list[ProcessInfo]) -> bool:
    """The hostname is this host's or a container's on it."""
    return bool(hostname) and (hostname == host or hostname in container_names(processes))
