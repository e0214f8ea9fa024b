"""Real jobs blocked on an HTTP tarpit, an SMTP tarpit and a file lock, beside the bench's own Redis servers.

The bench's Redis (queue, cache, socketio) all run on random non-standard ports; the jobs open
connections to the cache and socketio servers before they block, so their horses hold several
connections besides the one they wait on. Every one of 20 ``hangs`` runs must name the tarpit, and
the file lock's holder (a plain Python process holding ``fcntl.flock``) by its pid.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import _free_port, _stop_server, private_redis_db, read_line, tcp_reachable
from tests.harness.venvs import ensure_venv, selected_flavours, venv_python
from tests.harness.workers import Workers, text_client, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import SCN, enqueue_many, findings_of, job_spec, jobs_by_id, run_cli, stop_quickly

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLAVOUR = next((f for f in ("rq115", "rq30", "rq26", "rq116") if f in selected_flavours()), None)
RUNS = 20
HOLD = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"  # noqa: E501


@contextmanager
def redis_server() -> Iterator[str]:
    """One more private redis-server on a free non-standard port, stopped by its pid."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server on PATH")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while not tcp_reachable("127.0.0.1", port, timeout=0.2):
            assert proc.poll() is None and time.monotonic() < end, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop_server(proc)


@dataclass
class Lab:
    bench: Bench
    http_pit: scenarios.Tarpit
    smtp_pit: scenarios.Tarpit
    holder: subprocess.Popen[str]
    jobs: dict[str, str]
    has_filelock: bool
    lock_file: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if FLAVOUR is None:
        pytest.skip("no rq flavour selected")
    with ExitStack() as stack:
        queue_url = stack.enter_context(private_redis_db())
        cache_url = stack.enter_context(redis_server())
        socketio_url = stack.enter_context(redis_server())
        root = tmp_path_factory.mktemp("peers") / "frappe-bench"
        bench = Bench.create(root, queue_url, extra_config={"redis_cache": cache_url, "redis_socketio": socketio_url})
        lock_dir = bench.sites_path / bench.sites[0] / "locks"
        lock_dir.mkdir()
        lock_file = lock_dir / "x.lock"
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file)], stdout=subprocess.PIPE, text=True)
        stack.callback(holder.wait)
        stack.callback(holder.kill)
        read_line(holder, "locked")
        http_pit = stack.enter_context(scenarios.tarpit())
        smtp_pit = stack.enter_context(scenarios.tarpit())
        r = text_client(queue_url)
        stack.callback(r.close)
        workers = stack.enter_context(Workers())
        stack.callback(stop_quickly, workers)
        by_queue = {q: workers.frappe(bench, FLAVOUR, (q,)) for q in ("short", "default", "long")}
        for w in by_queue.values():
            wait_for_worker_registered(r, w, timeout=60)
        side = [cache_url, socketio_url]
        specs = {
            "http": job_spec(FLAVOUR, bench, "short", SCN + "http_beside_redis", {"url": http_pit.url,
                                                                               "redis_urls": side}),
            "smtp": job_spec(FLAVOUR, bench, "default", SCN + "smtp_no_timeout",
                             {"host": "127.0.0.1", "port": smtp_pit.port, "redis_urls": side}),
            "flock": job_spec(FLAVOUR, bench, "long", SCN + "file_lock_wait", {"path": str(lock_file), "seconds": 600}),
        }
        enqueue_many(FLAVOUR, list(specs.values()))
        queues = {"http": "short", "smtp": "default", "flock": "long"}
        for label, spec in specs.items():
            wait_for_job_started(r, spec["job_id"], by_queue[queues[label]], timeout=60)
        assert http_pit.wait_for_connection() and smtp_pit.wait_for_connection()
        probe = subprocess.run([str(venv_python(ensure_venv(FLAVOUR))), "-c", "import filelock"], check=False,
                               capture_output=True)
        time.sleep(1.5)
        yield Lab(bench, http_pit, smtp_pit, holder, {k: s["job_id"] for k, s in specs.items()},
                  probe.returncode == 0, lock_file)


def hangs(lab: Lab) -> dict[str, Any]:
    run = run_cli("hangs", "--bench", str(lab.bench.root), "--format", "json", "--no-db", "--min-age", "1")
    assert run.code == 1, run
    return run.report


def test_peer_is_the_tarpit_in_every_run_and_the_file_lock_holder_is_named(lab: Lab) -> None:
    peers: dict[str, list[object]] = {"http": [], "smtp": []}
    for _ in range(RUNS):
        report = hangs(lab)
        rows = jobs_by_id(report)
        for label in peers:
            activity = rows[lab.jobs[label]]["activity"]
            peers[label].append((activity["kind"], activity["peer"], activity["peer_exact"]))
        flock = findings_of(report, lab.jobs["flock"])
        assert [f["code"] for f in flock] == ["RQD112"], flock
        if not lab.has_filelock:  # fcntl.flock: blocked in the kernel, the exact route
            detail = rows[lab.jobs["flock"]]["activity"]["detail"]
            assert detail.startswith(f"waiting for a file lock on {lab.lock_file}"), detail
            assert flock[0]["data"]["holders"] == [lab.holder.pid], flock
            assert f"kill -TERM {lab.holder.pid}" in flock[0]["commands"]
    assert peers["http"] == [("http", f"127.0.0.1:{lab.http_pit.port}", True)] * RUNS
    assert peers["smtp"] == [("smtp", f"127.0.0.1:{lab.smtp_pit.port}", True)] * RUNS


def test_the_horses_really_hold_the_bench_redis_connections(lab: Lab) -> None:
    """The test can fail: without the side connections, any rule would pick the tarpit."""
    report = hangs(lab)
    pid = jobs_by_id(report)[lab.jobs["http"]]["pid"]
    process = next(p for p in report["snapshot"]["processes"] if p["pid"] == pid)
    raddrs = {c["raddr"] for c in process["connections"]}
    ports = {str(e["address"]).rsplit(":", 1)[1] for e in report["snapshot"]["target"]["endpoints"]}
    assert {f"127.0.0.1:{p}" for p in ports} <= raddrs and f"127.0.0.1:{lab.http_pit.port}" in raddrs
