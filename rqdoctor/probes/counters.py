"""One process at one moment, from ``/proc``: its progress counters and each thread's kernel facts.

Read beside every stack sample: process CPU time, ``/proc/PID/io``, the main thread's context
switches, and per thread its scheduler state, wait channel and system call (with the fds it waits
on, see :mod:`.procfs`). Raw facts only; :mod:`rqdoctor.diagnose.progress` judges them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rqdoctor.model import IoCounters, ThreadStack
from rqdoctor.probes.procfs import Syscall, read_syscall


@dataclass
class Counters:
    """The progress counters of a process (None: unreadable)."""

    cpu_time: float | None = None
    io: IoCounters | None = None
    voluntary: int | None = None
    involuntary: int | None = None
    io_error: str | None = None
    """Why ``/proc/PID/io`` could not be read."""


@dataclass
class ThreadFacts:
    """What the kernel says about one thread: scheduler state (``R``, ``S``, ``D``…), wait channel, system call."""

    state: str | None = None
    wchan: str | None = None
    syscall: Syscall | None = None

    def apply(self, thread: ThreadStack) -> None:
        """Copy the wait channel and system call onto a thread of a sample."""
        thread.wchan = self.wchan
        if self.syscall is not None:
            thread.syscall, thread.syscall_nr, thread.wait_fds, thread.wait_fds_exact = self.syscall


@dataclass
class Reading:
    """``/proc`` facts of one process read at ``taken_at`` (wall clock)."""

    taken_at: float
    counters: Counters
    threads: dict[int, ThreadFacts] = field(default_factory=dict)
    """By kernel thread id; empty when ``/proc/PID/task`` could not be listed."""


def read_counters(proc: psutil.Process | None, pid: int) -> Counters:
    """CPU time, I/O counters and context switches; raises ``psutil.NoSuchProcess`` once the process is gone."""
    counters = Counters()
    if proc is not None:
        try:
            times = proc.cpu_times()
            counters.cpu_time = times.user + times.system
            switches = proc.num_ctx_switches()
            counters.voluntary, counters.involuntary = switches.voluntary, switches.involuntary
        except psutil.AccessDenied:
            pass
    counters.io, counters.io_error = io_counters(pid)
    return counters


def io_counters(pid: int) -> tuple[IoCounters | None, str | None]:
    """``/proc/PID/io`` (readable as root or as the process's user), or why not."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines() if ":" in line)
        values = {k: int(fields[k]) for k in ("syscr", "syscw", "rchar", "wchar", "read_bytes", "write_bytes")}
    except (OSError, KeyError, ValueError) as exc:
        return None, str(exc)
    return IoCounters(**values), None


def read_thread(pid: int, tid: int, state: bool = True) -> ThreadFacts:
    """The kernel facts of one thread (each unreadable one left None)."""
    facts = ThreadFacts(state=thread_state(pid, tid) if state else None, wchan=wchan(pid, tid))
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
    except OSError:
        return facts
    facts.syscall = read_syscall(pid, fields)
    return facts


def read_process(proc: psutil.Process | None, pid: int) -> Reading:
    """Counters and every thread's facts, now; raises ``psutil.NoSuchProcess`` once the process is gone."""
    taken_at = time.time()
    counters = read_counters(proc, pid)
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit()]
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except OSError:
        tids = []
    return Reading(taken_at, counters, {tid: read_thread(pid, tid) for tid in tids})


def thread_state(pid: int, tid: int) -> str | None:
    """The one-letter scheduler state of ``/proc/PID/task/TID/stat`` (the field after the command name)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
    except OSError:
        return None
    rest = stat.rpartition(b")")[2].split()
    return rest[0].decode() if rest else None


def wchan(pid: int, tid: int) -> str | None:
    """Kernel wait channel of a thread (``0``: running)."""
    try:
        return Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip() or None
    except OSError:
        return None


def tid_of(pid: int, thread: ThreadStack, thread_count: int) -> int | None:
    """Kernel thread id of a sampled thread (the pid for the main thread), None when unknown."""
    if thread.os_thread_id is None and (thread.name == "MainThread" or thread_count == 1):
        return pid
    return thread.os_thread_id
