"""End to end, real processes: identity before any claim, orphans from the process tree only.

- Worker hashes written into the test's private Redis DB claim this host and the pids of unrelated
  live processes (``sleep 300``; a Python loop with a child leading its own process group) and of an
  unreaped zombie whose argv looked like ``rq worker``: none is called a worker or a horse, none gets
  kill advice, in ``hangs``, ``workers`` and ``stack`` (text and JSON).
- ``stack <pid>`` of a live non-Python / non-worker pid says what it is; a missing pid is exit 2.
- Another Redis DB's busy workers on the host, Redis refused, a Redis tarpit: no RQD110, no kill advice.
- A horse killed while rqdoctor samples it is reported as gone: no verdict, no kill command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.workers import Workers, text_client, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import (
    RQDOCTOR,
    SCN,
    Run,
    _rq_time,
    enqueue_many,
    job_spec,
    run_cli,
    selected_flavours,
)

pytestmark = [pytest.mark.integration]

FLAVOUR = next((f for f in ("rq26", "rq115", "rq30") if f in selected_flavours()), "rq26")
QUEUE = "claims"


def kill_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "kill -" in line]


def all_commands(report: dict[str, Any]) -> list[str]:
    return [c for f in report.get("findings", []) for c in f.get("commands", [])]


def no_kill_advice(run: Run) -> None:
    """Neither the JSON findings nor any text line advises a kill."""
    if run.stdout.lstrip().startswith("{"):
        assert not [c for c in all_commands(run.report) if c.lstrip().startswith("kill")], run
    else:
        assert kill_lines(run.stdout) == [], run


# --- processes that a worker hash wrongly claims --------------------------------------------------


@contextmanager
def strangers() -> Iterator[dict[str, int]]:
    """``sleep 300``; a Python loop whose child ``sleep`` leads its own group; a zombie ``rq worker``."""
    procs: list[subprocess.Popen[bytes]] = []
    extra: list[psutil.Process] = []
    try:
        sleeper = subprocess.Popen(["sleep", "300"])
        looper = subprocess.Popen([sys.executable, "-c",
                                   "import subprocess, time\n"
                                   "subprocess.Popen(['sleep', '301'], start_new_session=True)\n"
                                   "while True: time.sleep(0.5)"])
        reaper_less = subprocess.Popen([sys.executable, "-c",
                                        "import subprocess, sys, time\n"
                                        "subprocess.Popen([sys.executable, '-c', 'pass', 'rq', 'worker', 'q'])\n"
                                        "time.sleep(300)"])
        procs += [sleeper, looper, reaper_less]
        deadline = time.monotonic() + 20
        zombie = child = None
        while time.monotonic() < deadline and (zombie is None or child is None):
            time.sleep(0.1)
            kids = psutil.Process(reaper_less.pid).children()
            zombie = next((k for k in kids if k.status() == psutil.STATUS_ZOMBIE), None)
            child = next(iter(psutil.Process(looper.pid).children()), None)
        assert zombie is not None and child is not None
        extra.append(child)
        yield {"sleep": sleeper.pid, "python": looper.pid, "python_child": child.pid, "zombie": zombie.pid,
               "zombie_parent": reaper_less.pid}
    finally:
        for p in extra:
            with suppress(psutil.Error):
                p.kill()
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def write_claim(r: redis.Redis, name: str, pid: int, *, current_job: str | None = None) -> None:
    """A busy worker hash naming this host and ``pid``, born now (after the process started)."""
    now = time.time()
    fields = {"name": name, "hostname": socket.gethostname(), "pid": pid, "ip_address": "127.0.0.1",
              "state": "busy", "queues": QUEUE, "birth": _rq_time(now), "last_heartbeat": _rq_time(now),
              "version": "1.15.1", "python_version": "3.11.7"}
    if current_job:
        fields["current_job"] = current_job
    r.hset(f"rq:worker:{name}", mapping=fields)
    r.expire(f"rq:worker:{name}", 600)
    r.sadd("rq:workers", f"rq:worker:{name}")
    r.sadd(f"rq:workers:{QUEUE}", f"rq:worker:{name}")
    r.sadd("rq:queues", f"rq:queue:{QUEUE}")
    if current_job:
        r.hset(f"rq:job:{current_job}", mapping={
            "status": "started", "origin": QUEUE, "timeout": 300, "worker_name": name,
            "description": "app.jobs.work()", "created_at": _rq_time(now - 60), "enqueued_at": _rq_time(now - 60),
            "started_at": _rq_time(now - 50)})
        r.zadd(f"rq:wip:{QUEUE}", {current_job: now + 600})


def test_worker_hashes_claiming_unrelated_pids_and_a_zombie(redis_url: str, redis_client: redis.Redis) -> None:
    with strangers() as pids:
        claims = {"w-sleep": pids["sleep"], "w-python": pids["python"], "w-zombie": pids["zombie"]}
        for name, pid in claims.items():
            write_claim(redis_client, name, pid, current_job=f"job-of-{name}")
        ours = {pids[k] for k in ("sleep", "python", "python_child", "zombie")}
        common = ["--redis-url", redis_url, "--all-queues", "--no-db"]  # all: no bench adopted from other tests

        hangs = run_cli("hangs", *common, "--format", "json", "--min-age", "0")
        assert hangs.code in (0, 1), hangs
        for job in hangs.report["jobs"]:
            assert job["pid"] is None and job["runner_role"] is None, job
        for f in hangs.report["findings"]:
            assert f["pid"] not in ours, f
            assert f["code"] not in ("RQD107", "RQD108", "RQD110"), f
        no_kill_advice(hangs)

        workers = run_cli("workers", "--redis-url", redis_url, "--all-queues", "--format", "json")
        dead = {f["worker"] for f in workers.report["findings"] if f["code"] == "RQD201"}
        assert dead == set(claims), workers.stdout[:4000]
        assert not [f for f in workers.report["findings"] if f["pid"] in ours], workers.report["findings"]
        rows = {r["name"]: r for r in workers.report["workers"]}
        assert {rows[n]["location"] for n in ("w-sleep", "w-python")} == {"not-found"}, rows
        assert rows["w-zombie"]["location"] == "dead", rows["w-zombie"]
        assert all(rows[n]["horse_pid"] is None for n in claims), rows
        no_kill_advice(workers)
        for text in (run_cli("hangs", *common, "--format", "text", "--min-age", "0"),
                     run_cli("workers", "--redis-url", redis_url, "--all-queues", "--format", "text")):
            no_kill_advice(text)
            assert "(horse)" not in text.stdout and "(worker) of" not in text.stdout, text

        for label in ("sleep", "python", "python_child"):
            pid = pids[label]
            run = run_cli("stack", str(pid), *common, "--format", "json", "--samples", "2")
            assert run.code == 0, run
            [row] = run.report["jobs"]
            assert row["runner_role"] == "process" and row["worker"] is None, row
            notes = " ".join(row["notes"])
            assert f"pid {pid} runs `" in notes, row
            if label == "python":
                assert "not an RQ worker or work-horse" in notes, notes
                assert "w-python's hash names pid" in notes, notes
            else:
                assert "runs no Python" in notes, notes
            no_kill_advice(run)
            text = run_cli("stack", str(pid), *common, "--format", "text", "--samples", "2")
            assert text.code == 0 and f"pid {pid} runs `" in text.stdout, text
            no_kill_advice(text)
        zombie = run_cli("stack", str(pids["zombie"]), *common, "--format", "json", "--samples", "1")
        assert zombie.code in (0, 2), zombie
        if zombie.code == 0:
            [row] = zombie.report["jobs"]
            assert "zombie" in " ".join(row["notes"]), row
        no_kill_advice(zombie)


def test_stack_of_a_missing_pid_is_exit_2(redis_url: str) -> None:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    run = run_cli("stack", str(pid), "--redis-url", redis_url, "--no-db")
    assert run.code == 2, run
    assert f"no process {pid} on this host" in run.stderr and "Traceback" not in run.stderr, run


# --- another Redis's busy workers; Redis refused or a tarpit ------------------------------------------


@pytest.fixture
def other_redis_busy(tmp_path: Path) -> Iterator[tuple[Bench, Bench, list[int]]]:
    """Bench A on one private DB (no workers); bench B on a second DB with two busy workers."""
    with ExitStack() as stack:
        url_a = stack.enter_context(private_redis_db())
        url_b = stack.enter_context(private_redis_db())
        a = Bench.create(tmp_path / "bench-a", url_a)
        b = Bench.create(tmp_path / "bench-b", url_b)
        workers = stack.enter_context(Workers())
        r = text_client(url_b)
        stack.callback(r.close)
        started = [workers.frappe(b, FLAVOUR, (q,)) for q in ("short", "default")]
        for w in started:
            wait_for_worker_registered(r, w, timeout=60)
        specs = [job_spec(FLAVOUR, b, q, SCN + "sleep_for", {"seconds": 120}) for q in ("short", "default")]
        ids = enqueue_many(FLAVOUR, specs)
        horses = []
        for job_id, w in zip(ids, started, strict=True):
            s = wait_for_job_started(r, job_id, w, timeout=60)
            assert s.horse is not None
            horses.append(s.horse.pid)
        yield a, b, horses


def test_another_redis_busy_workers_are_not_orphans(other_redis_busy: tuple[Bench, Bench, list[int]]) -> None:
    a, b, horses = other_redis_busy
    for args in (["--redis-url", a.redis_url], ["--bench", str(a.root)],
                 ["--bench", str(b.root), "--redis-url", a.redis_url]):
        for fmt in ("json", "text"):
            run = run_cli("hangs", *args, "--no-db", "--format", fmt, "--min-age", "0")
            assert "RQD110" not in run.stdout, (args, run.report["findings"] if fmt == "json" else run.stdout)
            no_kill_advice(run)
            if fmt == "json":
                assert not [f for f in run.report["findings"] if f["pid"] in horses], run


@pytest.mark.parametrize("where", ["refused", "tarpit"])
def test_unreadable_redis_gives_no_orphan_and_no_kill(where: str,
                                                      other_redis_busy: tuple[Bench, Bench, list[int]]) -> None:
    _, b, horses = other_redis_busy
    with ExitStack() as stack:
        if where == "tarpit":
            pit = stack.enter_context(scenarios.tarpit())
            url = f"redis://127.0.0.1:{pit.port}/0"
        else:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # bound, never listening: refused
            stack.callback(s.close)
        for fmt in ("json", "text"):
            run = run_cli("hangs", "--bench", str(b.root), "--redis-url", url, "--no-db", "--format", fmt,
                          "--min-age", "0", "--timeout", "4")
            assert "RQD110" not in run.stdout and "Traceback" not in run.stderr, run
            no_kill_advice(run)
            if fmt == "json" and run.stdout.strip():
                report = run.report
                assert not [f for f in report.get("findings", []) if f["code"].startswith(("RQD1", "RQD2"))], run
                assert not [f for f in report.get("findings", []) if f.get("pid") in horses], run


# --- a horse killed while rqdoctor samples it ---------------------------------------------------------


@pytest.mark.slow
def test_horse_killed_mid_sampling_is_gone(bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    worker = workers.frappe(bench, FLAVOUR, ("short",))
    wait_for_worker_registered(redis_client, worker, timeout=60)
    [job_id] = enqueue_many(FLAVOUR, [job_spec(FLAVOUR, bench, "short", SCN + "sleep_for", {"seconds": 120})])
    started = wait_for_job_started(redis_client, job_id, worker, timeout=60)
    assert started.horse is not None
    horse = started.horse.pid
    time.sleep(1.0)
    argv = [*RQDOCTOR, "hangs", "--bench", str(bench.root), "--no-db", "--format", "json", "--min-age", "0",
            "--samples", "20", "--interval", "0.25", "--timeout", "30"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RQDOCTOR_REDIS", "FRAPPE_", "RQ_", "REDIS_"))}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    deadline = time.monotonic() + 20
    sampled = False
    while time.monotonic() < deadline and not sampled:  # wait until py-spy is dumping the horse
        time.sleep(0.05)
        with suppress(psutil.Error):
            sampled = any("py-spy" in " ".join(c.cmdline()) and str(horse) in c.cmdline()
                          for c in psutil.Process(proc.pid).children(recursive=True))
    assert sampled, "rqdoctor never started sampling the horse"
    time.sleep(0.6)
    os.killpg(horse, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert out.strip(), err[-3000:]
    report = json.loads(out)
    [job] = [j for j in report["jobs"] if j["job_id"] == job_id]
    [stacks] = [s for s in report["snapshot"]["stacks"] if s["pid"] == horse]
    assert stacks["samples"], "killed before the first sample: not mid-sampling"
    assert job["pid"] == horse and job["gone"] is True, job
    assert "exited during the scan" in " ".join(job["notes"]), job
    assert job["findings"] == [] and job["activity"] is None, job
    assert not [f for f in report["findings"] if f["pid"] == horse or f["job_id"] == job_id], report["findings"]
    assert not [c for c in all_commands(report) if str(horse) in c], report["findings"]
