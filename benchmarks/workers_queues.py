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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.measure import Measured, checked, measure, median_run, spread, table
from benchmarks.rqdata import MonitorCount, add_history, add_jobs, fingerprint, load_workers
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
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp:
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


def vs_rq_info(size: Size, workers: int, flavour: str, repeats: int) -> str:
    """``rqdoctor workers`` (text into a pipe, ``-v``, ``-f json``) next to ``rq info``, at ``workers`` workers.

    Interleaved rounds, medians, and each median's ratio to ``rq info``'s (the issue 8 goal: text ≤ 1.0).
    Also the lines each text variant prints, to show what the cap leaves out.
    """
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp:
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
        runs: dict[str, list[Measured]] = {t.name: [] for t in tools}
        for _ in range(repeats):  # interleaved, so that noise hits every command alike
            for tool in tools:
                runs[tool.name].append(checked(measure(tool.argv, Path(tmp)), tool.name))
        lines = {t.name: _lines(t, Path(tmp)) for t in tools if t.module == "rqdoctor" and "json" not in t.name}
        report = json.loads(subprocess.run(as_json.argv, capture_output=True, text=True, timeout=120).stdout)
    processes = len(report["snapshot"]["processes"])
    base = median_run(runs[info.name]).wall
    rows = [[tool.name, f"{median_run(runs[tool.name]).wall:.2f}", spread(runs[tool.name]),
             f"{median_run(runs[tool.name]).cpu:.2f}", lines.get(tool.name, ""),
             f"{median_run(runs[tool.name]).wall / base:.2f}"] for tool in tools]
    headers = ["command", "wall s (median)", f"wall range ({repeats})", "CPU s", "lines out", "wall / rq info"]
    return (f"{workers:,} workers + {size}, output to a pipe; the process probe described {processes} local "
            "processes (worker-like processes of other test suites on this host: the workers here are remote)\n\n"
            + table(headers, rows))


def _lines(tool: Tool, tmp: Path) -> int:
    """Lines the command prints into a pipe (no terminal: the 50-row cap)."""
    return subprocess.run(tool.argv, capture_output=True, text=True, timeout=120, cwd=tmp).stdout.count("\n")
