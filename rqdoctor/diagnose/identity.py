"""The one resolver from an RQ worker hash (hostname, pid) to a process of the snapshot (pure, no I/O).

A hash names a local process when its hostname is this host's and its pid a process in rqdoctor's own PID
namespace, or when a foreign PID namespace (a container, ``unshare``) whose UTS hostname is the hash's
holds a process whose last ``NSpid`` is the hash's pid. Every other hash is remote. Nothing else in
diagnosis maps a hash's pid to a process.

A snapshot merged from several hosts (``Snapshot.hosts``) resolves each hash against the processes of the
host whose name it carries (or of a container on that host); only hashes of hosts not collected are remote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rqdoctor.model import ProcessInfo, Snapshot


@dataclass(frozen=True)
class Resolution:
    """Where a worker hash lives and the process holding its pid there (None: no such process)."""

    local: bool
    """Its hostname is this host's, or a container's on this host."""
    process: ProcessInfo | None = None
    container: str | None = None
    """The container (UTS) hostname it was resolved through; None for this host's own namespace."""
    host: str | None = None
    """The collected host it is on (``local``), None when remote."""


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


class Hosts:
    """The collected hosts of a snapshot (one, or each of a merged one), with their processes and containers."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.processes: dict[str, list[ProcessInfo]] = {snapshot.host: []}
        self.processes.update((h.name, []) for h in snapshot.hosts)
        for p in snapshot.processes:
            self.processes.setdefault(snapshot.key(p).host, []).append(p)
        self.containers = {host: container_names(procs) for host, procs in self.processes.items()}

    def host_of(self, hostname: str | None) -> str | None:
        """The collected host a worker hash's hostname is (or is a container on), None when not collected."""
        if not hostname:
            return None
        if hostname in self.processes:
            return hostname
        return next((host for host, names in self.containers.items() if hostname in names), None)

    def resolve(self, hostname: str | None, pid: int | None) -> Resolution:
        """:func:`resolve` against the processes of the host ``hostname`` is on."""
        host = self.host_of(hostname)
        if host is None:
            return Resolution(False)
        return dataclasses.replace(resolve(hostname, pid, host, self.processes[host]), host=host)
