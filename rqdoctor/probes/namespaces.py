"""A process's PID and UTS namespace, read from the host: what a containerised RQ worker writes in its hash.

A worker in a container writes the container's hostname (its UTS namespace's) and its pid in the container's
PID namespace (the last ``NSpid`` of ``/proc/<pid>/status``). The UTS hostname is read by entering the
namespace (util-linux ``nsenter -u``, root only, bounded by a timeout) or, failing that, from
``/proc/<pid>/root/etc/hostname`` where the runtime writes one; once per UTS namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

from rqdoctor.model import ProcessIdentity

NSENTER_TIMEOUT_S = 2.0
"""At most this long for one ``nsenter -u hostname`` (once per foreign UTS namespace)."""
NSENTER_BUDGET_S = 5.0
"""At most this long for all of them in one scan (the process probe is bounded by the run's deadline too)."""
_CONTAINER_ID = re.compile(r"(?:docker|containerd|crio|libpod|cri-containerd)[-/:]?([0-9a-f]{64})|/([0-9a-f]{64})")


def ns_inode(pid: int | str, kind: str) -> int | None:
    """Inode of ``/proc/<pid>/ns/<kind>`` (``pid``, ``uts``), None when unreadable."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def last_nspid(pid: int) -> int | None:
    """The process's pid in its own (innermost) PID namespace: the last ``NSpid`` field."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    values = line.split()[1:]
                    return int(values[-1]) if values else None
    except (OSError, ValueError):
        return None
    return None


def container_id(pid: int) -> str | None:
    """The 64-hex container id a docker/containerd/CRI-O/Kubernetes cgroup path of the process names."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as cgroup:
            text = cgroup.read()
    except OSError:
        return None
    found = [a or b for a, b in _CONTAINER_ID.findall(text)]
    return found[-1] if found else None


class NamespaceReader:
    """Fills :class:`ProcessIdentity` for the processes of one scan; UTS hostnames cached per namespace."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.own_pid_ns = ns_inode("self", "pid")
        self.own_uts_ns = ns_inode("self", "uts")
        self._uts: dict[int, str | None] = {}
        self._budget_ends = time.monotonic() + NSENTER_BUDGET_S
        self.failures: list[str] = []
        """One line per foreign namespace whose hostname could not be read."""

    def identity(self, pid: int, create_time: float | None, worker_like: bool) -> ProcessIdentity:
        """The identity of host pid ``pid``; a foreign UTS hostname is read only for worker-like processes."""
        pid_ns = ns_inode(pid, "pid")
        foreign = pid_ns is not None and self.own_pid_ns is not None and pid_ns != self.own_pid_ns
        ident = ProcessIdentity(self.host, pid, create_time, last_nspid(pid) or pid, pid_ns, foreign)
        if foreign:
            ident.container_id = container_id(pid)
            ident.uts_hostname = self.uts_hostname(pid) if worker_like else self._uts.get(ns_inode(pid, "uts") or -1)
            ident.container_name = ident.uts_hostname
        return ident

    def uts_hostname(self, pid: int) -> str | None:
        """The hostname of ``pid``'s UTS namespace (this host's when it shares ours)."""
        uts = ns_inode(pid, "uts")
        if uts is None:
            return None
        if uts == self.own_uts_ns:
            return self.host
        if uts not in self._uts:
            self._uts[uts] = self._nsenter(pid) or _etc_hostname(pid)
            if self._uts[uts] is None:
                self.failures.append(f"pid {pid}")
        return self._uts[uts]

    def _nsenter(self, pid: int) -> str | None:
        tool = shutil.which("nsenter")
        left = self._budget_ends - time.monotonic()
        if tool is None or os.geteuid() != 0 or left <= 0:
            return None
        try:
            done = subprocess.run([tool, "-u", "-t", str(pid), "hostname"], capture_output=True, text=True,
                                  timeout=min(NSENTER_TIMEOUT_S, left), check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        name = done.stdout.strip()
        return name if done.returncode == 0 and name else None


def _etc_hostname(pid: int) -> str | None:
    """``/etc/hostname`` inside the process's root (docker and Kubernetes bind-mount one per container); None
    when its root is ours (``unshare`` without a new root: that file is this host's, not its UTS name)."""
    try:
        root, own = os.stat(f"/proc/{pid}/root"), os.stat("/")
        if (root.st_dev, root.st_ino) == (own.st_dev, own.st_ino):
            return None
        with open(f"/proc/{pid}/root/etc/hostname", encoding="utf-8", errors="replace") as f:
            name = f.read(256).strip()
    except OSError:
        return None
    return name or None
