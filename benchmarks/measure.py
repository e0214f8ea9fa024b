"""Run one command under a wrapper process and measure it (wall, CPU, memory); print tables.

The wrapper (a tiny Python process) runs the command, then reports
``getrusage(RUSAGE_CHILDREN)`` of everything it and its descendants waited for: total CPU
seconds and the largest single-process RSS. On request, a sampler in this process adds the
peak *sum* of PSS over the wrapper's live descendants (PSS splits shared pages between the
processes sharing them, so a forked-not-yet-exec'd child does not count its parent twice);
it costs CPU, so timed runs go without it.
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
from dataclasses import dataclass
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
PSS_SAMPLE_S = 0.05


@dataclass
class Measured:
    """One measured run."""

    rc: int
    wall: float
    cpu: float
    max_process_rss: int
    """Bytes: the largest RSS of any single process of the run."""
    peak_tree_pss: int
    """Bytes: the largest sampled sum of PSS over all live processes of the run (0: not sampled)."""
    stderr: str = ""


def measure(argv: Sequence[str], cwd: Path, timeout: float = 300.0, memory: bool = False) -> Measured:
    """Run ``argv`` (stdout discarded) and measure it; ``memory`` samples the peak PSS sum."""
    with tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp:
        result, errors = Path(tmp) / "rusage.json", Path(tmp) / "stderr"
        with open(os.devnull, "wb") as out, open(errors, "wb") as err:
            wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, str(result), str(timeout), *argv],
                                       cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        peak = _PeakPss(wrapper.pid)
        if memory:
            peak.start()
        try:
            wrapper.wait(timeout=timeout + 30)
        except subprocess.TimeoutExpired:  # a stuck wrapper: end the whole run
            _kill_group(wrapper)
        except BaseException:  # Ctrl-C: end the whole run too
            _kill_group(wrapper)
            raise
        finally:
            peak.stop()
        data = json.loads(result.read_text()) if result.exists() else {"rc": -998, "wall": 0, "cpu": 0,
                                                                         "maxrss_kib": 0}
        if data["rc"] == -999:  # the wrapper timed out its command: end what is left of the run
            _kill_group(wrapper)
        return Measured(data["rc"], data["wall"], data["cpu"], data["maxrss_kib"] * 1024, peak.value,
                        errors.read_text(errors="replace")[-2000:])


def _kill_group(wrapper: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group (session) created for this run, then reap the wrapper."""
    with suppress(ProcessLookupError):
        os.killpg(wrapper.pid, signal.SIGKILL)
    wrapper.wait()


class _PeakPss(threading.Thread):
    """Samples the summed PSS of a process's descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.value, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        with suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            while not self.done.wait(PSS_SAMPLE_S):
                total = sum(_pss(child.pid) for child in root.children(recursive=True))
                self.value = max(self.value, total)

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join()


def _pss(pid: int) -> int:
    """Bytes of proportional set size (``/proc/<pid>/smaps_rollup``); 0 when gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            rollup = f.read()
    except OSError:
        return 0
    start = rollup.find(b"\nPss:")
    return int(rollup[start + 5:].split(None, 1)[0]) * 1024 if start >= 0 else 0


def checked(run: Measured, name: str) -> Measured:
    """``run``, unless its command failed (rqdoctor exits 1 when it finds problems: that is success)."""
    if run.rc not in (0, 1):
        raise RuntimeError(f"{name} failed (exit {run.rc}): {run.stderr}")
    return run


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
