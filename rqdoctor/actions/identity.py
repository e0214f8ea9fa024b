"""Re-verify a process before any signal: same host, same process (pid and start time), same parent, never us.

A pid alone names nothing: it is reused. The process a remedy names is (host, pid, start time),
plus its parent (pid and start time) for a horse, plus, in a container, its namespace pid and PID
namespace inode. ``pid`` is always the host pid (rqdoctor's namespace), even for a container's worker
whose hash names another hostname. Every check is read again from ``/proc`` (psutil) right before each
signal; a difference of any kind refuses the signal.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import psutil

from rqdoctor.diagnose.findings import Remedy
from rqdoctor.probes.namespaces import last_nspid, ns_inode

CREATE_TIME_TOLERANCE_S = 0.5
"""psutil's start times come from clock ticks after a whole-second boot time: equal within this is the same process."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``ok``, or why not (``gone`` means the process no longer exists at all)."""

    ok: bool
    reason: str = ""
    gone: bool = False


OK = Verdict(True)


def this_host() -> str:
    """The host name as RQ records it in a worker hash (``socket.gethostname()``)."""
    return socket.gethostname()


def protected_pids() -> set[int]:
    """Pids never signalled: init, rqdoctor itself and its parent (the shell or supervisor running it)."""
    return {0, 1, os.getpid(), os.getppid()}


def static_refusal(remedy: Remedy, host: str) -> str | None:
    """Why a signal to ``remedy``'s process cannot even be planned (None: it can, subject to re-verification)."""
    if remedy.pid is None or remedy.create_time is None:
        return "no process identity (pid and start time) to re-verify"
    if remedy.pid in protected_pids():
        return f"pid {remedy.pid} is init, rqdoctor or its parent"
    if remedy.host != host:
        return f"the process is on host {remedy.host!r}, not this host ({host!r})"
    return None


def same_process(pid: int, create_time: float) -> Verdict:
    """``pid`` is alive (not a zombie) and started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        status = proc.status()
    except psutil.NoSuchProcess:
        return Verdict(False, f"pid {pid} has exited", gone=True)
    except psutil.Error as exc:
        return Verdict(False, f"pid {pid} cannot be read ({type(exc).__name__})")
    if abs(started - create_time) > CREATE_TIME_TOLERANCE_S:
        return Verdict(False, f"pid {pid} is now another process (started {started:.2f}, recorded {create_time:.2f})",
                       gone=True)
    if status == psutil.STATUS_ZOMBIE:
        return Verdict(False, f"pid {pid} has exited (zombie, not reaped yet)", gone=True)
    return OK


def verify_target(remedy: Remedy, host: str, worker_pids: set[int], kill_worker: bool) -> Verdict:
    """Every process check before a signal to ``remedy``'s target (see the module docstring).

    ``worker_pids`` are the pids of the registered workers read from Redis just now (for a process in a
    container, those of the workers of that container's hostname: pids in its namespace): one of them is
    signalled only for ``stop_worker`` with ``--kill-worker``. A horse (``stop_horse``/``stop_orphan``)
    must lead its own process group, since its group is what is signalled.
    """
    refusal = static_refusal(remedy, host)
    if refusal:
        return Verdict(False, refusal)
    assert remedy.pid is not None and remedy.create_time is not None
    pid = remedy.pid
    alive = same_process(pid, remedy.create_time)
    if not alive.ok:
        return alive
    if remedy.action == "stop_worker":
        if not kill_worker:
            return Verdict(False, "the job runs in the worker process itself: needs --kill-worker")
    elif _as_hashes_name(remedy, pid) in worker_pids:
        return Verdict(False, f"pid {pid} is a registered worker, not a work-horse: needs --kill-worker")
    try:
        proc = psutil.Process(pid)
        ppid = proc.ppid()
        pgid = os.getpgid(pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return Verdict(False, f"pid {pid} has exited", gone=True)
    except (psutil.Error, OSError) as exc:
        return Verdict(False, f"pid {pid} cannot be read ({type(exc).__name__})")
    moved = _namespace_changed(remedy)
    if moved:
        return Verdict(False, moved)
    if remedy.action in ("stop_horse", "stop_orphan") and pgid != pid:
        return Verdict(False, f"pid {pid} does not lead its process group (pgid {pgid}): not a work-horse")
    if remedy.pgid is not None and remedy.pgid != pgid:
        return Verdict(False, f"pid {pid} moved from process group {remedy.pgid} to {pgid}")
    if remedy.action == "stop_horse":
        return _verify_parent(remedy, ppid)
    if remedy.action == "stop_orphan" and _as_hashes_name(remedy, ppid) in worker_pids:
        return Verdict(False, f"pid {pid} is the child of registered worker {ppid} again: not an orphan")
    return OK


def _as_hashes_name(remedy: Remedy, pid: int) -> int | None:
    """Host pid ``pid`` as a worker hash would name it: its namespace pid for a remedy in a container."""
    return last_nspid(pid) if remedy.pid_ns is not None else pid


def _namespace_changed(remedy: Remedy) -> str | None:
    """Why a container process is no longer the one seen (another PID namespace or namespace pid)."""
    if remedy.pid_ns is None and remedy.ns_pid is None:
        return None
    assert remedy.pid is not None
    where = f"container {remedy.container_name or remedy.container_id or '?'}"
    if remedy.pid_ns is not None and ns_inode(remedy.pid, "pid") != remedy.pid_ns:
        return f"pid {remedy.pid} is no longer in the PID namespace of {where}"
    if remedy.ns_pid is not None and last_nspid(remedy.pid) != remedy.ns_pid:
        return f"pid {remedy.pid} is no longer pid {remedy.ns_pid} in {where}"
    return None


def _verify_parent(remedy: Remedy, ppid: int) -> Verdict:
    """A horse is still the child of the registered worker it was seen under (pid and start time)."""
    if remedy.parent_pid is None:
        return Verdict(False, "no worker pid recorded for the work-horse")
    if ppid != remedy.parent_pid:
        return Verdict(False, f"pid {remedy.pid} is no longer the child of worker pid {remedy.parent_pid} "
                       f"(parent now {ppid})")
    if remedy.parent_create_time is not None:
        parent = same_process(remedy.parent_pid, remedy.parent_create_time)
        if not parent.ok:
            return Verdict(False, f"its worker changed: {parent.reason}")
    return OK


def wait_gone(pid: int, create_time: float, seconds: float, poll_s: float = 0.05) -> bool:
    """Poll until the process (pid, start time) is gone or a zombie; True if it went within ``seconds``."""
    end = time.monotonic() + seconds
    while not same_process(pid, create_time).gone:
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(poll_s, left))
    return True
