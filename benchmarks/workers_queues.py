"""Issue 2: ``rqdoctor workers`` / ``queues`` against 1,000 workers and many queued and failed jobs.

For each data size, one counting run per command gives Redis round trips and commands three
ways: rqdoctor's own count (``RedisState.round_trips/commands`` of a JSON run), the writes
redis-py made to its socket (counted by patching ``send_packed_command`` in that process), and
the commands Redis executed in our DB (MONITOR). Then interleaved timing runs, side by side
with ``rq info``. ``rq info`` is not read-only (it cleans registries and worker sets): it
always runs after rqdoctor in a round, and a fingerprint of the DB before and after the
rounds shows whether it changed anything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.measure import Measured, checked, measure, median_run, spread, table
from benchmarks.pycache import compiled
from benchmarks.rqdata import MonitorCount, add_history, add_jobs, fingerprint, load_workers
from rqdoctor.diagnose.link import link
from rqdoctor.model import Snapshot
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.venvs import venv_python

BENCH_ID = "perfbench"
SEND_COUNTER = r"""
import atexit, json, runpy, sys
import redis.connection as c
sends = [0]
original = c.AbstractConnection.send_packed_command
def counted(self, *args, **kwargs):
    sends[0] += 1
    return original(self, *args, **kwargs)
c.AbstractConnection.send_packed_command = counted
out, module = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sends[0])))
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
"""Runs ``python -m <module> <args>`` counting redis-py's socket writes (one per round trip)."""
BYSTANDERS = 200
"""Unrelated worker-like processes added for the second variant of :func:`vs_rq_info`."""


@dataclass
class Size:
    """One data size: totals of queued and failed job ids, and of finished runs (with one started job)."""

    queued: int
    failed: int
    finished: int = 0

    def __str__(self) -> str:
        text = f"{self.queued // 1000}k queued / {self.failed // 1000}k failed"
        return text + (f" / {self.finished // 1000}k finished + 1 started" if self.finished else "")


@dataclass
class Tool:
    """One command: ``python -m module args``; ``count`` when its Redis traffic is counted."""

    name: str
    python: str
    module: str
    args: list[str]
    count: bool = True

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", self.module, *self.args]


def run(sizes: list[Size], workers: int, flavour: str, repeats: int) -> str:
    """Load, measure and return the printed report."""
    out: list[str] = []
    rows: list[list[object]] = []
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp, compiled():
        db = int(url.rsplit("/", 1)[1])
        bench = Bench.create(Path(tmp) / "bench", url, bench_id=BENCH_ID, sites=("site1.local",), db_type="sqlite")
        target = ["--bench", str(bench.root)]
        tools = [
            Tool("rqdoctor workers", sys.executable, "rqdoctor", ["workers", *target]),
            Tool("rqdoctor workers -f json", sys.executable, "rqdoctor", ["workers", *target, "-f", "json"], False),
            Tool("rqdoctor queues", sys.executable, "rqdoctor", ["queues", *target]),
            Tool(f"rq info ({flavour})", str(venv_python(flavour)), "rq.cli", ["info", "-u", url]),
            Tool("rqdoctor --version (start-up)", sys.executable, "rqdoctor", ["--version"], False),
        ]
        r = redis.Redis.from_url(url)
        now = time.time()
        load_workers(r, BENCH_ID, workers, now)
        loaded = Size(0, 0)
        for size in sizes:
            start = time.perf_counter()
            add_jobs(r, BENCH_ID, range(loaded.queued, size.queued), range(loaded.failed, size.failed), now)
            add_history(r, BENCH_ID, range(loaded.finished, size.finished), now)
            loaded = size
            out.append(f"loaded {workers} workers + {size} into DB {db} in {time.perf_counter() - start:.1f}s "
                       f"(Redis used_memory {r.info('memory')['used_memory_human']})")
            before = fingerprint(r, BENCH_ID)
            for tool in tools:  # warm-up: fills the byte-code cache (:mod:`benchmarks.pycache`)
                checked(measure(tool.argv, Path(tmp)), tool.name)
            counts = {t.name: _count(t, url, db, Path(tmp)) for t in tools if t.count}
            runs: dict[str, list[Measured]] = {t.name: [] for t in tools}
            for _ in range(repeats):  # interleaved, so that noise hits every command alike
                for tool in tools:
                    runs[tool.name].append(checked(measure(tool.argv, Path(tmp)), tool.name))
            after = fingerprint(r, BENCH_ID)
            out.append(f"  DB fingerprint (dbsize, workers, per queue: queued, failed, workers) before/after "
                       f"the rounds: {'unchanged' if before == after else f'CHANGED {before} -> {after}'}")
            base = median_run(runs["rqdoctor workers"]).wall
            for tool in tools:
                trips, sends, cmds, seen = counts.get(tool.name, ("", "", "", ""))
                best = median_run(runs[tool.name])
                rows.append([str(size), tool.name, trips, sends, cmds, seen, f"{best.wall:.2f}",
                             spread(runs[tool.name]), f"{best.wall / base:.2f}"])
        r.close()
    headers = ["data", "command", "round trips (own)", "socket writes", "commands (own)", "commands (MONITOR)",
               "wall s (median)", f"wall range ({repeats})", "wall / rqdoctor workers"]
    return "\n".join([*out, "", table(headers, rows)])


def _count(tool: Tool, url: str, db: int, tmp: Path) -> tuple[object, int, object, int]:
    """(own round trips, socket writes, own commands, MONITOR commands) of one run of ``tool``."""
    report, sends = tmp / "report.json", tmp / "sends.json"
    own = tool.module == "rqdoctor"
    args = [*tool.args, "--format", "json", "-o", str(report)] if own else tool.args
    with MonitorCount(url, db) as monitor:
        checked(measure([tool.python, "-c", SEND_COUNTER, str(sends), tool.module, *args], tmp), tool.name)
    writes = json.loads(sends.read_text())
    if not own:
        return "-", writes, "-", monitor.total
    state = json.loads(report.read_text())["snapshot"]["redis"]
    return state["round_trips"], writes, state["commands"], monitor.total


def vs_rq_info(size: Size, workers: int, flavour: str, repeats: int, bystanders: int = BYSTANDERS) -> str:
    """``rqdoctor workers`` (text into a pipe, ``-v``, ``-f json``) next to ``rq info``, at ``workers`` workers.

    Two variants in one run, on the same data: the host as it is, then with ``bystanders`` more unrelated
    worker-like processes (:func:`bystanding`). Interleaved rounds, medians, and each median's ratio to
    ``rq info``'s in the same variant (the issue 8 goal: text ≤ 1.0). Also the lines each text variant
    prints (what the cap leaves out), the local processes the probe described, the workers it called
    local and the orphans it found (both must stay 0: the workers are remote and the bystanders unrelated),
    and the load average before and after each variant.
    """
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp, compiled():
        bench = Bench.create(Path(tmp) / "bench", url, bench_id=BENCH_ID, sites=("site1.local",), db_type="sqlite")
        target = ["--bench", str(bench.root)]
        info = Tool(f"rq info ({flavour})", str(venv_python(flavour)), "rq.cli", ["info", "-u", url])
        as_json = Tool("rqdoctor workers -f json", sys.executable, "rqdoctor", ["workers", *target, "-f", "json"])
        tools = [  # rq info cleans registries: it runs after rqdoctor in each round (here it finds nothing to clean)
            Tool("rqdoctor workers", sys.executable, "rqdoctor", ["workers", *target]),
            Tool("rqdoctor workers -v", sys.executable, "rqdoctor", ["workers", "-v", *target]),
            as_json,
            info,
            Tool("rqdoctor --version (start-up)", sys.executable, "rqdoctor", ["--version"]),
        ]
        r = redis.Redis.from_url(url)
        now = time.time()
        load_workers(r, BENCH_ID, workers, now)
        add_jobs(r, BENCH_ID, range(size.queued), range(size.failed), now)
        r.close()
        for tool in tools:  # warm-up: fills the byte-code cache
            checked(measure(tool.argv, Path(tmp)), tool.name)
        variants = [_variant("this host", tools, as_json, repeats, Path(tmp))]
        with bystanding(bystanders):
            variants.append(_variant(f"+{bystanders} bystanders", tools, as_json, repeats, Path(tmp)))
    headers = ["command"]
    for v in variants:
        headers += [f"{v.name}: wall s", f"range ({repeats})", "CPU s", "/ rq info"]
    rows = []
    for tool in tools:
        row: list[object] = [tool.name]
        for v in variants:
            best, base = median_run(v.runs[tool.name]), median_run(v.runs[info.name]).wall
            row += [f"{best.wall:.2f}", spread(v.runs[tool.name]), f"{best.cpu:.2f}", f"{best.wall / base:.2f}"]
        rows.append(row)
    notes = [f"{v.name}: load average {v.load_before} -> {v.load_after}; the probe described {v.processes} local "
             f"processes, called {v.local} workers local and found {v.orphans} orphaned horses" for v in variants]
    lines = ", ".join(f"{name}: {count}" for name, count in variants[0].lines.items())
    return "\n".join([f"{workers:,} workers (all on remote hosts) + {size}, output to a pipe; lines out: {lines}",
                      *notes, "", table(headers, rows)])


@dataclass
class _Variant:
    """The timed rounds of one host state, and what the probe made of that host."""

    name: str
    runs: dict[str, list[Measured]]
    lines: dict[str, int]
    processes: int
    local: int
    orphans: int
    load_before: str
    load_after: str


def _variant(name: str, tools: list[Tool], as_json: Tool, repeats: int, tmp: Path) -> _Variant:
    before = _load()
    runs: dict[str, list[Measured]] = {t.name: [] for t in tools}
    for _ in range(repeats):  # interleaved, so that noise hits every command alike
        for tool in tools:
            runs[tool.name].append(checked(measure(tool.argv, tmp), tool.name))
    after = _load()
    lines = {t.name: _lines(t, tmp) for t in tools if t.module == "rqdoctor" and "json" not in t.name}
    report = json.loads(subprocess.run(as_json.argv, capture_output=True, text=True, timeout=120, cwd=tmp).stdout)
    snapshot = Snapshot.from_dict(report["snapshot"])
    links = link(snapshot)
    local = sum(1 for wl in links.workers if wl.location != "remote")
    return _Variant(name, runs, lines, len(snapshot.processes), local, len(links.orphans), before, after)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


BYSTANDER = "import socket, sys, time; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); time.sleep(3600)"
BYSTANDER_TAILS = (["rq", "worker", "-u", "redis://127.0.0.1:1/0", "default"],
                   ["frappe.utils.bench_helper", "frappe", "worker", "--queue", "short,default"])


@contextmanager
def bystanding(count: int) -> Iterator[list[int]]:
    """``count`` idle processes whose argv reads as an rq or Frappe worker, registered nowhere (pids yielded).

    Like another bench's workers on the same host: each holds a TCP connection (to a listener here), runs in
    ``/`` and in a session of its own. Killed by pid at the end.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=max(128, count))
    port = str(listener.getsockname()[1])
    accepted: list[socket.socket] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", BYSTANDER, port, *BYSTANDER_TAILS[i % 2]], cwd="/",
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        listener.settimeout(60)
        while len(accepted) < count:  # every one connected: the host's TCP table holds them all
            accepted.append(listener.accept()[0])
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)
        for sock in [*accepted, listener]:
            sock.close()


def _lines(tool: Tool, tmp: Path) -> int:
    """Lines the command prints into a pipe (no terminal: the 50-row cap)."""
    return subprocess.run(tool.argv, capture_output=True, text=True, timeout=120, cwd=tmp).stdout.count("\n")
