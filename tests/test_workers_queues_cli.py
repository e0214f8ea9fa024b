"""``rqdoctor workers`` and ``queues`` against real RQ workers: the view, and proof that it only reads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.harness.bench import Bench
from tests.harness.workers import Workers, enqueue, wait_for_job_started

pytestmark = [pytest.mark.integration]

READ_COMMANDS = {"time", "info", "smembers", "exists", "type", "hgetall", "ttl", "llen", "lindex", "zcard",
                 "zrange", "zrevrangebyscore", "hmget", "hget", "ping", "select", "client", "echo",
                 "scard", "scan", "sismember"}  # the key-prefix checks (rqdoctor.probes.prefix_probe)


def rqdoctor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


class Monitor:
    """Records every command Redis executes while it runs (a second connection in MONITOR mode)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.events: list[dict[str, object]] = []
        self._monitor = self.client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            for event in self._monitor.listen():
                self.events.append(event)
        except (redis.ConnectionError, ValueError, AttributeError):
            return

    def stop(self) -> list[dict[str, object]]:
        self._monitor.connection.disconnect()
        self._thread.join(timeout=5)
        return self.events


def _first_real(commands: list[str]) -> str:
    """The first command that is not connection set-up."""
    setup = ("SELECT", "PING", "HELLO", "CLIENT", "AUTH")
    return next((c.upper() for c in commands if not c.upper().startswith(setup)), "")


def commands_by_client(events: list[dict[str, object]]) -> dict[str, list[str]]:
    clients: dict[str, list[str]] = {}
    for e in events:
        clients.setdefault(f"{e.get('client_address')}:{e.get('client_port')}", []).append(str(e["command"]))
    return clients


@pytest.fixture
def busy_bench(bench: Bench, workers: Workers, redis_client: redis.Redis) -> Iterator[tuple[Bench, str, str]]:
    """A bench with one busy rq 1.15 worker (a sleeping job) and one idle rq 2.6 worker."""
    busy = workers.frappe(bench, "rq115", ["short"])
    workers.frappe(bench, "rq26", ["long"])
    job = enqueue("rq115", bench.redis_url, f"{bench.bench_id}:short", "rqdoctor.scenarios.sleep_for",
                  {"seconds": 120})
    wait_for_job_started(redis_client, job, busy)
    yield bench, job, str(busy.pid)


def test_workers_shows_process_job_and_horse(busy_bench: tuple[Bench, str, str]) -> None:
    bench, job, pid = busy_bench
    # WHEN
    run = rqdoctor("workers", "--format", "json", cwd=bench.sites_path)
    # THEN (the bench was found from the current directory)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["snapshot"]["target"]["bench_source"] == "current directory"
    rows = {str(w["pid"]): w for w in report["workers"]}
    busy = rows[pid]
    assert busy["location"] == "local"
    assert busy["state"] == "busy"
    assert busy["current_job"] == job
    assert busy["horse_pid"] is not None
    assert busy["job_running_for_s"] is not None
    assert busy["heartbeat_age_s"] < 60
    idle = [w for w in rows.values() if w["state"] == "idle"]
    assert len(idle) == 1 and idle[0]["findings"] == []


def test_workers_and_queues_only_read(busy_bench: tuple[Bench, str, str], redis_url: str) -> None:
    bench = busy_bench[0]
    for command in ("workers", "queues"):
        # GIVEN a MONITOR on the server
        monitor = Monitor(redis_url)
        # WHEN
        run = rqdoctor(command, "--bench", str(bench.root), "--format", "json")
        events = monitor.stop()
        # THEN rqdoctor's connection (the one that asks TIME, or SCARD of the key-prefix check, first; rq workers
        # never do) only read
        assert run.returncode == 0, run.stderr
        ours = [cmds for cmds in commands_by_client(events).values() if _first_real(cmds).startswith(("TIME", "SCARD"))]
        assert len(ours) == 1, f"cannot tell rqdoctor's connection apart: {commands_by_client(events)}"
        issued = json.loads(run.stdout)["snapshot"]["redis"]["commands"]
        assert len(ours[0]) >= issued > 0
        names = {c.split()[0].lower() for c in ours[0]}
        assert not names - READ_COMMANDS, f"{command} issued write commands: {names - READ_COMMANDS}"


def test_queues_counts_and_listeners(busy_bench: tuple[Bench, str, str], redis_client: redis.Redis) -> None:
    bench = busy_bench[0]
    # GIVEN two jobs queued on a queue nobody listens to
    for _ in range(2):
        enqueue("rq115", bench.redis_url, f"{bench.bench_id}:default", "rqdoctor.scenarios.quick")
    # WHEN
    run = rqdoctor("queues", "--bench", str(bench.root), "--format", "json")
    # THEN
    assert run.returncode == 1
    rows = {q["name"].split(":")[-1]: q for q in json.loads(run.stdout)["queues"]}
    assert rows["short"]["started"] == 1
    assert rows["short"]["listening_workers"] == 1
    assert rows["default"]["queued"] == 2
    assert rows["default"]["listening_workers"] == 0
    assert "RQD501" in rows["default"]["findings"]
    assert rows["default"]["oldest_queued_age_s"] is not None
