"""Count ptrace stops of target processes while a command runs."""

from __future__ import annotations

import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StopCounter:
    """Watches ``pids`` while a run goes on, for signs that anything paused them.

    Sampled: a thread reads ``/proc/<pid>/status`` of every pid as fast as it can and counts
    observations of a stopped state (``t (tracing stop)``/``T (stopped)``) and of a non-zero
    ``TracerPid`` (a ptrace attach). Exact: the voluntary context switches of ``quiet_pids``
    (processes asleep in one syscall, which make none on their own) before and after; each
    ptrace stop of a sleeping thread adds two (into the stop and back to sleep), while
    reading its memory adds none.
    """

    pids: list[int]
    quiet_pids: list[int]
    sweeps: int = 0
    stopped: int = 0
    traced: int = 0
    stopped_pids: set[int] = field(default_factory=set)
    switches: int = 0
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StopCounter:
        self.switches = -voluntary_switches(self.quiet_pids)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread:
            self._thread.join()
        self.switches += voluntary_switches(self.quiet_pids)

    def _poll(self) -> None:
        paths = {pid: f"/proc/{pid}/status" for pid in self.pids}
        while not self._done.is_set():
            for pid, path in paths.items():
                try:
                    with open(path, "rb") as f:
                        status = f.read()
                    state = status[status.index(b"State:") + 6:].lstrip()[:1]
                    tracer = status[status.index(b"TracerPid:") + 10:].split(None, 1)[0]
                except (OSError, ValueError, IndexError):  # gone, or exiting
                    continue
                if state in (b"t", b"T"):
                    self.stopped += 1
                    self.stopped_pids.add(pid)
                if tracer != b"0":
                    self.traced += 1
            self.sweeps += 1


def voluntary_switches(pids: list[int]) -> int:
    """Sum of ``voluntary_ctxt_switches`` over every thread of ``pids``."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            with suppress(OSError):
                line = next(x for x in status.read_text().splitlines() if x.startswith("voluntary_ctxt_switches"))
                total += int(line.split()[1])
    return total
