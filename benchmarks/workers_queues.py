"""Issue 2: ``rqdoctor workers`` / ``queues`` against 1,000 workers and many queued and failed jobs.

For each data size: Redis round trips and commands (rqdoctor's own count from a JSON run, and
MONITOR's count of what Redis executed in our DB), then wall time side by side with ``rq info``.
``rq info`` is not read-only (it cleans registries and worker sets): it always runs after
rqdoctor in a round, and a fingerprint of the DB taken before and after shows what it changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.measure import Measured, measure, median_run, spread, table
from benchmarks.rqdata import MonitorCount, add_jobs, fingerprint, load_workers
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.venvs import ensure_venv

BENCH_ID = "perfbench"


@dataclass
class Size:
    """One data size: totals of queued and failed job ids."""

    queued: int
    failed: int

    def __str__(self) -> str:
        return f"{self.queued // 1000}k queued / {self.failed // 1000}k failed"


def run(sizes: list[Size], workers: int, flavour: str, repeats: int) -> str:
    """Load, measure and return the printed report."""
    out: list[str] = []
    rq = str(ensure_venv(flavour) / "bin" / "rq")
    with private_redis_db() as url, tempfile.TemporaryDirectory(prefix="rqd-bench-") as tmp:
        db = int(url.rsplit("/", 1)[1])
        bench = Bench.create(Path(tmp) / "bench", url, bench_id=BENCH_ID, sites=("site1.local",), db_type="sqlite")
        r = redis.Redis.from_url(url)
        now = time.time()
        load_workers(r, BENCH_ID, workers, now)
        loaded = Size(0, 0)
        commands = {
            "rqdoctor workers": [sys.executable, "-m", "rqdoctor", "workers", "--bench", str(bench.root)],
            "rqdoctor queues": [sys.executable, "-m", "rqdoctor", "queues", "--bench", str(bench.root)],
            f"rq info ({flavour})": [rq, "info", "-u", url],
        }
        rows: list[list[object]] = []
        for size in sizes:
            start = time.perf_counter()
            add_jobs(r, BENCH_ID, range(loaded.queued, size.queued), range(loaded.failed, size.failed), now)
            loaded = size
            out.append(f"loaded {workers} workers, {size} (DB {db}) in {time.perf_counter() - start:.1f}s; "
                       f"Redis used_memory {r.info('memory')['used_memory_human']}")
            before = fingerprint(r, BENCH_ID)
            counts = {name: _count(name, argv, url, db, Path(tmp)) for name, argv in commands.items()}
            runs: dict[str, list[Measured]] = {name: [] for name in commands}
            for _ in range(repeats):  # interleaved, so that noise hits every command alike
                for name, argv in commands.items():
                    runs[name].append(_checked(measure(argv, Path(tmp)), name))
            after = fingerprint(r, BENCH_ID)
            out.append(f"  rq info changed the DB fingerprint: {before != after} ({before} -> {after})")
            base = median_run(runs["rqdoctor workers"]).wall
            for name in commands:
                trips, cmds, seen = counts[name]
                best = median_run(runs[name])
                rows.append([str(size), name, trips, cmds, seen, f"{best.wall:.2f}", spread(runs[name]),
                             f"{best.wall / base:.2f}"])
        r.close()
    headers = ["data", "command", "round trips", "commands (own count)", "commands (MONITOR)",
               "wall s (median)", f"wall range ({repeats} runs)", "wall / rqdoctor workers"]
    return "\n".join([*out, "", table(headers, rows)])


def _count(name: str, argv: list[str], url: str, db: int, tmp: Path) -> tuple[object, object, int]:
    """(round trips, commands) by rqdoctor's own count, and commands by MONITOR, of one run."""
    report = tmp / "report.json"
    json_argv = [*argv, "--format", "json", "-o", str(report)] if name.startswith("rqdoctor") else argv
    with MonitorCount(url, db) as monitor:
        _checked(measure(json_argv, tmp), name)
    if not name.startswith("rqdoctor"):
        return "-", "-", monitor.total
    state = json.loads(report.read_text())["snapshot"]["redis"]
    return state["round_trips"], state["commands"], monitor.total


def _checked(run: Measured, name: str) -> Measured:
    if run.rc not in (0, 1):
        raise RuntimeError(f"{name} failed (exit {run.rc}): {run.stderr}")
    return run
