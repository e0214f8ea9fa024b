"""Issues 3 and 8: ``rqdoctor hangs`` with many hung workers, side by side with the floor and the manual routine.

Real Frappe-style rq workers (tests/harness) each run a hung job (``sleep_for`` or
``http_no_timeout`` against a tarpit). Three ways to get every hung job's stack, measured in
interleaved rounds:

- ``rqdoctor hangs`` at default settings (see :func:`defaults`);
- the floor: one ``py-spy dump --nonblocking`` per pid, all at once;
- the manual routine: ``rq info``, then ``py-spy dump`` (blocking, py-spy's default) per pid,
  one after another;
- the stack probe alone (:mod:`benchmarks.stacks_probe`: a fresh interpreter, ``probe_stacks`` as
  ``hangs`` calls it), to tell what sampling costs from what the rest of the command costs;
- rqdoctor's libraries alone (a fresh interpreter importing Typer, rich, redis-py and psutil, nothing
  else): the CPU any run pays before its first probe, beside the floor's (see :func:`goals`).

The manual routine's blocking dumps wake every horse into a ptrace stop and back, which the kernel's
last-run marks then show for a second; the variant after it waits :data:`SETTLE_S` (see
:meth:`Variant.settle`).

Python commands run with byte-code caching (:mod:`benchmarks.pycache`, one warm-up run each), as an
installed rqdoctor runs and as the other benchmarks measure it. Then one memory-sampled run of each,
the issue 8 goals against the same run's figures (see :func:`goals`), and one run of each (plus
``rqdoctor hangs --blocking``, to show the counters do see stops) under
:class:`~benchmarks.stops.StopCounter`.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.measure import Measured, checked, measure, median_run, mib, spread, table
from benchmarks.pycache import compiled
from benchmarks.stops import StopCounter
from rqdoctor import scenarios
from rqdoctor.commands import hangs as hangs_command
from rqdoctor.probes import record
from rqdoctor.probes.stacks import find_py_spy
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.venvs import ensure_venv
from tests.harness.workers import (
    Workers,
    enqueue,
    running_workers,
    text_client,
    wait_for_job_started,
    wait_for_worker_registered,
)

START_BATCH = 8
JOB_TIMEOUT = 7200
WALL_GOAL = 1.5
"""``hangs`` wall at most this times (floor + sampling window)."""
CPU_GOAL = 2.0
"""``hangs`` CPU seconds at most this times the floor's."""
PSS_GOAL_MIB = 100
SETTLE_S = 2.0
LIBRARY_MODULES = ("typer", "rich.console", "redis", "psutil")
"""What every ``hangs`` run imports from its dependencies before its first probe."""
LIBRARIES = "libraries alone: import typer, rich, redis, psutil"


@dataclass
class Variant:
    """One way of getting the stacks: its argv and how to tell how many stacks it got."""

    name: str
    argv: list[str]
    outputs: Path | None = None
    """Directory of per-pid py-spy outputs (shell variants)."""
    report: Path | None = None
    """rqdoctor's JSON report (stop-count runs)."""
    summary: Path | None = None
    """What the probe-alone variant writes: processes with a sample, samples in all."""
    pauses: bool = False
    """It pauses the horses (blocking dumps): the next variant waits :data:`SETTLE_S` after it."""

    def settle(self) -> None:
        """After a variant that paused the horses, let their scheduler marks age past the window.

        A blocking dump wakes each horse's threads into a ptrace stop and back: for a second after it,
        the kernel has seen them run, and adaptive sampling would (rightly) give them the window.
        On a host where nobody pauses the workers that does not happen.
        """
        if self.pauses:
            time.sleep(SETTLE_S)

    def reset(self) -> None:
        """Remove the outputs of an earlier run, so that the stack count is of the next one."""
        files = [self.report, self.summary]
        for old in [*(self.outputs.glob("*.txt") if self.outputs else ()), *(f for f in files if f is not None)]:
            old.unlink(missing_ok=True)


def run(counts: list[int], flavour: str, repeats: int) -> str:
    """Start hung workers up to each count, measure, and return the printed report."""
    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not found")
    rq = str(ensure_venv(flavour) / "bin" / "rq")
    timing: list[list[object]] = []
    goal_rows: list[list[object]] = []
    stops: list[list[object]] = []
    notes: list[str] = []
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp, \
            scenarios.tarpit() as pit, running_workers() as workers, compiled():
        bench = Bench.create(Path(tmp) / "bench", url, sites=("site1.local",), db_type="sqlite")
        r = text_client(url)
        horses: list[int] = []
        for count in counts:
            horses += _hang(workers, bench, flavour, count - len(horses), pit.url, r)
            watched = horses + [w.pid for w in workers.started]
            variants = _variants(Path(tmp), bench, url, rq, py_spy, horses)
            _warm_up(variants, Path(tmp))
            before = _load()
            rows, medians = _timing(variants, repeats, Path(tmp), count)
            notes.append(f"{count} workers: all {len(horses)} jobs started; pids watched for stops "
                         f"(workers + horses): {len(watched)}; load average {before} before the timed rounds, "
                         f"{_load()} after")
            timing += rows
            goal_rows.append(goals(count, *medians))
            report = Path(tmp) / "report.json"
            rqdoctor = [*variants[0].argv, "-f", "json", "-o", str(report)]
            for v in [Variant(variants[0].name, rqdoctor, report=report),
                      Variant(f"{variants[0].name} --blocking", [*rqdoctor, "--blocking"], report=report, pauses=True),
                      *variants[1:]]:
                v.reset()
                with StopCounter(watched, horses) as counter:
                    m = checked(measure(v.argv, Path(tmp)), v.name)
                v.settle()
                stops.append([count, v.name, f"{m.wall:.2f}", counter.sweeps, counter.stopped,
                              len(counter.stopped_pids), counter.traced, counter.switches, _coverage(v, count)])
        r.close()
    return "\n".join([
        defaults(), *notes, "",
        table(["workers", "method", "wall s (median)", f"range ({repeats})", "wall / rqdoctor", "CPU s",
               "max RSS 1 proc MiB", "peak PSS sum MiB", "stacks"], timing), "",
        table(["workers", f"wall / (floor + {window():g} s window) <= {WALL_GOAL:g}", "wall - floor s",
               "wall / manual < 1", f"CPU / floor CPU <= {CPU_GOAL:g}", f"peak PSS MiB < {PSS_GOAL_MIB}",
               "probe alone: wall / floor", "probe alone: CPU / floor CPU", "libraries: CPU / floor CPU"],
              goal_rows), "",
        table(["workers", "method (with /proc poller)", "wall s", "poll sweeps", "stopped seen", "pids stopped",
               "tracer seen", "horse ctx switches", "stacks"], stops),
    ])


def window() -> float:
    """Seconds from the first to the last stack sample of one process at ``hangs``' defaults."""
    options = inspect.signature(hangs_command.command).parameters
    return (options["samples"].default - 1) * options["interval"].default


def _sampling() -> list[str]:
    """``hangs``' default ``--samples`` and ``--interval``."""
    options = inspect.signature(hangs_command.command).parameters
    return [str(options["samples"].default), str(options["interval"].default)]


def defaults() -> str:
    """The default sampling settings of ``rqdoctor hangs``, as this code has them."""
    options = inspect.signature(hangs_command.command).parameters
    interval = options["interval"].default
    return (f"rqdoctor hangs defaults: --samples {options['samples'].default} --interval {interval} "
            f"--timeout {options['timeout'].default}, non-blocking, adaptive: one py-spy dump of every process at "
            "once, with each thread's scheduler marks (/proc sched, schedstat) before and after; then, only for "
            f"the processes in which a thread ran, one py-spy record each for the {window():g} s window "
            f"({record.sample_rate(interval, 16)} Hz for 16 processes, {record.sample_rate(interval, 64)} Hz for "
            f"64), at most {record.MAX_RECORDERS} at once, /proc read at each sample")


def goals(count: int, rqdoctor: Measured, floor: Measured, manual: Measured, pss: int,
          probe: Measured, libraries: Measured) -> list[object]:
    """Issue 8's goals for ``hangs`` against this run's floor and manual routine: ratio and met or not.

    ``window`` is the configured one ((samples - 1) x interval), which adaptive sampling spends only on
    the processes in which a thread ran; the probe-alone ratios are given beside, not as goals, and so is
    the libraries' import CPU over the floor's: ``hangs`` runs the floor's dumps itself, so the CPU goal
    is within reach only while that ratio stays below 1.
    """
    def mark(ratio: float, ok: bool) -> str:
        return f"{ratio:.2f} {'met' if ok else 'NOT met'}"

    wall = rqdoctor.wall / (floor.wall + window())
    cpu, probe_cpu = ratio(rqdoctor.cpu, floor.cpu), ratio(probe.cpu, floor.cpu)
    return [count, mark(wall, wall <= WALL_GOAL), f"{rqdoctor.wall - floor.wall:.2f}",
            mark(rqdoctor.wall / manual.wall, rqdoctor.wall < manual.wall),
            mark(cpu, cpu <= CPU_GOAL), f"{mib(pss)} {'met' if pss < PSS_GOAL_MIB * 2**20 else 'NOT met'}",
            f"{probe.wall / floor.wall:.2f}", f"{probe_cpu:.2f}", f"{ratio(libraries.cpu, floor.cpu):.2f}"]


def ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else float("inf")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _timing(variants: list[Variant], repeats: int, tmp: Path,
            count: int) -> tuple[list[list[object]], tuple[Measured, Measured, Measured, int, Measured, Measured]]:
    """Interleaved timed rounds (no sampler), then one memory-sampled run of each variant.

    Returns the table rows and, for the goals, the median runs of rqdoctor, the floor and the manual
    routine, rqdoctor's peak PSS and the median runs of the probe alone and of the libraries' imports.
    """
    runs: dict[str, list[Measured]] = {v.name: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            v.reset()
            runs[v.name].append(checked(measure(v.argv, tmp), v.name))
            v.settle()
    base = median_run(runs[variants[0].name]).wall
    rows: list[list[object]] = []
    peaks: list[int] = []
    for v in variants:
        v.reset()
        best, memory = median_run(runs[v.name]), checked(measure(v.argv, tmp, memory=True), v.name)
        v.settle()
        peaks.append(memory.peak_tree_pss)
        rows.append([count, v.name, f"{best.wall:.2f}", spread(runs[v.name]), f"{best.wall / base:.2f}",
                     f"{best.cpu:.1f}", mib(best.max_process_rss), mib(memory.peak_tree_pss), _coverage(v, count)])
    rqdoctor, floor, probe, libraries, manual = (median_run(runs[v.name]) for v in variants)
    return rows, (rqdoctor, floor, manual, peaks[0], probe, libraries)


def _warm_up(variants: list[Variant], tmp: Path) -> None:
    """One untimed run of each Python variant: fills the byte-code cache (:mod:`benchmarks.pycache`)."""
    for v in variants:
        if v.argv[0] == sys.executable:
            v.reset()
            checked(measure(v.argv, tmp), v.name)


def _hang(workers: Workers, bench: Bench, flavour: str, more: int, tarpit_url: str, r: redis.Redis) -> list[int]:
    """Start ``more`` workers (in batches), give each a hung job, return the horse pids."""
    for first in range(0, more, START_BATCH):
        batch = [workers.frappe(bench, flavour, queues=("long",)) for _ in range(min(START_BATCH, more - first))]
        for w in batch:
            wait_for_worker_registered(r, w, timeout=120)
    jobs = [("rqdoctor.scenarios.sleep_for", {"seconds": 3600}) if i % 2 else
            ("rqdoctor.scenarios.http_no_timeout", {"url": tarpit_url}) for i in range(more)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda job: enqueue(flavour, bench.redis_url, bench.queue("long"), job[0], job[1],
                                                job_timeout=JOB_TIMEOUT), jobs))
    return [wait_for_job_started(r, job_id, timeout=120).executing_pid for job_id in ids]


def _variants(tmp: Path, bench: Bench, url: str, rq: str, py_spy: str, pids: list[int]) -> list[Variant]:
    """rqdoctor hangs, the floor, the stack probe alone, the libraries' imports and the manual routine (last: it
    pauses), for ``pids``."""
    floor_dir, manual_dir = tmp / "floor", tmp / "manual"
    floor_dir.mkdir(exist_ok=True)
    manual_dir.mkdir(exist_ok=True)
    spy, out = shlex.quote(py_spy), "{d}/$p.txt 2>&1"
    pid_list = " ".join(map(str, pids))
    floor = (f"for p in {pid_list}; do {spy} dump --nonblocking --pid $p > {out.format(d=floor_dir)} & done; "
             "wait")
    manual = (f"{shlex.quote(rq)} info -u {shlex.quote(url)} > {manual_dir}/rq-info.txt; "
              f"for p in {pid_list}; do {spy} dump --pid $p > {out.format(d=manual_dir)}; done")
    return [
        Variant("rqdoctor hangs", [sys.executable, "-m", "rqdoctor", "hangs", "--bench", str(bench.root)]),
        Variant("floor: py-spy --nonblocking x N at once", ["sh", "-c", floor], outputs=floor_dir),
        Variant("stack probe alone (adaptive)", [sys.executable, str(Path(__file__).with_name("stacks_probe.py")),
                                                 str(tmp / "probe.txt"), *_sampling(), *map(str, pids)],
                summary=tmp / "probe.txt"),
        Variant(LIBRARIES, [sys.executable, "-c", f"import {', '.join(LIBRARY_MODULES)}"]),
        Variant("manual: rq info + py-spy x N in turn", ["sh", "-c", manual], outputs=manual_dir, pauses=True),
    ]


def _coverage(v: Variant, total: int) -> str:
    """How many of the ``total`` hung jobs got a stack (rqdoctor: and how many samples in all)."""
    if v.outputs is not None:
        got = sum(1 for f in v.outputs.glob("[0-9]*.txt") if "Thread" in f.read_text(errors="replace"))
        return f"{got}/{total}"
    if v.summary is not None:
        got, samples = v.summary.read_text().split() if v.summary.exists() else ("0", "0")
        return f"{got}/{total} ({samples} samples)"
    if v.report is None:
        return ""
    snapshot = json.loads(v.report.read_text())["snapshot"]
    sampled = [len(s["samples"]) for s in snapshot["stacks"] if s["samples"]]
    errors = Counter(f"{e['probe']}/{e['kind']}" for e in snapshot["errors"])
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(errors.items())) or "no errors"
    return f"{len(sampled)}/{total} ({sum(sampled)} samples; {listed})"
