"""``stuck --kill`` against real rq workers (1.15.1, 2.6.1, 3.0) and a real Redis: signals, moves, zero lost.

Remedies are built here from what the harness sees (the horse, its worker, the started-registry
member as stored), so each test names exactly the process and entry it means. Every test that stops
a job ends by checking that every job it enqueued is accounted for (failed, stopped, queued or finished).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from rqdoctor.actions import flow
from rqdoctor.actions.flow import EXIT_CANNOT_DIAGNOSE, EXIT_DONE, EXIT_REFUSED, KillOptions, run_kill
from rqdoctor.collect import CollectOptions, collect
from rqdoctor.config import discover
from rqdoctor.diagnose.findings import Finding, Remedy
from rqdoctor.model import RedisState, Snapshot, TargetInfo
from tests.harness.bench import Bench
from tests.harness.venvs import ensure_venv, venv_python
from tests.harness.workers import (
    StartedJob,
    WorkerProcess,
    Workers,
    enqueue,
    wait_for_job_started,
    wait_for_job_status,
    wait_for_worker_registered,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCEN = "rqdoctor.scenarios"
HOST = socket.gethostname()
ACCOUNTED = ("failed", "stopped", "queued", "finished")


def snapshot_of(bench: Bench, url: str) -> Snapshot:
    target = discover(redis_url=url, bench=str(bench.root))
    return collect(target, CollectOptions(timeout=20, processes=False, since_process_start=False))


def running_job(bench: Bench, workers: Workers, r: redis.Redis, url: str, flavour: str, scenario: str,
                seconds: float, simple: bool = False) -> tuple[WorkerProcess, str, str, StartedJob]:
    """A new Frappe worker on ``short`` running ``scenario`` for ``seconds``: (worker, queue, job id, started)."""
    w = workers.frappe(bench, flavour, ["short"], simple=simple)
    wait_for_worker_registered(r, w)
    queue = bench.queue("short")
    job = enqueue(flavour, url, queue, f"{SCEN}.{scenario}", {"seconds": seconds})
    return w, queue, job, wait_for_job_started(r, job, w)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def member_of(r: redis.Redis, queue: str, job_id: str) -> str:
    members = [m for m in r.zrange(f"rq:wip:{queue}", 0, -1) if m == job_id or m.startswith(job_id + ":")]
    assert len(members) == 1, members
    return members[0]


def remedy_for(r: redis.Redis, action: str, started: StartedJob, queue: str, pid: int | None = None) -> Remedy:
    """A remedy naming the horse (or ``pid``) and the job exactly as the harness sees them."""
    proc = psutil.Process(pid or (started.horse.pid if started.horse else started.worker_pid))
    worker = psutil.Process(started.worker_pid)
    member = member_of(r, queue, started.job_id)
    execution = member[len(started.job_id) + 1:] or None
    parent = action == "stop_horse"
    return Remedy(action, f"test: {action}", host=HOST, pid=proc.pid, pgid=os.getpgid(proc.pid),
                  create_time=proc.create_time(), parent_pid=worker.pid if parent else None,
                  parent_create_time=worker.create_time() if parent else None, worker=started.worker_name,
                  job_id=started.job_id, execution_id=execution, queue=queue, member=member, expected="failed")


def kill(snapshot: Snapshot, remedies: list[Remedy], url: str, audit: Path, **kw: object) -> int:
    findings = [Finding("RQD101", "critical", "test", f"job {r.job_id}", remedy=r) for r in remedies]
    options = KillOptions(yes=True, grace_s=1.0, redis_url=url, audit_log=audit, **kw)  # type: ignore[arg-type]
    return run_kill(snapshot, findings, options)


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_accounted(r: redis.Redis, queue: str, job_ids: list[str]) -> None:
    """Zero lost: each job is failed (in the failed registry), stopped, queued (in its queue) or finished."""
    for job_id in job_ids:
        status = r.hget(f"rq:job:{job_id}", "status")
        assert status in ACCOUNTED, (job_id, status)
        if status == "failed":
            assert r.zscore(f"rq:failed:{queue}", job_id) is not None, job_id
        if status == "queued":
            assert job_id in r.lrange(f"rq:queue:{queue}", 0, -1), job_id
        assert not any(m == job_id or m.startswith(job_id + ":") for m in r.zrange(f"rq:wip:{queue}", 0, -1))


def rq_reads(flavour: str, url: str, job_id: str) -> dict[str, object]:
    """What the flavour's own rq library reads back: status, the latest result's text, exc_info."""
    script = (
        "import json, sys, warnings\nwarnings.simplefilter('ignore')\nfrom redis import Redis\nfrom rq.job import Job\n"
        "job = Job.fetch(sys.argv[2], connection=Redis.from_url(sys.argv[1]))\n"
        "res = job.latest_result()\n"
        "print(json.dumps({'status': str(job.get_status().value if hasattr(job.get_status(), 'value') "
        "else job.get_status()), 'result': res.exc_string if res else None, 'exc_info': job.exc_info}))\n")
    out = subprocess.run([str(venv_python(ensure_venv(flavour))), "-c", script, url, job_id],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def dead(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def term_ignored(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def next_job_runs(flavour: str, url: str, r: redis.Redis, queue: str, worker: WorkerProcess) -> str:
    """The worker survived and takes the next job."""
    job = enqueue(flavour, url, queue, f"{SCEN}.quick")
    try:
        wait_for_job_status(r, job, ["finished"], timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker.log_tail(60)}") from None
    return job


def test_sigterm_ignoring_horse_is_escalated_to_sigkill(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                        redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    """The worker loop does not answer (stopped): the stop command goes unanswered, SIGTERM is ignored, SIGKILL."""
    w, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "ignore_term", 600)
    assert started.horse is not None
    wait_until(lambda: term_ignored(started.horse.pid), "the job to ignore SIGTERM")
    remedy = remedy_for(redis_client, "stop_horse", started, queue)
    snapshot = snapshot_of(bench, redis_url)
    horse = started.horse
    os.kill(started.worker_pid, signal.SIGSTOP)
    # the stop takes effect a moment later: rqdoctor must see the worker stopped, as the test means it to be
    wait_until(lambda: psutil.Process(started.worker_pid).status() == psutil.STATUS_STOPPED, "the worker to stop")

    def resume_worker_once_horse_dies() -> None:
        try:
            wait_until(lambda: dead(horse), "the horse to die", 60)
        finally:
            os.kill(started.worker_pid, signal.SIGCONT)

    resumer = threading.Thread(target=resume_worker_once_horse_dies, daemon=True)
    resumer.start()
    audit = tmp_path / "audit.jsonl"
    try:
        code = kill(snapshot, [remedy], redis_url, audit)
    finally:
        os.kill(started.worker_pid, signal.SIGCONT)
    assert code == EXIT_DONE, w.log_tail()
    changes = [(line["change"], line["result"]) for line in audit_lines(audit)]
    group = f"process group {horse.pid}"
    assert changes[0] == ("none (RQ's stop command skipped)", "skipped")  # its worker is stopped: no late command
    assert (f"SIGTERM to {group}", "survived") in changes
    assert (f"SIGKILL to {group}", "sent") in changes
    assert redis_client.hget(f"rq:job:{job}", "status") in ("failed", "stopped")
    assert w.alive()
    follow_up = next_job_runs(rq_flavour, redis_url, redis_client, queue, w)
    assert_accounted(redis_client, queue, [job, follow_up])


def test_stop_command_ends_a_hung_horse_after_a_refused_non_terminal_run(
        bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str, rq_flavour: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "sleep_for", 600)
    remedy = remedy_for(redis_client, "stop_horse", started, queue)
    snapshot = snapshot_of(bench, redis_url)
    audit = tmp_path / "audit.jsonl"

    monkeypatch.setattr(flow, "_is_terminal", lambda: False)
    findings = [Finding("RQD101", "critical", "test", f"job {job}", remedy=remedy)]
    assert run_kill(snapshot, findings, KillOptions(redis_url=redis_url, audit_log=audit)) == EXIT_REFUSED
    assert started.horse is not None and started.horse.is_running()
    assert redis_client.hget(f"rq:job:{job}", "status") == "started" and not audit.exists()

    assert kill(snapshot, [remedy], redis_url, audit) == EXIT_DONE, w.log_tail()
    lines = audit_lines(audit)
    assert lines[0]["change"] == f"PUBLISH rq:pubsub:{started.worker_name} stop command"
    assert lines[0]["result"] == "sent"
    assert redis_client.hget(f"rq:job:{job}", "status") in ("stopped", "failed")
    assert w.alive()
    follow_up = next_job_runs(rq_flavour, redis_url, redis_client, queue, w)
    assert_accounted(redis_client, queue, [job, follow_up])
    # a second run right after: the horse is gone and the job ended, nothing to do
    assert kill(snapshot_of(bench, redis_url), [remedy], redis_url, audit) == EXIT_DONE
    last = audit_lines(audit)[-1]
    assert last["result"] == "nothing" and "already ended" in str(last["detail"])


def test_orphaned_horse_is_stopped_and_its_job_failed(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                      redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    _, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "ignore_term", 600)
    assert started.horse is not None
    horse = started.horse
    wait_until(lambda: term_ignored(horse.pid), "the job to ignore SIGTERM")
    remedy = remedy_for(redis_client, "stop_orphan", started, queue)
    os.kill(started.worker_pid, signal.SIGKILL)
    wait_until(lambda: horse.ppid() != started.worker_pid, "the horse to be re-parented")
    audit = tmp_path / "audit.jsonl"
    assert kill(snapshot_of(bench, redis_url), [remedy], redis_url, audit) == EXIT_DONE
    assert dead(horse)
    changes = [(line["change"], line["result"]) for line in audit_lines(audit)]
    assert (f"SIGKILL to process group {horse.pid}", "sent") in changes
    assert_accounted(redis_client, queue, [job])
    assert redis_client.hget(f"rq:job:{job}", "status") == "failed"
    if remedy.execution_id:
        assert not redis_client.exists(f"rq:execution:{job}:{remedy.execution_id}")
    seen = rq_reads(rq_flavour, redis_url, job)
    assert seen["status"] == "failed"
    assert "Moved to FailedJobRegistry by rqdoctor" in str(seen["result"])
    assert "Moved to FailedJobRegistry by rqdoctor" in str(seen["exc_info"])


def test_abandoned_entry_is_requeued_and_runs_again(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                    redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    _, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "sleep_for", 4)
    assert started.horse is not None
    remedy = remedy_for(redis_client, "fail_started", started, queue)
    remedy.pid = remedy.pgid = remedy.create_time = None
    horse = started.horse
    os.kill(started.worker_pid, signal.SIGKILL)
    os.killpg(horse.pid, signal.SIGKILL)
    wait_until(lambda: dead(horse), "the horse to die")
    audit = tmp_path / "audit.jsonl"
    assert kill(snapshot_of(bench, redis_url), [remedy], redis_url, audit, requeue=True) == EXIT_DONE
    assert redis_client.hget(f"rq:job:{job}", "status") == "queued"
    assert_accounted(redis_client, queue, [job])
    again = workers.frappe(bench, rq_flavour, ["short"])
    wait_for_job_status(redis_client, job, ["finished"], timeout=60)
    assert again.alive()
    assert_accounted(redis_client, queue, [job])


def test_zombie_scheduled_job_hash_is_cleared_and_the_next_enqueue_runs(
        bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str, rq_flavour: str,
        tmp_path: Path) -> None:
    queue = bench.queue("default")
    job = enqueue(rq_flavour, redis_url, queue, f"{SCEN}.quick", job_id="scheduled_job::app.tasks.hourly")
    assert redis_client.lrem(f"rq:queue:{queue}", 0, job) == 1  # hashed, never pushed: a zombie
    remedy = Remedy("clear_job_hash", "test: zombie", job_id=job, queue=queue, expected="failed")
    audit = tmp_path / "audit.jsonl"
    assert kill(snapshot_of(bench, redis_url), [remedy], redis_url, audit) == EXIT_DONE
    assert redis_client.hget(f"rq:job:{job}", "status") == "failed"
    assert_accounted(redis_client, queue, [job])
    # Frappe enqueues a scheduled job again only when its id is neither queued nor started
    again = enqueue(rq_flavour, redis_url, queue, f"{SCEN}.quick", job_id="scheduled_job::app.tasks.hourly")
    assert again == job
    w = workers.frappe(bench, rq_flavour, ["default"])
    wait_for_job_status(redis_client, job, ["finished"], timeout=60)
    assert w.alive()


def test_zombie_still_in_its_queue_is_refused(bench: Bench, redis_client: redis.Redis, redis_url: str,
                                              tmp_path: Path) -> None:
    queue = bench.queue("default")
    job = enqueue("rq115", redis_url, queue, f"{SCEN}.quick")
    remedy = Remedy("clear_job_hash", "test: not a zombie", job_id=job, queue=queue)
    assert kill(snapshot_of(bench, redis_url), [remedy], redis_url, tmp_path / "a") == EXIT_REFUSED
    assert redis_client.hget(f"rq:job:{job}", "status") == "queued"


def test_ghost_worker_is_pruned_only_without_a_connection(bench: Bench, redis_client: redis.Redis, redis_url: str,
                                                          tmp_path: Path) -> None:
    queue = bench.queue("short")
    for name in ("ghost1", "ghost2"):
        redis_client.hset(f"rq:worker:{name}", mapping={"queues": queue, "successful_job_count": "1"})
        redis_client.sadd("rq:workers", f"rq:worker:{name}")
        redis_client.sadd(f"rq:workers:{queue}", f"rq:worker:{name}")
    named = redis.Redis.from_url(redis_url)
    named.client_setname("ghost2")
    try:
        remedies = [Remedy("prune_worker", "test: ghost", worker=n, needs="--prune-ghosts")
                    for n in ("ghost1", "ghost2")]
        snapshot = snapshot_of(bench, redis_url)
        assert kill(snapshot, remedies, redis_url, tmp_path / "a") == EXIT_REFUSED  # no --prune-ghosts
        assert redis_client.exists("rq:worker:ghost1")
        assert kill(snapshot, remedies, redis_url, tmp_path / "a", prune_ghosts=True) == EXIT_REFUSED
    finally:
        named.close()
    assert not redis_client.exists("rq:worker:ghost1")
    assert "rq:worker:ghost1" not in redis_client.smembers("rq:workers") | redis_client.smembers(f"rq:workers:{queue}")
    assert redis_client.exists("rq:worker:ghost2")
    assert "a Redis client named ghost2 is connected" in str(audit_lines(tmp_path / "a")[-1])


@pytest.fixture
def bystander() -> subprocess.Popen[bytes]:
    """An unrelated process leading its own group (looks like a horse by its group)."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def bare_snapshot() -> Snapshot:
    return Snapshot(host=HOST, generated_at=time.time(), target=TargetInfo("redis://***@x", "test"),
                    redis=RedisState(server_time=time.time()))


def test_reused_pid_is_never_signalled(bystander: subprocess.Popen[bytes], redis_url: str, tmp_path: Path) -> None:
    real = psutil.Process(bystander.pid).create_time()
    remedies = [
        Remedy("stop_orphan", "test: recorded earlier", host=HOST, pid=bystander.pid, pgid=bystander.pid,
               create_time=real - 100),
        Remedy("stop_horse", "test: wrong parent", host=HOST, pid=bystander.pid, pgid=bystander.pid,
               create_time=real, parent_pid=1, worker="w", job_id="j", queue="q", member="j"),
    ]
    audit = tmp_path / "audit.jsonl"
    assert kill(bare_snapshot(), remedies, redis_url, audit) == EXIT_REFUSED
    assert bystander.poll() is None and psutil.Process(bystander.pid).status() != psutil.STATUS_ZOMBIE
    lines = {str(line["action"]): line for line in audit_lines(audit)}
    assert lines["stop_horse"]["result"] == "refused" and "no longer the child" in str(lines["stop_horse"]["detail"])
    assert lines["stop_orphan"]["result"] == "nothing"
    assert "is now another process" in str(lines["stop_orphan"]["detail"])
    assert not any(str(line["change"]).startswith("SIG") for line in audit_lines(audit))


def test_unreachable_redis_signals_nothing(bystander: subprocess.Popen[bytes], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remedy = Remedy("stop_orphan", "test", host=HOST, pid=bystander.pid, pgid=bystander.pid,
                    create_time=psutil.Process(bystander.pid).create_time())
    audit = tmp_path / "audit.jsonl"
    assert kill(bare_snapshot(), [remedy], f"redis://127.0.0.1:{port}/0", audit) == EXIT_CANNOT_DIAGNOSE
    assert bystander.poll() is None and not audit.exists()


def test_job_in_the_worker_itself_needs_kill_worker(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                                    redis_url: str, rq_flavour: str, tmp_path: Path) -> None:
    """SimpleWorker (as Frappe's NoFork): the job runs in the worker; only --kill-worker signals it."""
    w, queue, job, started = running_job(bench, workers, redis_client, redis_url, rq_flavour,
                                         "sleep_for", 600, simple=True)
    assert started.horse is None
    remedy = remedy_for(redis_client, "stop_worker", started, queue)
    remedy.needs = "--kill-worker"
    as_horse = remedy_for(redis_client, "stop_horse", started, queue)  # a worker pid named as a horse
    as_horse.parent_pid, as_horse.parent_create_time = psutil.Process(w.pid).pid, None
    snapshot = snapshot_of(bench, redis_url)
    audit = tmp_path / "audit.jsonl"
    assert kill(snapshot, [remedy, as_horse], redis_url, audit) == EXIT_REFUSED
    assert w.alive() and redis_client.hget(f"rq:job:{job}", "status") == "started"
    assert not any(str(line["change"]).startswith("SIG") for line in audit_lines(audit))
    assert kill(snapshot, [remedy], redis_url, audit, kill_worker=True) == EXIT_DONE
    wait_until(lambda: w.popen.poll() is not None, "the worker to exit")
    assert_accounted(redis_client, queue, [job])
