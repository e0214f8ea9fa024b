"""One process at one moment, from ``/proc``: its progress counters and each thread's kernel facts.

Read beside every stack sample: process CPU time, ``/proc/PID/io``, the main thread's context
switches, and per thread its scheduler state, wait channel and system call (with the fds it waits
on, see :mod:`.procfs`). Raw facts only; :mod:`rqdoctor.diagnose.progress` judges them.

When each thread last ran (:class:`RunMark`, :func:`quiet_seconds`): ``/proc/PID/task/TID/sched``
gives ``se.exec_start``, the scheduler clock of the thread's CPU when it was last on it (ms), and
``schedstat`` its total run time (ns); both are world-readable. That clock is not
``CLOCK_MONOTONIC``: it leaves out the time stolen by the hypervisor and spent in interrupts, per
CPU (on this project's 2-vCPU VM it was 1.3 s and 1.5 s behind after 9 minutes up). So "now" on that
clock is read by running on the CPU in question and reading this thread's own ``se.exec_start``
(:func:`cpu_clocks`), which the scheduler sets when the thread arrives there. Time stolen after the
target last ran makes the difference smaller than the real time, never larger: a lower bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

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


def read_text(path: str) -> str:
    """A small ``/proc`` file as text (``Path.read_text`` without a ``Path`` per read: thousands per run)."""
    with open(path) as f:
        return f.read()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


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
        fields = dict(line.split(":", 1) for line in read_text(f"/proc/{pid}/io").splitlines() if ":" in line)
        values = {k: int(fields[k]) for k in ("syscr", "syscw", "rchar", "wchar", "read_bytes", "write_bytes")}
    except (OSError, KeyError, ValueError) as exc:
        return None, str(exc)
    return IoCounters(**values), None


def read_thread(pid: int, tid: int, state: bool = True) -> ThreadFacts:
    """The kernel facts of one thread (each unreadable one left None)."""
    facts = ThreadFacts(state=thread_state(pid, tid) if state else None, wchan=wchan(pid, tid))
    try:
        fields = read_text(f"/proc/{pid}/task/{tid}/syscall").split()
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
        stat = read_bytes(f"/proc/{pid}/task/{tid}/stat")
    except OSError:
        return None
    rest = stat.rpartition(b")")[2].split()
    return rest[0].decode() if rest else None


def wchan(pid: int, tid: int) -> str | None:
    """Kernel wait channel of a thread (``0``: running)."""
    try:
        return read_text(f"/proc/{pid}/task/{tid}/wchan").strip() or None
    except OSError:
        return None


def tid_of(pid: int, thread: ThreadStack, thread_count: int) -> int | None:
    """Kernel thread id of a sampled thread (the pid for the main thread), None when unknown."""
    if thread.os_thread_id is None and (thread.name == "MainThread" or thread_count == 1):
        return pid
    return thread.os_thread_id


@dataclass(frozen=True)
class RunMark:
    """When one thread last ran, as the scheduler keeps it (None: unreadable)."""

    run_ns: int | None
    """Time on a CPU so far (``schedstat``, first field)."""
    delay_ns: int | None
    """Time spent runnable, waiting for a CPU, so far (``schedstat``, second field)."""
    state: str | None
    """Scheduler state (``stat``): ``R`` is runnable, which a starved busy thread is too."""
    exec_start_ms: float | None
    """``se.exec_start`` of ``sched``: the thread's CPU's scheduler clock when it last ran (0: unknown)."""
    cpu: int | None
    """The CPU it last ran on (``stat`` field 39)."""


def run_mark(pid: int, tid: int) -> RunMark:
    """The scheduler's record of one thread (each unreadable part None)."""
    base = f"/proc/{pid}/task/{tid}"
    run_ns = delay_ns = state = exec_start = cpu = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        run_ns, delay_ns = (int(n) for n in read_text(f"{base}/schedstat").split()[:2])
    with contextlib.suppress(OSError, ValueError):
        exec_start = exec_start_ms(read_text(f"{base}/sched"))
    with contextlib.suppress(OSError, ValueError, IndexError):
        rest = read_bytes(f"{base}/stat").rpartition(b")")[2].split()
        state, cpu = rest[0].decode(), int(rest[36])
    return RunMark(run_ns, delay_ns, state, exec_start, cpu)


def run_marks(pid: int) -> dict[int, RunMark] | None:
    """Every thread's :class:`RunMark` by kernel thread id; None when the threads cannot be listed."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit()]
    except OSError:
        return None
    return {tid: run_mark(pid, tid) for tid in tids}


def exec_start_ms(sched: str) -> float | None:
    """``se.exec_start`` (ms) of a ``/proc/…/sched`` text."""
    for line in sched.splitlines()[:8]:
        name, _, value = line.partition(":")
        if name.strip() == "se.exec_start":
            return float(value)
    return None


def cpu_clocks(cpus: Iterable[int]) -> dict[int, float]:
    """Each CPU's scheduler clock now (ms), read by moving this thread there; CPUs it may not use are left out."""
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return {}
    clocks: dict[int, float] = {}
    try:
        for cpu in sorted(set(cpus) & allowed):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(0, {cpu})  # returns on that CPU: the scheduler has just set exec_start
                value = exec_start_ms(read_text("/proc/thread-self/sched"))
                if value:
                    clocks[cpu] = value
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, allowed)
    return clocks


def quiet_seconds(before: RunMark, after: RunMark, clocks: dict[int, float]) -> float | None:
    """Seconds the thread has not run, at ``after``; None unless it neither ran nor was runnable in between.

    ``clocks`` are the CPUs' scheduler clocks (:func:`cpu_clocks`), read after ``before`` and before ``after``.
    """
    if None in (before.run_ns, after.run_ns, after.delay_ns, after.exec_start_ms, after.cpu) or not after.exec_start_ms:
        return None
    if "R" in (before.state, after.state) or None in (before.state, after.state):
        return None  # runnable: a busy thread waiting for a CPU has not run either
    if (before.run_ns, before.delay_ns, before.exec_start_ms) != (after.run_ns, after.delay_ns, after.exec_start_ms):
        return None  # it ran (or was woken) in between
    clock = clocks.get(after.cpu)  # type: ignore[arg-type]
    if clock is None or clock < after.exec_start_ms:  # type: ignore[operator]
        return None
    return (clock - after.exec_start_ms) / 1000.0  # type: ignore[operator]
