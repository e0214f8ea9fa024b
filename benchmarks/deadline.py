"""Issue 8: how far past ``--timeout`` each command ends against Redis, MariaDB and PostgreSQL tarpits.

Each command runs once per tarpit (:mod:`tests.harness.tarpits`: silent, half a reply, a real
server trickled a byte a second), one at a time, with ``--timeout`` :data:`TIMEOUT_S`. The figure
is the overshoot: wall time from the command's start (start-up included, as the deadline counts
from the process start) minus ``--timeout``; the goal is at most 1 s. A bare ``rqdoctor --version``
measured in the same run shows what start-up alone costs right now.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import measure, table
from tests.harness.services import redis_base_url
from tests.harness.tarpits import KINDS, Tarpit

TIMEOUT_S = 3.0
GOAL_S = 1.0
REAL_DB = {"mariadb": "mysql://root@127.0.0.1:3306/"}
REDIS_COMMANDS = ["hangs", "stack", "locks", "workers", "queues", "preflight", "target"]
DB_COMMANDS = ["hangs", "stack", "locks", "preflight"]
"""The commands that read databases (the others never connect to one)."""


def script() -> str:
    return str(Path(sys.executable).with_name("rqdoctor"))


def argv(command: str, bench: Path, redis_url: str, db_url: str | None, pid: int) -> list[str]:
    """One command line; ``target`` connects nowhere and takes no ``--timeout``."""
    args = [script(), command, *([str(pid)] if command == "stack" else []), "--bench", str(bench),
            "--redis-url", redis_url]
    db = db_url or (REAL_DB["mariadb"] if command == "locks" else None)  # locks needs a database to read
    if db and command in DB_COMMANDS:
        args += ["--db-url", db]
    return args if command == "target" else [*args, "--timeout", f"{TIMEOUT_S:g}"]


def run(repeats: int = 1) -> str:
    """The overshoot table (``repeats`` runs per cell, the worst shown)."""
    real_redis = redis_base_url() + "/0"
    upstream = ("127.0.0.1", int(real_redis.rsplit(":", 1)[1].split("/")[0]))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    rows: list[list[object]] = []
    worst = 0.0
    try:
        with tempfile.TemporaryDirectory(prefix="rqd-bench-deadline-") as tmp:
            bench = Path(tmp) / "bench"
            (bench / "sites").mkdir(parents=True)
            (bench / "sites" / "common_site_config.json").write_text('{"bench_id": "deadline"}')
            start_up = max(measure([script(), "--version"], Path(tmp)).wall for _ in range(repeats))
            for service in ("redis", "mariadb", "postgres"):
                for command in REDIS_COMMANDS if service == "redis" else DB_COMMANDS:
                    row: list[object] = [service, command]
                    for kind in KINDS:
                        walls = []
                        for _ in range(repeats):
                            with Tarpit(service, kind, upstream=upstream if service == "redis" else None,
                                        lifetime=TIMEOUT_S + 60) as pit:
                                if service == "redis":
                                    args = argv(command, bench, pit.url("0"), None, sleeper.pid)
                                else:
                                    args = argv(command, bench, real_redis,
                                                pit.url("postgres" if service == "postgres" else ""), sleeper.pid)
                                result = measure(args, Path(tmp), timeout=TIMEOUT_S + 60)
                            walls.append(result.wall)
                        over = max(walls) - (0.0 if command == "target" else TIMEOUT_S)
                        worst = max(worst, over) if command != "target" else worst
                        row.append(f"{over:+.2f} s")
                    rows.append(row)
    finally:
        sleeper.kill()
        sleeper.wait(10)
    verdict = "within" if worst <= GOAL_S else "OVER"
    return "\n".join([
        f"--timeout {TIMEOUT_S:g}; overshoot = wall from the command's start - --timeout (target: its whole wall, "
        f"it takes no --timeout); worst of {repeats} run(s) per cell",
        f"bare start-up (`rqdoctor --version`) right now: {start_up:.2f} s",
        "",
        table(["tarpit", "command", *KINDS], rows),
        "",
        f"worst overshoot {worst:+.2f} s: {verdict} the {GOAL_S:g} s goal",
    ])
