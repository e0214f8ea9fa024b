"""Run the benchmarks and print their tables: ``python -m benchmarks [--quick] [--only NAME]``.

NAME is one of redis, workers, hangs, startup, deadline, render.

Every figure is measured side by side with its comparison in the same run, on this machine,
right now; ratios matter more than absolute times on a shared, noisy host.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import redis

from benchmarks import deadline, hangs, render, startup, workers_queues
from benchmarks.workers_queues import Size
from rqdoctor import __version__
from rqdoctor.probes.stacks import find_py_spy
from tests.harness.services import redis_base_url
from tests.harness.venvs import RQ_FLAVOURS, venv_python


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke run)")
    parser.add_argument("--only", choices=("redis", "workers", "hangs", "startup", "deadline", "render"),
                        help="run one benchmark")
    parser.add_argument("--flavour", default="rq26", choices=sorted(RQ_FLAVOURS),
                        help="rq venv of the harness for workers and `rq info` (default rq26)")
    parser.add_argument("--repeats", type=int, help="timed rounds per figure (default 5, --quick 1)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    started = time.monotonic()
    print(machine(args.flavour), flush=True)
    if args.only in (None, "redis"):
        sizes = [Size(1_000, 10_000), Size(10_000, 100_000), Size(10_000, 100_000, 10_000)] if args.quick else \
            [Size(10_000, 100_000), Size(100_000, 1_000_000), Size(100_000, 1_000_000, 10_000)]
        print("\n## workers / queues: 1,000 workers, two data sizes, then run history\n", flush=True)
        print(workers_queues.run(sizes, 1_000, args.flavour, repeats), flush=True)
    if args.only in (None, "workers"):
        size = Size(10_000, 100_000) if args.quick else Size(100_000, 1_000_000)
        print("\n## workers next to rq info: 1,000 workers\n", flush=True)
        print(workers_queues.vs_rq_info(size, 1_000, args.flavour, repeats), flush=True)
    if args.only in (None, "hangs"):
        counts = [4, 16] if args.quick else [16, 64]
        print(f"\n## hangs: {' and '.join(map(str, counts))} hung workers\n", flush=True)
        print(hangs.run(counts, args.flavour, repeats), flush=True)
    if args.only in (None, "startup"):
        print(f"\n## start-up: rqdoctor beside rq, median of {repeats * 2} runs\n", flush=True)
        print(startup.run(args.flavour, repeats * 2), flush=True)
    if args.only in (None, "deadline"):
        print("\n## deadline: every command against Redis, MariaDB and PostgreSQL tarpits\n", flush=True)
        print(deadline.run(args.repeats or 1), flush=True)
    if args.only in (None, "render"):
        sizes = [16, 64] if args.quick else [16, 64, 600]
        print(f"\n## render: the hangs report of {', '.join(map(str, sizes))} running jobs, in-process\n", flush=True)
        print(render.run(sizes, args.repeats or 5), flush=True)
    print(f"\ntotal {time.monotonic() - started:.0f}s")


def machine(flavour: str) -> str:
    """Date, host, versions and the command line: the header of every report."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    rq_version = subprocess.run([str(venv_python(flavour)), "-c", "import rq, redis; print(rq.__version__, "
                                 "redis.__version__)"], capture_output=True, text=True, timeout=60).stdout.split()
    py_spy = find_py_spy() or "py-spy"
    spy_version = subprocess.run([py_spy, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    client = redis.Redis.from_url(redis_base_url(), socket_timeout=5)
    server = client.info("server")["redis_version"]
    client.close()
    return "\n".join([
        f"# rqdoctor benchmarks, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"command: {' '.join([os.path.basename(sys.executable), '-m', 'benchmarks', *sys.argv[1:]])}",
        f"machine: {os.cpu_count()} CPU ({cpu}), {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f}"
        f" GiB RAM, Linux {platform.release()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"versions: rqdoctor {__version__}, Python {platform.python_version()}, Redis {server}, {spy_version}, "
        f"{flavour}: rq {' redis-py '.join(rq_version)}",
    ])
