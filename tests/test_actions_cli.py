"""``rqdoctor stuck --kill`` end to end: the real CLI and detection, real rq workers (1.15.1, 2.6.1, 3.0), none lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tests.harness.bench import Bench
from tests.harness.workers import (
    Workers,
    enqueue,
    rq_job_id,
    wait_for_job_status,
)
from tests.test_actions_live import (
    SCEN,
    assert_accounted,
    dead,
    next_job_runs,
    rq_reads,
    running_job,
    term_ignored,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.cli, pytest.mark.slow]


def kill_cli(bench: Bench, audit: Path, *extra: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    """``rqdoctor stuck --kill --format json`` with stdin not a terminal; returns code, report, stderr."""
    argv = [sys.executable, "-m", "rqdoctor", "stuck", "--bench", str(bench.root), "--timeout", "30", "--kill",
            "--format", "json", "--audit-log", str(audit), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RQDOCTOR_REDIS", "FRAPPE_", "RQ_", "REDIS_"))}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def audit_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cli_escalates_a_sigterm_ignoring_horse_and_the_worker_takes_the_next_job(
        bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str, rq_flavour: str,
        tmp_path: Path) -> None:
    w, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "ignore_term", 600)
    assert started.horse is not None
    horse = started.horse
    wait_until(lambda: term_ignored(horse.pid), "the job to ignore SIGTERM")
    time.sleep(2)  # older than --older-than 1s
    audit = tmp_path / "audit.jsonl"

    code, report, err = kill_cli(bench, audit, "--older-than", "1s")  # no --yes, not a terminal
    assert code == 3 and "not on a terminal and --yes not given: nothing done" in err
    assert not dead(horse) and redis_client.hget(f"rq:job:{job}", "status") == "started" and not audit.exists()

    os.kill(started.worker_pid, signal.SIGSTOP)  # its worker loop does not answer RQ's stop command
    wait_until(lambda: psutil.Process(started.worker_pid).status() == psutil.STATUS_STOPPED, "the worker to stop")

    def resume() -> None:
        try:
            wait_until(lambda: dead(horse), "the horse to die", 90)
        finally:
            os.kill(started.worker_pid, signal.SIGCONT)

    threading.Thread(target=resume, daemon=True).start()
    try:
        code, report, err = kill_cli(bench, audit, "--older-than", "1s", "--yes")
    finally:
        os.kill(started.worker_pid, signal.SIGCONT)
    assert code == 0, (err, report)
    [action] = [a for a in report["actions"] if a["action"] == "stop_horse"]
    assert action["result"] == "done", report
    signals = [(line["change"], line["result"]) for line in audit_of(audit)]
    assert (f"SIGTERM to process group {horse.pid}", "survived") in signals
    assert (f"SIGKILL to process group {horse.pid}", "sent") in signals
    assert w.alive()
    follow_up = next_job_runs(rq_flavour, redis_url, redis_client, queue, w)
    assert_accounted(redis_client, queue, [job, follow_up])
    code, report, err = kill_cli(bench, audit, "--older-than", "1s", "--yes")
    assert code == 0 and report["plan"] == [], report


def test_cli_stops_an_orphaned_horse_and_fails_its_job(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                       redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    _, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "sleep_for", 600)
    assert started.horse is not None
    horse = started.horse
    os.kill(started.worker_pid, signal.SIGKILL)
    wait_until(lambda: horse.ppid() != started.worker_pid, "the horse to be re-parented")
    audit = tmp_path / "audit.jsonl"
    code, report, err = kill_cli(bench, audit, "--dry-run")
    why = [(f["code"], f["subject"], f["evidence"]) for f in report.get("findings", [])]
    assert code == 1 and [p["action"] for p in report["plan"]] == ["stop_orphan"], (err, why, horse.pid)
    assert not dead(horse) and not audit.exists()
    code, report, err = kill_cli(bench, audit, "--yes")
    assert code == 0, (err, report)
    assert [(a["action"], a["result"]) for a in report["actions"]] == [("stop_orphan", "done")], report
    assert dead(horse)
    assert_accounted(redis_client, queue, [job])
    assert redis_client.hget(f"rq:job:{job}", "status") == "failed"
    assert "Moved to FailedJobRegistry by rqdoctor" in str(rq_reads(rq_flavour, redis_url, job)["result"])
    code, report, err = kill_cli(bench, audit, "--yes")
    assert code == 0 and not [p for p in report["plan"] if not p["refused"]], report


def test_cli_requeues_an_abandoned_entry(bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str,
                                        rq_flavour: str, tmp_path: Path) -> None:
    _, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "sleep_for", 3)
    assert started.horse is not None
    horse = started.horse
    os.kill(started.worker_pid, signal.SIGKILL)
    os.killpg(horse.pid, signal.SIGKILL)
    worker = psutil.Process(started.worker_pid)
    wait_until(lambda: dead(horse) and dead(worker), "the worker and its horse to die")
    audit = tmp_path / "audit.jsonl"
    code, report, err = kill_cli(bench, audit, "--yes", "--requeue")
    assert code == 0, (err, report)
    assert [(a["action"], a["result"]) for a in report["actions"]] == [("fail_started", "done")], report
    assert redis_client.hget(f"rq:job:{job}", "status") == "queued"
    assert_accounted(redis_client, queue, [job])
    workers.frappe(bench, rq_flavour, ["short"])
    wait_for_job_status(redis_client, job, ["finished"], timeout=60)


def test_cli_clears_a_zombie_scheduled_job_hash(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                               redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    queue = bench.queue("default")
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 3600))
    bare = "scheduled_job::app.tasks.daily"  # the id Frappe's scheduler asks for; each flavour names it its way
    job = rq_job_id(rq_flavour, "site1.local", bare)
    redis_client.hset(f"rq:job:{job}", mapping={
        "status": "queued", "origin": queue, "created_at": old, "enqueued_at": old,
        "description": "frappe.utils.background_jobs.execute_job(method='frappe.core.doctype."
                       "scheduled_job_type.scheduled_job_type.run_scheduled_job', site='site1.local')"})
    audit = tmp_path / "audit.jsonl"
    code, report, err = kill_cli(bench, audit, "--yes")
    assert code == 0, (err, report)
    assert ("clear_job_hash", "done") in [(a["action"], a["result"]) for a in report["actions"]], report
    assert redis_client.hget(f"rq:job:{job}", "status") == "failed"
    assert_accounted(redis_client, queue, [job])
    # the schedule runs again: Frappe enqueues its id only when neither queued nor started
    again = enqueue(rq_flavour, redis_url, queue, f"{SCEN}.quick", job_id=bare)
    assert again == job
    w = workers.frappe(bench, rq_flavour, ["default"])
    wait_for_job_status(redis_client, job, ["finished"], timeout=60)
    assert w.alive()
    code, report, err = kill_cli(bench, audit, "--yes")
    assert code == 0 and report["plan"] == [], report
