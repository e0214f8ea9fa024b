"""End to end: ``rqdoctor hangs`` against real rq 1.15.1 / 2.6.1 / 3.0 workers on a Frappe-like bench.

One bench per flavour runs every scenario at once (one worker per queue: short, default, long
and the custom ``workers`` queues of common_site_config.json). The console script runs as a
subprocess with ``--format json --no-db --min-age``; every job is checked against facts found
independently with psutil (the horse: the worker's child leading its own process group).

What the timeout scenario showed (same with rq 1.15.1, 2.6.1 and 3.0): rq's SIGALRM
(``JobTimeoutException``) stops a job in ``time.sleep`` at its ``job_timeout`` (the job ends
``failed``, so ``hangs`` no longer lists it), and it also stops the Python-level waits of the other
scenarios (checked by hand: ``http_no_timeout``, ``wait_child`` and ``thread_deadlock`` with
``job_timeout=1`` all end ``failed`` within 4 s: the socket read, ``waitpid`` and ``Thread.join``
are interrupted and the handler's exception propagates). It does not stop a job blocked inside
one C call that retries its wait itself: ``os.system`` (libc's ``system()`` loops on
``waitpid``) keeps running past its timeout, and only the worker's monitor loop kills it, at
timeout + 60 s, checked every 30 s. So RQD101 is asserted on the ``os.system`` job only (which
also gets RQD104: it waits on its ``sh`` child).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.venvs import RQ_FLAVOURS, ensure_venv, selected_flavours, venv_python
from tests.harness.workers import (
    EXECUTE_JOB,
    StartedJob,
    WorkerProcess,
    Workers,
    find_horse,
    rq_job_id,
    text_client,
    wait_for_job_started,
    wait_for_job_status,
    wait_for_worker_registered,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RQDOCTOR = [sys.executable, "-m", "rqdoctor"]
FLAVOURS = [f for f in ("rq115", "rq26", "rq30") if f in selected_flavours()]
MIN_AGE = 2.0
"""``--min-age`` of every run: each job has run longer than this before ``hangs`` looks."""
SCN = "rqdoctor.scenarios."
POLL_KEY = "rqdoctor-test:lock:stock-ledger"
CUSTOM_QUEUES = ("deadlock", "poll", "timeout", "simple", "pool", "orphan", "busy", "idle", "remote")
"""Custom queues of the bench's ``workers`` config; ``remote`` has no local worker."""
TIMEOUT_S = 1
"""``job_timeout`` of the job stuck in ``os.system`` (and of the control job SIGALRM does stop)."""
JOB_CODES = {"RQD101", "RQD102", "RQD103", "RQD104", "RQD105", "RQD106", "RQD107", "RQD108", "RQD109"}


# --- running the CLI ---------------------------------------------------------------------


@dataclass
class Run:
    """One finished ``rqdoctor`` run."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def report(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({exc}): {self}") from None

    def __str__(self) -> str:
        return (f"`{' '.join(self.argv[2:])}` -> exit {self.code} in {self.seconds:.1f}s\n"
                f"stderr: {self.stderr[-3000:]}\nstdout: {self.stdout[:3000]}")


def run_cli(*args: str, timeout: float = 60.0) -> Run:
    """Run the real console entry point (``python -m rqdoctor``) with ``args``."""
    argv = [*RQDOCTOR, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RQDOCTOR_REDIS", "FRAPPE_", "RQ_", "REDIS_"))}
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def stop_quickly(workers: Workers) -> None:
    """Stop every started worker tree with a short grace (hung horses ignore a warm shutdown anyway)."""
    for w in reversed(workers.started):
        w.stop(grace=0.2)


def bench_args(bench: Bench, fmt: str = "json", min_age: float = MIN_AGE) -> list[str]:
    """``--bench <root> --format <fmt> --no-db --min-age <min_age>``."""
    return ["--bench", str(bench.root), "--format", fmt, "--no-db", "--min-age", str(min_age)]


def jobs_by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {j["job_id"]: j for j in report["jobs"]}


def findings_of(report: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["job_id"] == job_id]


def brief(job: dict[str, Any]) -> str:
    """A job row without its threads, for assertion messages."""
    return json.dumps({k: v for k, v in job.items() if k != "threads"}, indent=1, default=str)[:4000]


# --- enqueueing and fake remote state ----------------------------------------------------

_ENQUEUE_MANY = r"""
import json, sys
from redis import Redis
from rq import Queue
specs = json.loads(sys.argv[1])
conn = Redis.from_url(specs[0]["redis_url"])
for spec in specs:
    q = Queue(spec["queue"], connection=conn)
    q.enqueue_call(spec["func"], kwargs=spec["kwargs"], timeout=spec["timeout"], job_id=spec["job_id"],
                   result_ttl=600, failure_ttl=600)
"""


def job_spec(flavour: str, bench: Bench, qtype: str, method: str, kwargs: dict[str, Any] | None = None,
             job_timeout: int = 300, site: str = "site1.local") -> dict[str, Any]:
    """A Frappe ``execute_job`` call for :func:`enqueue_many`."""
    return {"redis_url": bench.redis_url, "queue": bench.queue(qtype), "func": EXECUTE_JOB,
            "timeout": job_timeout, "job_id": rq_job_id(flavour, site),
            "kwargs": {"site": site, "user": "Administrator", "method": method, "event": None,
                       "job_name": method, "is_async": True, "kwargs": kwargs or {}}}


def enqueue_many(flavour: str, specs: list[dict[str, Any]]) -> list[str]:
    """Enqueue several jobs with one interpreter start in the flavour's venv; returns their ids."""
    proc = subprocess.run([str(venv_python(ensure_venv(flavour))), "-c", _ENQUEUE_MANY, json.dumps(specs)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"enqueue failed in {flavour}:\n{proc.stderr[-3000:]}"
    return [s["job_id"] for s in specs]


def _rq_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_remote_job(r: redis.Redis, bench: Bench, flavour: str) -> tuple[str, str]:
    """A busy worker on host ``otherhost`` and its started job, written straight into Redis."""
    queue, name = bench.queue("remote"), "otherhost-worker-1"
    job_id = rq_job_id(flavour, "site2.local")
    now = time.time()
    r.hset(f"rq:worker:{name}", mapping={
        "name": name, "hostname": "otherhost", "pid": 4242, "ip_address": "10.0.0.9", "state": "busy",
        "queues": queue, "current_job": job_id, "birth": _rq_time(now - 600), "last_heartbeat": _rq_time(now),
        "version": "1.15.1", "python_version": "3.11.7", "successful_job_count": 3, "failed_job_count": 0,
        "total_working_time": 12.5})
    r.expire(f"rq:worker:{name}", 600)
    r.sadd("rq:workers", f"rq:worker:{name}")
    r.sadd("rq:queues", f"rq:queue:{queue}")
    method = SCN + "sleep_for"
    r.hset(f"rq:job:{job_id}", mapping={
        "status": "started", "origin": queue, "timeout": 300, "worker_name": name,
        "description": f"{EXECUTE_JOB}(event=None, is_async=True, job_name='{method}', "
                       f"kwargs={{'seconds': 300}}, method='{method}', site='site2.local', user='Administrator')",
        "created_at": _rq_time(now - 40), "enqueued_at": _rq_time(now - 40), "started_at": _rq_time(now - 30)})
    r.zadd(f"rq:wip:{queue}", {job_id: now + 600})
    return job_id, name


# --- the lab: one bench per flavour with every scenario running --------------------------


@dataclass
class Lab:
    """A bench, its workers and started jobs, and the first ``hangs`` report on them."""

    flavour: str
    bench: Bench
    r: redis.Redis
    tarpit: scenarios.Tarpit
    workers: Workers
    by_queue: dict[str, WorkerProcess] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)
    """Scenario label -> job id."""
    methods: dict[str, str] = field(default_factory=dict)
    """Scenario label -> the dotted method Frappe runs."""
    started: dict[str, StartedJob] = field(default_factory=dict)
    remote: tuple[str, str] = ("", "")
    run: Run | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        assert self.run is not None
        return self.run.report

    def job(self, label: str) -> dict[str, Any]:
        rows = jobs_by_id(self.report)
        job_id = self.jobs[label]
        assert job_id in rows, f"{label} job {job_id} missing from hangs: {sorted(rows)}\n{self.run}"
        return rows[job_id]

    def horse(self, label: str) -> psutil.Process:
        """The horse of the job's worker, found now with psutil (child leading its own group)."""
        started = self.started[label]
        horse = find_horse(started.worker_pid)
        assert horse is not None, f"no horse under worker pid {started.worker_pid} for {label}"
        return horse


SCENARIO_QUEUES = {
    "http": "short", "child": "default", "cpu": "long", "deadlock": "deadlock", "poll": "poll",
    "timeout": "timeout", "simple": "simple", "pool": "pool", "orphan": "orphan", "progress": "busy",
}


def start_lab(flavour: str, root: Path, redis_url: str, stack: ExitStack) -> Lab:
    t0 = time.monotonic()
    bench = Bench.create(root, redis_url, workers={q: {"timeout": 300, "background_workers": 1}
                                                   for q in CUSTOM_QUEUES})
    r = text_client(redis_url)
    stack.callback(r.close)
    pit = stack.enter_context(scenarios.tarpit())
    workers = stack.enter_context(Workers())
    stack.callback(stop_quickly, workers)
    lab = Lab(flavour, bench, r, pit, workers)
    for qtype in ("short", "default", "long", "deadlock", "poll", "timeout", "orphan", "busy", "idle"):
        lab.by_queue[qtype] = workers.frappe(bench, flavour, (qtype,))
    lab.by_queue["simple"] = workers.frappe(bench, flavour, ("simple",), simple=True)
    lab.by_queue["pool"] = workers.frappe(bench, flavour, ("pool",), pool_size=2)
    for qtype, w in lab.by_queue.items():
        wait_for_worker_registered(r, w, count=2 if qtype == "pool" else 1, timeout=60)
    lab.timings["workers"] = time.monotonic() - t0
    r.set(POLL_KEY, "held by a job that died")
    specs = {
        "http": job_spec(flavour, bench, "short", SCN + "http_no_timeout", {"url": pit.url}),
        "child": job_spec(flavour, bench, "default", SCN + "wait_child", {"seconds": 300}),
        "cpu": job_spec(flavour, bench, "long", SCN + "cpu_loop", {"seconds": 120}),
        "deadlock": job_spec(flavour, bench, "deadlock", SCN + "thread_deadlock"),
        "poll": job_spec(flavour, bench, "poll", SCN + "redis_lock_poll",
                         {"redis_url": redis_url, "key": POLL_KEY, "seconds": 300}),
        "sigalrm": job_spec(flavour, bench, "timeout", SCN + "sleep_for", {"seconds": 60}, job_timeout=TIMEOUT_S),
        "timeout": job_spec(flavour, bench, "timeout", "os.system", {"command": "sleep 120"},
                            job_timeout=TIMEOUT_S),
        "simple": job_spec(flavour, bench, "simple", SCN + "sleep_for", {"seconds": 300}),
        "pool": job_spec(flavour, bench, "pool", SCN + "sleep_for", {"seconds": 300}),
        "orphan": job_spec(flavour, bench, "orphan", SCN + "wait_child", {"seconds": 300}),
        "progress": job_spec(flavour, bench, "busy", SCN + "progress", {"seconds": 300}),
    }
    enqueue_many(flavour, list(specs.values()))
    lab.jobs = {label: spec["job_id"] for label, spec in specs.items()}
    lab.methods = {label: spec["kwargs"]["method"] for label, spec in specs.items()}
    lab.remote = write_remote_job(r, bench, flavour)
    for label, job_id in lab.jobs.items():
        if label == "sigalrm":
            continue
        queue = SCENARIO_QUEUES[label]
        lab.started[label] = wait_for_job_started(r, job_id, lab.by_queue[queue], timeout=60)
    lab.timings["jobs started"] = time.monotonic() - t0
    # every job has run for MIN_AGE, and the os.system job for more than its timeout
    oldest_needed = max(MIN_AGE, TIMEOUT_S) + 0.5
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ages = [time.time() - _started_at(s) for s in lab.started.values()]
        if min(ages) > oldest_needed:
            break
        time.sleep(0.2)
    lab.run = run_cli("hangs", *bench_args(bench))
    lab.timings["hangs run"] = lab.run.seconds
    lab.timings["setup total"] = time.monotonic() - t0
    return lab


def _started_at(s: StartedJob) -> float:
    raw = s.job["started_at"].rstrip("Z")
    return datetime.fromisoformat(raw).replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module", params=FLAVOURS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    flavour = request.param
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis_db())
        lab = start_lab(flavour, tmp_path_factory.mktemp(f"hangs-{flavour}") / "frappe-bench", redis_url, stack)
        yield lab
        print(f"\n[{flavour}] timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in lab.timings.items()))


# --- 1. every scenario, every flavour ----------------------------------------------------


def test_run_exits_1_with_every_job(lab: Lab) -> None:
    assert lab.run.code == 1, lab.run
    report = lab.report
    assert report["command"] == "hangs" and report["schema_version"]
    ids = set(jobs_by_id(report))
    expected = {job_id for label, job_id in lab.jobs.items() if label != "sigalrm"} | {lab.remote[0]}
    assert expected <= ids, f"missing {expected - ids}\n{lab.run}"


def test_every_local_job_maps_to_its_horse(lab: Lab) -> None:
    for label in ("http", "child", "cpu", "deadlock", "poll", "timeout", "pool", "progress"):
        job = lab.job(label)
        horse = lab.horse(label)
        assert os.getpgid(horse.pid) == horse.pid
        assert job["pid"] == horse.pid, f"{label}: pid {job['pid']} != horse {horse.pid}\n{brief(job)}"
        assert job["runner_role"] == "horse", brief(job)
        assert job["location"] == "local" and job["status"] == "started", brief(job)
        assert job["worker"] == lab.started[label].worker_name, brief(job)
        assert job["method"] == lab.methods[label], brief(job)


def test_http_tarpit(lab: Lab) -> None:
    job = lab.job("http")
    assert job["activity"]["kind"] == "http", brief(job)
    assert job["activity"]["peer"] == f"127.0.0.1:{lab.tarpit.port}", brief(job)
    assert job["activity"]["progress"] == "blocked", brief(job)
    assert "RQD103" in job["findings"], brief(job)
    (f,) = [f for f in findings_of(lab.report, job["job_id"]) if f["code"] == "RQD103"]
    assert f["pid"] == job["pid"] and f["data"]["peer"] == f"127.0.0.1:{lab.tarpit.port}", f


def test_child_process(lab: Lab) -> None:
    job = lab.job("child")
    (child,) = lab.horse("child").children()
    assert child.cmdline() == ["sleep", "300"]
    assert job["activity"]["kind"] == "subprocess", brief(job)
    assert job["activity"]["child_pid"] == child.pid, brief(job)
    assert [c["pid"] for c in job["children"]] == [child.pid], brief(job)
    assert "RQD104" in job["findings"], brief(job)
    (f,) = [f for f in findings_of(lab.report, job["job_id"]) if f["code"] == "RQD104"]
    assert f["data"]["child_pid"] == child.pid and f["data"]["child_cmdline"] == "sleep 300", f


def test_cpu_loop(lab: Lab) -> None:
    job = lab.job("cpu")
    assert job["activity"]["kind"] == "cpu", brief(job)
    assert job["activity"]["progress"] == "spinning", brief(job)
    assert job["activity"]["where"]["name"] == "cpu_loop", brief(job)
    assert "RQD105" in job["findings"], brief(job)


def test_thread_deadlock(lab: Lab) -> None:
    job = lab.job("deadlock")
    assert job["activity"]["kind"] == "lock", brief(job)
    assert job["activity"]["progress"] == "blocked", brief(job)
    assert "RQD106" in job["findings"], brief(job)
    names = {t["name"] for t in job["threads"]}
    assert {"deadlock-a", "deadlock-b"} <= names, names


def test_redis_lock_poll(lab: Lab) -> None:
    job = lab.job("poll")
    a = job["activity"]
    assert (a["kind"] == "sleep" and a["polling"]) or a["kind"] == "redis", brief(job)
    assert "RQD106" in job["findings"], brief(job)
    assert a["where"]["name"] == "redis_lock_poll", brief(job)


def test_sigalrm_stops_a_sleeping_job_past_its_timeout(lab: Lab) -> None:
    """Control: a job in ``time.sleep`` is stopped by rq's SIGALRM at its timeout (all flavours)."""
    wait_for_job_status(lab.r, lab.jobs["sigalrm"], ["failed"], timeout=5)
    log = lab.bench.logs_path / "worker.log"
    assert f"JobTimeoutException: Task exceeded maximum timeout value ({TIMEOUT_S} seconds)" in log.read_text()
    assert lab.jobs["sigalrm"] not in jobs_by_id(lab.report)


def test_job_past_its_timeout(lab: Lab) -> None:
    job = lab.job("timeout")
    assert job["timeout_s"] == TIMEOUT_S, brief(job)
    assert job["running_for_s"] > TIMEOUT_S, brief(job)
    assert "RQD101" in job["findings"], brief(job)
    (f,) = [f for f in findings_of(lab.report, job["job_id"]) if f["code"] == "RQD101"]
    assert any("SIGALRM" in line for line in f["evidence"]), f
    (child,) = lab.horse("timeout").children()  # os.system's `sh -c 'sleep 120'`
    assert job["activity"]["kind"] == "subprocess" and job["activity"]["child_pid"] == child.pid, brief(job)
    assert "RQD104" in job["findings"], brief(job)
    # no other job is past its timeout
    late = [j["job_id"] for j in lab.report["jobs"] if "RQD101" in j["findings"]]
    assert late == [job["job_id"]], late


# --- 2. no false alarms ------------------------------------------------------------------

def test_progress_scenario_is_not_a_finding(lab: Lab) -> None:
    job = lab.job("progress")
    assert job["activity"]["progress"] not in ("blocked", "spinning"), brief(job)
    assert not set(job["findings"]) & JOB_CODES, brief(job)
    assert not findings_of(lab.report, job["job_id"]), findings_of(lab.report, job["job_id"])


def test_idle_worker_is_not_a_finding(lab: Lab) -> None:
    (name,) = wait_for_worker_registered(lab.r, lab.by_queue["idle"])
    assert not [f for f in lab.report["findings"] if f["worker"] == name or name in f["subject"]]


E2E_JOBS = '''"""Jobs written into the bench by tests/test_hangs_cli.py."""
import hashlib
import json
import random
import time


def _hash():
    data = b"rqdoctor"
    for _ in range(3000):
        data = hashlib.sha256(data).digest()


def _sort():
    sorted((i * 7919) % 10007 for i in range(30000))


def _json():
    json.loads(json.dumps([{"n": i, "s": str(i)} for i in range(3000)]))


def _arith():
    x = 0
    for i in range(60000):
        x = (x * 31 + i) % 1000003


def _text():
    " ".join(str(i) for i in range(20000)).split()


def _pause():
    time.sleep(0.01)


STEPS = (_hash, _sort, _json, _arith, _text, _pause)


def busy_progress(seconds):
    """Short steps of real work in six functions, in random order: the stack keeps changing."""
    rng = random.Random(7)
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        rng.choice(STEPS)()
        n += 1
    return n
'''


@pytest.mark.parametrize("rq_flavour", FLAVOURS)
def test_only_healthy_work_exits_0(rq_flavour: str, tmp_path: Path) -> None:
    """A job that keeps doing work and an idle worker: no finding at all, exit code 0."""
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis_db())
        bench = Bench.create(tmp_path / "frappe-bench", redis_url)
        (bench.apps_path / "rqdoctor_scenarios" / "rqdoctor_e2e_jobs.py").write_text(E2E_JOBS)
        r = text_client(redis_url)
        stack.callback(r.close)
        workers = stack.enter_context(Workers())
        stack.callback(stop_quickly, workers)
        busy = workers.frappe(bench, rq_flavour, ("long",))
        idle = workers.frappe(bench, rq_flavour, ("short", "default"))
        (idle_name,) = wait_for_worker_registered(r, idle)
        wait_for_worker_registered(r, busy)
        (job_id,) = enqueue_many(rq_flavour, [job_spec(rq_flavour, bench, "long", "rqdoctor_e2e_jobs.busy_progress",
                                                       {"seconds": 120})])
        started = wait_for_job_started(r, job_id, busy)
        time.sleep(max(0.0, 1.5 - (time.time() - _started_at(started))))
        run = run_cli("hangs", *bench_args(bench, min_age=1.0), "--samples", "5", "--interval", "0.2")
        assert run.code == 0, run
        (job,) = run.report["jobs"]
        assert job["job_id"] == job_id and job["pid"] == started.horse.pid, brief(job)
        assert job["activity"]["progress"] == "progressing", brief(job)
        assert job["findings"] == [] and run.report["findings"] == [], run
        workers_run = run_cli("workers", "--bench", str(bench.root), "--format", "json")
        assert workers_run.code == 0, workers_run
        rows = {w["name"]: w for w in workers_run.report["workers"]}
        assert rows[idle_name]["state"] == "idle" and rows[idle_name]["pid"] == idle.pid, rows[idle_name]
        assert rows[idle_name]["findings"] == [] and workers_run.report["findings"] == [], workers_run


# --- 3. process matching -----------------------------------------------------------------


def test_simple_worker_runs_its_job(lab: Lab) -> None:
    job = lab.job("simple")
    worker = lab.by_queue["simple"]
    assert find_horse(worker.pid) is None
    assert job["pid"] == worker.pid == lab.started["simple"].worker_pid, brief(job)
    assert job["runner_role"] == "worker", brief(job)
    assert job["activity"]["kind"] == "sleep" and job["activity"]["progress"] == "blocked", brief(job)
    assert {"RQD108", "RQD109"} <= set(job["findings"]), brief(job)


def test_worker_pool_job_is_matched_to_its_horse(lab: Lab) -> None:
    job = lab.job("pool")
    pool = lab.by_queue["pool"]
    started = lab.started["pool"]
    assert psutil.Process(started.worker_pid).ppid() == pool.pid
    assert job["pid"] == lab.horse("pool").pid, brief(job)
    assert job["pid"] != pool.pid and job["pid"] != started.worker_pid
    assert job["activity"]["kind"] == "sleep" and "RQD109" in job["findings"], brief(job)
    run = run_cli("workers", "--bench", str(lab.bench.root), "--format", "json")
    rows = {w["name"]: w for w in run.report["workers"]}
    pooled = [w for w in rows.values() if w["pool_parent_pid"] == pool.pid]
    assert len(pooled) == 2, (run, pool.pid)
    assert rows[started.worker_name]["horse_pid"] == job["pid"], rows[started.worker_name]


def test_process_titles_or_frappe_argv(lab: Lab) -> None:
    """rq115/rq26 have no setproctitle: Frappe's argv; rq30 has it: ``rq:worker:`` titles. Both match."""
    horse = lab.horse("http")
    worker_cmd = " ".join(psutil.Process(lab.started["http"].worker_pid).cmdline())
    horse_cmd = " ".join(horse.cmdline())
    if RQ_FLAVOURS[lab.flavour].setproctitle:
        assert worker_cmd.startswith("rq:worker:") and horse_cmd.startswith("rq:worker:"), (worker_cmd, horse_cmd)
    else:
        assert "frappe.utils.bench_helper frappe worker" in worker_cmd, worker_cmd
        assert horse_cmd == worker_cmd
    assert lab.job("http")["pid"] == horse.pid


def test_remote_job_has_no_pid(lab: Lab) -> None:
    job_id, name = lab.remote
    job = jobs_by_id(lab.report)[job_id]
    assert job["location"] == "remote" and job["host"] == "otherhost", brief(job)
    assert job["pid"] is None and job["worker"] == name, brief(job)
    assert job["site"] == "site2.local", brief(job)


# --- 5. text and Markdown of the same run ------------------------------------------------


def test_text_and_markdown_of_the_same_run(lab: Lab, tmp_path: Path) -> None:
    saved = tmp_path / "hangs.json"
    saved.write_text(lab.run.stdout)
    text = run_cli("hangs", "--from", str(saved), "--format", "text", "--min-age", str(MIN_AGE))
    md = run_cli("hangs", "--from", str(saved), "--format", "markdown", "--min-age", str(MIN_AGE))
    for label, code in (("http", "RQD103"), ("child", "RQD104"), ("timeout", "RQD101")):
        job = lab.job(label)
        for run in (text, md):
            assert run.code == 1, run
            for needle in (job["job_id"], job["activity"]["kind"], code):
                assert needle in run.stdout, f"{needle!r} not in {run}"
    assert md.stdout.count("<details>") == len(lab.report["jobs"]), md.stdout[:3000]
    for job in lab.report["jobs"]:
        assert f"<details><summary>{job['job_id']} " in md.stdout, job["job_id"]


# --- 3. orphaned horse (kills a worker: runs last) --------------------------------------


def test_orphaned_horse(lab: Lab) -> None:
    worker = lab.by_queue["orphan"]
    horse = lab.horse("orphan")
    os.kill(worker.pid, signal.SIGKILL)
    worker.popen.wait(5)
    deadline = time.monotonic() + 5
    while horse.ppid() == worker.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert horse.is_running() and horse.ppid() != worker.pid
    run = run_cli("hangs", *bench_args(lab.bench))
    assert run.code == 1, run
    job = jobs_by_id(run.report).get(lab.jobs["orphan"])
    orphan_findings = [f for f in run.report["findings"] if f["code"] == "RQD110"]
    assert job is not None, run
    assert job["pid"] == horse.pid, brief(job)
    (child,) = horse.children()
    assert job["activity"]["kind"] == "subprocess" and job["activity"]["child_pid"] == child.pid, brief(job)
    assert job["runner_role"] == "orphaned-horse" and job["location"] == "local", brief(job)
    assert [(f["pid"], f["job_id"]) for f in orphan_findings] == [(horse.pid, lab.jobs["orphan"])], orphan_findings
    dead = [f["code"] for f in run.report["findings"] if f["worker"] == lab.started["orphan"].worker_name]
    assert "RQD201" in dead, run.report["findings"]

