"""One overall deadline from which every socket, subprocess and query timeout is derived.

A run's deadline counts from the start of the rqdoctor process (start-up imports included), once
:func:`start_at_process_start` has been called (the console entry point does); without it, a
:meth:`Deadline.for_run` counts from its creation (library use, in-process tests). Work that may
block past the deadline whatever its own timeouts (a peer that trickles one byte a second keeps
every read under its socket timeout) runs in a :class:`Background` daemon thread that the run stops
waiting for at the deadline.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

REPORT_RESERVE_S = 0.3
"""Seconds of the run's deadline kept for diagnosing and printing once the probes stop."""
JOIN_GRACE_S = 0.2
"""How long past the probes' deadline a probe thread may take to hand its result over before it is abandoned."""
_run_start: float | None = None
"""``time.monotonic()`` value of the process start, once recorded."""


def process_age() -> float:
    """Seconds since this process started (``/proc/self/stat`` start time against the boot clock)."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks since boot
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def start_at_process_start() -> None:
    """Count every later :meth:`Deadline.for_run` from the start of this process."""
    global _run_start
    try:
        age = process_age()
    except (OSError, ValueError, IndexError):
        age = 0.0
    _run_start = time.monotonic() - age


class Deadline:
    """A point in time by which a command must have finished gathering facts."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        self.seconds = seconds
        self.expires = (time.monotonic() if start is None else start) + seconds

    @classmethod
    def for_run(cls, seconds: float) -> Deadline:
        """The deadline of a whole run: ``seconds`` from the process start (see the module docstring)."""
        return cls(seconds, _run_start)

    def for_probes(self) -> Deadline:
        """The same deadline less :data:`REPORT_RESERVE_S`, by which the probes must have stopped."""
        probes = Deadline(self.seconds)
        probes.expires = self.expires - REPORT_RESERVE_S
        return probes

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0

    def timeout(self, cap: float | None = None, floor: float = 0.05) -> float:
        """A timeout for one operation: what is left, at most ``cap``, at least ``floor``."""
        left = self.remaining()
        if cap is not None:
            left = min(left, cap)
        return max(floor, left)


class Background(Generic[T]):
    """One piece of work in a daemon thread: neither Ctrl-C nor the end of the run waits for it."""

    def __init__(self, work: Callable[[], T], name: str = "rqdoctor-probe") -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._result = work()
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self, timeout: float) -> T:
        """The work's result, its exception, or TimeoutError when it is still running after ``timeout`` s."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]
