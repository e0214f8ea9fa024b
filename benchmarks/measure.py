"""Run one command under a wrapper process and measure it: wall, CPU, RSS, ptrace stops.

The wrapper (a tiny Python process) runs the command, then reports
``getrusage(RUSAGE_CHILDREN)`` of everything it and its descendants waited for: total CPU
seconds and the largest single-process RSS. A sampler in this process adds the peak *sum*
of RSS over the wrapper's live descendants (sampled, so a lower bound).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

WRAPPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
try:
    rc = subprocess.run(sys.argv[3:], timeout=float(sys.argv[2]), check=False).returncode
except subprocess.TimeoutExpired:
    rc = -999
wall = time.perf_counter() - start
u = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"rc": rc, "wall": wall, "cpu": u.ru_utime + u.ru_stime, "maxrss_kib": u.ru_maxrss}, out)
"""
RSS_SAMPLE_S = 0.05


@dataclass
class Measured:
    """One measured run."""

    rc: int
    wall: float
    cpu: float
    max_process_rss: int
    """Bytes: the largest RSS of any single process of the run."""
    peak_tree_rss: int
    """Bytes: the largest sampled sum of RSS over all live processes of the run."""
    stderr: str = ""


def measure(argv: Sequence[str], cwd: Path, timeout: float = 300.0, stdout: Path | None = None) -> Measured:
    """Run ``argv`` (stdout to ``stdout`` or discarded) and measure it."""
    with tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp:
        result, errors = Path(tmp) / "rusage.json", Path(tmp) / "stderr"
        with open(stdout or os.devnull, "wb") as out, open(errors, "wb") as err:
            wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, str(result), str(timeout), *argv],
                                       cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        peak = _PeakRss(wrapper.pid)
        peak.start()
        try:
            wrapper.wait(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(wrapper.pid, signal.SIGKILL)  # the group we created for this run
            wrapper.wait()
        finally:
            peak.stop()
        data = json.loads(result.read_text()) if result.exists() else {"rc": -998, "wall": 0, "cpu": 0,
                                                                         "maxrss_kib": 0}
        return Measured(data["rc"], data["wall"], data["cpu"], data["maxrss_kib"] * 1024, peak.value,
                        errors.read_text(errors="replace")[-2000:])


class _PeakRss(threading.Thread):
    """Samples the summed RSS of a process's descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.value, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        with suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            while not self.done.wait(RSS_SAMPLE_S):
                total = 0
                for child in root.children(recursive=True):
                    with suppress(psutil.Error):
                        total += child.memory_info().rss
                self.value = max(self.value, total)

    def stop(self) -> None:
        self.done.set()
        self.join()


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
                except OSError:
                    continue
                state = status[status.index(b"State:") + 6:].lstrip()[:1]
                tracer = status[status.index(b"TracerPid:") + 10:].split(None, 1)[0]
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


def median_run(runs: list[Measured]) -> Measured:
    """The run with the median wall time (its other figures come with it)."""
    return sorted(runs, key=lambda m: m.wall)[len(runs) // 2]


def spread(runs: list[Measured]) -> str:
    """``min-max`` of the wall times, for the reader to judge the noise."""
    walls = [m.wall for m in runs]
    return f"{min(walls):.2f}-{max(walls):.2f}" if len(walls) > 1 else "-"


def mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain, aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                              strict=True)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])
