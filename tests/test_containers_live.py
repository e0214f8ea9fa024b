"""A real rq worker in its own PID and UTS namespaces (``unshare``), as in a container, diagnosed from the host.

Its hash names the namespace's hostname and its pid there (1); ``rqdoctor hangs`` on the host must still show
its hung job as local, with the host pid, the namespace pid, the container name and a py-spy stack, and
``stuck --kill --dry-run`` must plan to stop the host pid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from rqdoctor.actions.identity import verify_target
from rqdoctor.diagnose.findings import Remedy
from rqdoctor.probes.namespaces import ns_inode
from tests.harness.bench import Bench
from tests.harness.venvs import selected_flavours
from tests.harness.workers import (
    Workers,
    enqueue,
    in_namespace,
    ns_pid,
    unshare_refusal,
    wait_for_job_started,
    wait_for_job_status,
    wait_for_worker_registered,
    worker_hashes,
)

pytestmark = [pytest.mark.integration, pytest.mark.cli, pytest.mark.slow]

FLAVOURS = [f for f in ("rq115", "rq26", "rq30") if f in selected_flavours()]
SCN = "rqdoctor.scenarios"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RQDOCTOR_REDIS", "FRAPPE_", "RQ_", "REDIS_"))}
    env["COLUMNS"] = "200"
    proc = subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd="/", stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def rqdoctor(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = run(*args)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


@pytest.fixture
def namespaces_allowed() -> None:
    refusal = unshare_refusal()
    if refusal is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but a worker cannot get its own namespaces: {refusal}")
    pytest.skip(f"SKIPPED LOUDLY: no PID/UTS namespaces for the container test: {refusal}")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_worker_in_its_own_namespaces_is_local_with_host_pid_and_container(
        namespaces_allowed: None, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str,
        flavour: str) -> None:
    # GIVEN a Frappe worker as PID 1 of its own PID+UTS namespace, named like a container, running a hung job
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    w = workers.frappe(bench, flavour, ["short"], namespace=name)
    wait_for_worker_registered(redis_client, w)
    [(worker_name, hash_)] = [(n, h) for n, h in worker_hashes(redis_client).items() if h.get("hostname") == name]
    assert hash_["pid"] == "1", hash_
    job = enqueue(flavour, redis_url, bench.queue("short"), f"{SCN}.sleep_for", {"seconds": 600})
    started = wait_for_job_started(redis_client, job, w)
    assert started.horse is not None
    worker_host_pid, horse = started.worker_pid, started.horse
    assert worker_host_pid != 1 and ns_pid(worker_host_pid) == 1
    time.sleep(2.5)

    # WHEN rqdoctor hangs runs on the host
    code, report, err = rqdoctor("hangs", "--bench", str(bench.root), "--format", "json", "--no-db",
                                 "--min-age", "1")
    assert code in (0, 1), err
    [row] = [j for j in report["jobs"] if j["job_id"] == job]

    # THEN the job is local, run by the horse's host pid, in the container, with a stack read by py-spy
    assert row["location"] == "local" and row["runner_role"] == "horse", row
    assert row["pid"] == horse.pid
    assert row["container"]["name"] == name and row["container"]["ns_pid"] == ns_pid(horse.pid), row
    assert any(f["name"] == "sleep_for" for t in row["threads"] for f in t["frames"]), row["threads"]
    code, wreport, err = rqdoctor("workers", "--bench", str(bench.root), "--format", "json")
    [wrow] = [r for r in wreport["workers"] if r["name"] == worker_name]
    assert wrow["pid"] == 1 and wrow["host_pid"] == worker_host_pid and wrow["location"] == "local", wrow
    assert wrow["container"]["name"] == name and wrow["horse_pid"] == horse.pid, wrow

    # AND the text report names the host pid and the container
    text_report = run("hangs", "--bench", str(bench.root), "--no-db", "--min-age", "1").stdout
    assert f"pid {horse.pid} (horse) in container {name} pid {ns_pid(horse.pid)}" in text_report, text_report

    # AND stuck --kill --dry-run plans to stop the horse by its host pid, naming the container
    code, plan, err = rqdoctor("stuck", "--bench", str(bench.root), "--timeout", "30", "--kill", "--dry-run",
                               "--older-than", "1s", "--format", "json")
    steps = [s for s in plan.get("plan", []) if s.get("action") == "stop_horse"]
    assert steps, (code, err, plan.get("plan"))
    text = json.dumps(steps)
    assert str(horse.pid) in text and name in text, steps
    assert horse.is_running()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stuck_kill_stops_a_container_horse_by_host_pid_and_the_job_fails(
        namespaces_allowed: None, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str,
        flavour: str, tmp_path: Path) -> None:
    # GIVEN a hung job in the horse of a worker in its own PID+UTS namespace
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    w = workers.frappe(bench, flavour, ["short"], namespace=name)
    wait_for_worker_registered(redis_client, w)
    job = enqueue(flavour, redis_url, bench.queue("short"), f"{SCN}.sleep_for", {"seconds": 600})
    started = wait_for_job_started(redis_client, job, w)
    assert started.horse is not None
    time.sleep(2.5)
    # WHEN stuck --kill --yes runs on the host
    audit = tmp_path / "audit.jsonl"
    code, report, err = rqdoctor("stuck", "--bench", str(bench.root), "--timeout", "30", "--kill", "--yes",
                                 "--older-than", "1s", "--format", "json", "--audit-log", str(audit))
    # THEN the horse (host pid) is stopped, the job ends failed or stopped, and the worker lives on
    [action] = [a for a in report.get("actions", []) if a["action"] == "stop_horse"]
    assert action["result"] == "done", (code, err, report.get("actions"))
    assert not started.horse.is_running() or started.horse.status() == psutil.STATUS_ZOMBIE
    assert wait_for_job_status(redis_client, job, ("failed", "stopped"))["status"] in ("failed", "stopped")
    assert w.alive()


def test_reverification_names_a_container_process_by_its_namespace_pid() -> None:
    # GIVEN a real process leading its own group, seen as a process "in a container" (its own namespace fields)
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        me = psutil.Process(child.pid)
        remedy = Remedy("stop_orphan", "r", host="h", pid=child.pid, pgid=child.pid, create_time=me.create_time(),
                        ns_pid=ns_pid(child.pid), pid_ns=ns_inode(child.pid, "pid"), container_name="ctr")
        # THEN it may be signalled while no registered worker of "ctr" has its namespace pid or its parent's
        assert verify_target(remedy, "h", set(), kill_worker=False).ok
        # near miss: a worker hash of the container names its namespace pid, or its parent's: refused
        refused = verify_target(remedy, "h", {ns_pid(child.pid) or -1}, kill_worker=False)
        assert not refused.ok and "registered worker" in refused.reason
        parent = verify_target(remedy, "h", {ns_pid(os.getpid()) or -1}, kill_worker=False)
        assert not parent.ok and "child of registered worker" in parent.reason
        # and another PID namespace inode than the one seen is refused
        moved = verify_target(dataclasses.replace(remedy, pid_ns=1), "h", set(), kill_worker=False)
        assert not moved.ok and "PID namespace of container ctr" in moved.reason
    finally:
        child.kill()
        child.wait(10)


def test_a_container_hash_naming_a_non_worker_is_not_found_not_dead(
        namespaces_allowed: None, bench: Bench, redis_client: redis.Redis) -> None:
    # GIVEN PID 1 of a namespace named like a container is `sleep`, and a worker hash names (that name, pid 1)
    name = f"ctr-{uuid.uuid4().hex[:8]}"
    holder = subprocess.Popen(in_namespace(["sleep", "120"], name), start_new_session=True)
    key = f"rq:worker:{name}-fake"
    try:
        deadline = time.monotonic() + 20
        while not any(ns_pid(c.pid) == 1 for c in psutil.Process(holder.pid).children()):
            assert time.monotonic() < deadline, "the namespace's pid 1 never appeared"
            time.sleep(0.05)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 5))  # after `sleep` started
        redis_client.hset(key, mapping={"hostname": name, "pid": "1", "state": "idle", "queues": bench.queue("short"),
                                        "birth": now, "last_heartbeat": now})
        redis_client.sadd("rq:workers", key)
        # WHEN the workers report is read on the host
        code, report, err = rqdoctor("workers", "--bench", str(bench.root), "--format", "json")
        rows = [r for r in report.get("workers", []) if r["name"] == f"{name}-fake"]
        assert len(rows) == 1, (code, err, report.get("workers"))
        [row] = rows
        # THEN the hash is this host's container's, its pid held by a process that is not a worker
        assert row["location"] == "not-found", row
        assert any(p.startswith("not a worker:") for p in row["problems"]), row
    finally:
        redis_client.srem("rq:workers", key)
        redis_client.delete(key)
        holder.kill()
        holder.wait(10)
