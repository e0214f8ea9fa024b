"""Stacks without ptrace: the process's own ``faulthandler`` dump on SIGUSR1, read from its stderr file.

Frappe (since v14) runs ``faulthandler.register(signal.SIGUSR1, file=sys.__stderr__)`` in every process that
calls ``frappe.init()``: on SIGUSR1 it writes every thread's Python traceback to its real stderr. Used only
where py-spy may not attach. A process is signalled only when

- ``SigCgt`` in ``/proc/PID/status`` says it catches SIGUSR1 (without a handler SIGUSR1 kills it), and
- its fd 2 is a regular file this user can read (``logs/worker.error.log``; a pipe or a terminal cannot
  be read back);

then the file's size is noted, the signal sent, and only the bytes appended after it are read, one
process at a time (several workers share one log). The dump is ASCII, at most 100 frames per thread
and 100 threads (faulthandler's own limits), with no locals and no native frames.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path
from typing import BinaryIO

import psutil

from rqdoctor.deadline import Deadline
from rqdoctor.model import Frame, ProbeError, StackSample, ThreadStack
from rqdoctor.probes.counters import read_process

PROBE = "stacks"
SOURCE = "faulthandler"
"""``StackSample.source`` of these samples."""
WAIT_S = 2.0
"""At most this long for the dump to appear."""
SETTLE_S = 0.15
"""The dump is complete once the file has not grown for this long."""
MAX_READ = 1 << 20
HINT = ("the stack comes from the process's own faulthandler dump (ASCII, at most 100 frames); for py-spy's "
        "view grant ptrace (run as root, or the workers' user with kernel.yama.ptrace_scope=0, or CAP_SYS_PTRACE)")
_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+) \(most recent call first\):$")
_STACK = re.compile(r"^Stack \(most recent call first\):$")
_FRAME = re.compile(r'^  File "(.*)", line (\d+|\?\?\?) in (.+)$')


def catches_sigusr1(pid: int) -> bool:
    """True when ``SigCgt`` of ``/proc/PID/status`` has SIGUSR1 (the process installed a handler)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split(":", 1)[1].strip(), 16) >> (signal.SIGUSR1 - 1) & 1)
    except (OSError, ValueError):
        return False
    return False


def stderr_file(pid: int) -> str | None:
    """The path of the process's fd 2 when it is a regular file this user can read, else None."""
    try:
        path = os.readlink(f"/proc/{pid}/fd/2")
        mode = os.stat(f"/proc/{pid}/fd/2").st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode) or not os.access(f"/proc/{pid}/fd/2", os.R_OK):
        return None
    return path


def why_not(pid: int) -> str | None:
    """Why ``pid`` must not or cannot be asked for its dump (None: it may)."""
    if not catches_sigusr1(pid):
        return "it has no SIGUSR1 handler (SigCgt), so it is not signalled"
    if stderr_file(pid) is None:
        return "its stderr is not a regular file rqdoctor can read"
    return None


def dump(pid: int, deadline: Deadline) -> tuple[StackSample | None, ProbeError | None]:
    """Signal ``pid`` once and read the traceback it appends to its stderr file."""
    reason = why_not(pid)
    if reason is not None:
        return None, ProbeError(PROBE, "permission", f"no faulthandler dump of pid {pid}: {reason}", HINT, str(pid))
    fd = f"/proc/{pid}/fd/2"
    try:
        proc = psutil.Process(pid)
        reading = read_process(proc, pid)  # thread states and syscalls before the signal interrupts them
        with open(fd, "rb") as stream:
            start = os.fstat(stream.fileno()).st_size
            os.kill(pid, signal.SIGUSR1)
            data = _appended(stream, start, min(WAIT_S, max(deadline.remaining(), 0.0)))
    except (OSError, psutil.Error) as exc:
        return None, ProbeError(PROBE, "failed", f"no faulthandler dump of pid {pid}: {exc}", HINT, str(pid))
    threads = parse(data.decode("ascii", "replace"))
    if not threads:
        return None, ProbeError(PROBE, "failed", f"pid {pid} wrote no faulthandler dump to its stderr within "
                                f"{WAIT_S:g} s", HINT, str(pid))
    if len(reading.threads) == 1 and len(threads) == 1:  # the one thread: its kernel facts are the dump's
        next(iter(reading.threads.values())).apply(threads[0])
        threads[0].os_thread_id = next(iter(reading.threads))
    counters = reading.counters
    sample = StackSample(taken_at=reading.taken_at, threads=threads, cpu_time=counters.cpu_time, io=counters.io,
                         voluntary_ctx_switches=counters.voluntary, involuntary_ctx_switches=counters.involuntary,
                         source=SOURCE)
    return sample, None


def _appended(stream: BinaryIO, start: int, wait: float) -> bytes:
    """The bytes written after ``start``, once the file stops growing (or after ``wait`` seconds)."""
    end_by = time.monotonic() + wait
    size, grown_at = start, time.monotonic()
    while time.monotonic() < end_by:
        now_size = os.fstat(stream.fileno()).st_size
        if now_size != size:
            size, grown_at = now_size, time.monotonic()
        elif size > start and time.monotonic() - grown_at >= SETTLE_S:
            break
        time.sleep(0.02)
    stream.seek(start)
    return stream.read(min(max(size - start, 0), MAX_READ))


def parse(text: str) -> list[ThreadStack]:
    """faulthandler's traceback format, innermost frame first (as py-spy orders them).

    ``Thread 0x7f… (most recent call first):`` (``Current thread`` for the one that handled the signal)
    then ``  File "…", line N in func`` lines; a single-thread dump says ``Stack (most recent call first):``.
    """
    threads: list[ThreadStack] = []
    current: ThreadStack | None = None
    for line in text.splitlines():
        if (match := _THREAD.match(line)) is not None:
            current = ThreadStack(thread_id=int(match.group(2), 16),
                                  name="current thread" if match.group(1) == "Current thread" else None)
            threads.append(current)
        elif _STACK.match(line):
            current = ThreadStack(thread_id=0)
            threads.append(current)
        elif current is not None and (frame := _FRAME.match(line)) is not None:
            number = frame.group(2)
            current.frames.append(Frame(name=frame.group(3), filename=frame.group(1),
                                        line=int(number) if number.isdigit() else 0))
        elif line.strip() and not line.startswith("  "):
            current = None  # anything else ends the dump (other output sharing the file)
    return [t for t in threads if t.frames]
