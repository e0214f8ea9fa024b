"""Processes that vanish mid-probe, and a pid reused between the process probe and the report.

A real Frappe worker runs a real job in its horse. While ``hangs`` runs (in-process, so the moment
can be chosen), both are SIGKILLed: after the Redis read (the hash names pids that are gone or a
zombie), in the middle of the process probe (listed, then gone while read), or while py-spy samples
the horse. Then the horse is killed after the process probe and a ``sleep`` started on its very pid
(``/proc/sys/kernel/ns_last_pid``, as root) before the stacks are sampled. In every case the run ends
cleanly, the job gets no verdict, no kill advice names any of those pids, and the ``sleep`` is never
called a horse.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from unittest import mock

import psutil
import pytest
import redis

from rqdoctor import collect
from rqdoctor.probes import processes
from tests.harness.bench import Bench
from tests.harness.workers import StartedJob, Workers, wait_for_job_started, wait_for_worker_registered
from tests.test_fuzz_harness import Outcome, run
from tests.test_fuzz_redis import mentions
from tests.test_hangs_cli import SCN, enqueue_many, job_spec
from tests.test_identity_cli import FLAVOUR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_CODES = {f"RQD{n}" for n in range(101, 111)}


def start_job(bench: Bench, workers: Workers, client: redis.Redis) -> StartedJob:
    worker = workers.frappe(bench, FLAVOUR, ("short",))
    wait_for_worker_registered(client, worker, timeout=60)
    [job_id] = enqueue_many(FLAVOUR, [job_spec(FLAVOUR, bench, "short", SCN + "sleep_for", {"seconds": 120})])
    started = wait_for_job_started(client, job_id, worker, timeout=60)
    assert started.horse is not None
    return started


def kill_both(started: StartedJob) -> None:
    assert started.horse is not None
    with suppress(ProcessLookupError):
        os.killpg(started.horse.pid, signal.SIGKILL)
    with suppress(ProcessLookupError):
        os.kill(started.worker_pid, signal.SIGKILL)


def hangs(bench: Bench, fmt: str) -> Outcome:
    return run("hangs", "--bench", str(bench.root), "--no-db", "--format", fmt, "--min-age", "0",
               "--samples", "8", "--interval", "0.25", "--timeout", "20")


def assert_no_verdict(outcome: Outcome, report: dict[str, Any] | None, started: StartedJob, pids: set[int]) -> None:
    """No kill line or command names those pids, no finding is about the horse, the job gets no job verdict."""
    assert started.horse is not None
    for line in (outcome.stdout + outcome.stderr).splitlines():
        if re.search(r"\bkill(pg)?\b", line) and "no --kill remedy" not in line:  # a refusal names the pid
            assert not [p for p in pids if mentions(line, p)], (line, str(outcome))
    if report is None:
        return
    for finding in report["findings"]:
        assert finding["pid"] != started.horse.pid, finding
        assert finding["job_id"] != started.job_id or finding["code"] not in JOB_CODES, finding
        assert not [c for c in finding["commands"] for p in pids if mentions(c, p)], finding
    for job in report["jobs"]:
        if job["job_id"] == started.job_id:
            assert not set(job["findings"]) & JOB_CODES, job
            assert job["pid"] is None or job["gone"] is True, job


def killer_during_sampling(started: StartedJob, killed_at: list[float]) -> threading.Thread:
    """A thread that kills worker and horse once py-spy (a child of this process) reads the horse."""
    assert started.horse is not None
    horse = started.horse.pid

    def watch() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with suppress(psutil.Error):
                if any("py-spy" in " ".join(c.cmdline()) and str(horse) in c.cmdline()
                       for c in psutil.Process().children(recursive=True)):
                    time.sleep(0.1)
                    kill_both(started)
                    killed_at.append(time.monotonic())
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def before(target: Callable[..., Any], hook: Callable[[], None]) -> Callable[..., Any]:
    """``target`` with ``hook`` run first: the kill happens at that moment of the real run."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hook()
        return target(*args, **kwargs)
    return wrapper


def after(target: Callable[..., Any], hook: Callable[[], None]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = target(*args, **kwargs)
        hook()
        return result
    return wrapper


@pytest.mark.parametrize(("moment", "fmt"), [("after_redis", "json"), ("mid_processes", "json"),
                                             ("mid_sampling", "json"), ("mid_sampling", "text")])
def test_worker_and_horse_killed_while_hangs_runs(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                  moment: str, fmt: str) -> None:
    started = start_job(bench, workers, redis_client)
    assert started.horse is not None
    pids = {started.worker_pid, started.horse.pid}
    kill = lambda: kill_both(started)  # noqa: E731
    if moment == "after_redis":  # the hash names a worker that is gone (a zombie until reaped) and a missing horse
        with mock.patch.object(collect, "_processes", before(collect._processes, kill)):
            outcome = hangs(bench, fmt)
    elif moment == "mid_processes":  # listed by the scan, gone when each is read
        with mock.patch.object(processes, "_scan", after(processes._scan, kill)):
            outcome = hangs(bench, fmt)
    else:
        killed_at: list[float] = []
        thread = killer_during_sampling(started, killed_at)
        outcome = hangs(bench, fmt)
        ended = time.monotonic()
        thread.join(timeout=30)
        assert killed_at and killed_at[0] < ended, "not killed while py-spy read the horse"
    assert not psutil.pid_exists(started.horse.pid) or psutil.Process(started.horse.pid).status() == "zombie"
    report = outcome.check()
    assert_no_verdict(outcome, report, started, pids)


@pytest.fixture
def reuse_ok() -> None:
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to choose the next pid (ns_last_pid)")


def start_on_pid(pid: int, tries: int = 40) -> subprocess.Popen[bytes] | None:
    """``sleep 300`` started on ``pid`` (other processes forking at the same moment may take it: retried)."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["sleep", "300"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_pid_reused_between_the_process_probe_and_the_stacks(bench: Bench, workers: Workers,
                                                             redis_client: redis.Redis, reuse_ok: None,
                                                             fmt: str) -> None:
    started = start_job(bench, workers, redis_client)
    assert started.horse is not None
    horse = started.horse.pid
    reused: list[subprocess.Popen[bytes]] = []

    def reuse() -> None:
        os.killpg(horse, signal.SIGKILL)
        end = time.monotonic() + 10
        while psutil.pid_exists(horse) and time.monotonic() < end:  # the live worker reaps its horse
            time.sleep(0.02)
        proc = start_on_pid(horse)
        if proc is not None:
            reused.append(proc)

    try:
        with mock.patch.object(collect, "_stacks", before(collect._stacks, reuse)):
            outcome = hangs(bench, fmt)
        if not reused:
            pytest.skip(f"could not start a process on pid {horse} (the host forks too fast)")
        assert psutil.Process(horse).cmdline() == ["sleep", "300"]
        report = outcome.check()
        assert_no_verdict(outcome, report, started, {horse})
        assert f"pid {horse} exited during the scan" in outcome.stdout or '"gone": true' in outcome.stdout, outcome
    finally:
        for proc in reused:
            proc.kill()
            proc.wait()
