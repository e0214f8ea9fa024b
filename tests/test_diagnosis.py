"""Diagnosis on recorded and hand-built snapshots: pure, no services needed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    Frame,
    JobInfo,
    ProcessInfo,
    ProcessStacks,
    QueueInfo,
    RedisState,
    Snapshot,
    StackSample,
    TargetInfo,
    ThreadStack,
    WorkerInfo,
)

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
NOW = 1_800_000_000.0


@pytest.fixture
def recorded() -> Snapshot:
    return Snapshot.from_dict(json.loads(RECORDED.read_text()))


def codes(snapshot: Snapshot, **kwargs: float) -> list[tuple[str, str]]:
    return [(f.code, f.subject) for f in diagnose(snapshot, **kwargs).findings]


# --- the recorded Frappe 15.54.1 bench: a row-lock victim job and its blocker job ---------------


def test_recorded_lock_wait_victim_and_blocker(recorded: Snapshot) -> None:
    # WHEN
    diagnosis = diagnose(recorded)
    # THEN
    found = {(f.code, f.subject) for f in diagnosis.findings}
    assert ("RQD401", "job diag.localhost::lockwait") in found
    assert ("RQD402", "db session 83") in found
    blocker = diagnosis.blockers["diag.localhost::lockwait"]
    assert blocker["role"] == "rq-job"
    assert blocker["job_id"] == "diag.localhost::holdlock"
    assert blocker["pid"] == 19302
    assert blocker["kill"] == "KILL 83;"
    assert blocker["doing"].startswith("idle in transaction")
    assert diagnosis.activities[diagnosis.links.local(19307)].kind == "db_lock_wait"
    assert diagnosis.activities[diagnosis.links.local(19302)].kind == "sleep"


def test_recorded_jobs_are_matched_to_their_horses(recorded: Snapshot) -> None:
    links = diagnose(recorded).links
    runners = {j.job.job_id: (j.runner.pid if j.runner else None, j.runner_role) for j in links.jobs}
    assert runners == {"diag.localhost::lockwait": (19307, "horse"), "diag.localhost::holdlock": (19302, "horse")}


def test_recorded_snapshot_round_trips(recorded: Snapshot) -> None:
    again = Snapshot.from_dict(json.loads(json.dumps(recorded.to_dict())))
    assert again == recorded


def test_without_database_the_victim_is_a_db_query(recorded: Snapshot) -> None:
    # GIVEN the same bench seen without database access
    recorded.database = None
    # WHEN
    diagnosis = diagnose(recorded)
    # THEN the stack alone still says it waits in a MariaDB query
    assert diagnosis.activities[diagnosis.links.local(19307)].kind == "db_query"
    assert not [f for f in diagnosis.findings if f.code.startswith("RQD4")]


# --- hand-built snapshots: one rule at a time, with near misses ---------------------------------


def snapshot(workers: list[WorkerInfo] = (), queues: list[QueueInfo] = (), jobs: list[JobInfo] = (),
             processes: list[ProcessInfo] = (), stacks: list[ProcessStacks] = ()) -> Snapshot:
    return Snapshot(
        host="here", generated_at=NOW,
        target=TargetInfo("redis://127.0.0.1:6379", "default", queue_timeouts={"short": 300, "long": 1500}),
        redis=RedisState(server_time=NOW, workers=list(workers), queues=list(queues), jobs=list(jobs)),
        processes=list(processes), stacks=list(stacks),
    )


def worker(name: str = "w1", pid: int = 100, state: str = "busy", **kw: object) -> WorkerInfo:
    fields = dict(key=f"rq:worker:{name}", hostname="here", pid=pid, state=state, queues=["short"],
                  birth=NOW - 3600, last_heartbeat=NOW - 5, ttl=90, version="1.15.1")
    fields.update(kw)
    return WorkerInfo(name=name, **fields)  # type: ignore[arg-type]


def process(pid: int, ppid: int = 1, pgid: int | None = None, **kw: object) -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=ppid, pgid=pgid or pid, sid=pgid or pid, create_time=NOW - 4000,
                       cmdline=["python", "-m", "frappe.utils.bench_helper", "frappe", "worker"], status="sleeping",
                       worker_like=True, **kw)  # type: ignore[arg-type]


def stacks(pid: int, frames: list[Frame], cpu: tuple[float, float] = (1.0, 1.0)) -> ProcessStacks:
    thread = ThreadStack(thread_id=1, name="MainThread", frames=frames)
    return ProcessStacks(pid=pid, samples=[StackSample(NOW - 1, [thread], cpu[0]), StackSample(NOW - 0.5, [thread]),
                                           StackSample(NOW, [thread], cpu[1])])


def started(job_id: str = "site1::j1", running: float = 60, timeout: int | None = 300, **kw: object) -> JobInfo:
    fields = dict(queue="short", status="started", started_at=NOW - running, timeout=timeout, worker_name="w1",
                  registry_expires_at=NOW + 60, method="app.jobs.work", site="site1")
    fields.update(kw)
    return JobInfo(job_id=job_id, **fields)  # type: ignore[arg-type]


SLEEP = [Frame("sleep_for", "/home/frappe/frappe-bench/apps/app/app/jobs.py", 10)]


def busy_bench(running: float, timeout: int | None, frames: list[Frame] = SLEEP,
               cpu: tuple[float, float] = (1.0, 1.0)) -> Snapshot:
    return snapshot(workers=[worker(current_job="site1::j1")], jobs=[started(running=running, timeout=timeout)],
                    processes=[process(100), process(101, ppid=100)], stacks=[stacks(101, frames, cpu)])


def test_past_timeout_and_near_timeout() -> None:
    assert ("RQD101", "job site1::j1") in codes(busy_bench(running=400, timeout=300))
    assert ("RQD102", "job site1::j1") in codes(busy_bench(running=250, timeout=300))
    healthy = codes(busy_bench(running=100, timeout=300))
    assert not [c for c in healthy if c[0] in ("RQD101", "RQD102")]
    assert not [c for c in codes(busy_bench(running=99999, timeout=-1)) if c[0] in ("RQD101", "RQD102")]


def test_rqd101_fires_with_the_queue_default_timeout() -> None:
    assert ("RQD101", "job site1::j1") in codes(busy_bench(running=400, timeout=None))


def test_stalled_sleep_is_no_progress_but_not_before_min_age() -> None:
    """An idle C call in app code, no counters: only "sleeping" (RQD113, info; RQD109 needs proof of one call)."""
    assert ("RQD113", "job site1::j1") in codes(busy_bench(running=60, timeout=300))
    assert ("RQD113", "job site1::j1") not in codes(busy_bench(running=5, timeout=300))
    assert ("RQD113", "job site1::j1") in codes(busy_bench(running=5, timeout=300), min_age_s=1)


def test_cpu_loop_is_spinning() -> None:
    loop = [Frame("crunch", "/home/frappe/frappe-bench/apps/app/app/jobs.py", 20)]
    found = codes(busy_bench(running=60, timeout=300, frames=loop, cpu=(1.0, 1.95)))
    assert ("RQD105", "job site1::j1") in found
    assert ("RQD109", "job site1::j1") not in found


def test_dead_ghost_stale_and_set_member_workers() -> None:
    snap = snapshot(workers=[
        worker("dead", pid=4242, state="busy"),
        worker("ghost", pid=None, birth=None, ttl=-1, hostname=None, state=None, queues=[]),
        worker("stale", pid=100, state="busy", last_heartbeat=NOW - 600),
        worker("gone", pid=None, ttl=-2, key_type="none", hostname=None, queues=[]),
        worker("clean-exit", pid=4343, death=NOW - 10, state="idle"),
    ], processes=[process(100)])
    found = codes(snap)
    assert ("RQD201", "worker dead") in found
    assert ("RQD202", "worker ghost") in found
    assert ("RQD203", "worker stale") in found
    assert ("RQD204", "worker gone") in found
    assert not [c for c in found if c[1] == "worker clean-exit"]


def test_rqd201_near_miss_worker_on_another_host() -> None:
    snap = snapshot(workers=[worker("far", pid=4242, hostname="otherhost")])
    assert not [c for c in codes(snap) if c[0] == "RQD201"]


def test_queue_without_listener_backlog_and_suspension() -> None:
    queues = [QueueInfo("short", queued=3, oldest_enqueued_at=NOW - 900, oldest_queued_job="a"),
              QueueInfo("orphan", queued=2, oldest_enqueued_at=NOW - 30),
              QueueInfo("empty", queued=0)]
    snap = snapshot(workers=[worker(state="busy")], queues=queues, processes=[process(100)])
    snap.redis.suspended = True  # type: ignore[union-attr]
    found = codes(snap)
    assert ("RQD501", "queue orphan") in found
    assert ("RQD501", "queue short") not in found
    assert ("RQD504", "queue short") in found
    assert ("RQD502", "redis rq:suspended") in found
    assert not [c for c in found if c[1] == "queue empty"]


def test_rqd503_fires_scheduled_job_is_critical() -> None:
    job = started("site1::scheduled_job::app.tasks.daily", worker_name="gone", registry_expires_at=NOW - 120)
    diagnosis = diagnose(snapshot(jobs=[job]))
    [finding] = [f for f in diagnosis.findings if f.code == "RQD503"]
    assert finding.severity == "critical"
    fresh = started("site1::x", worker_name="gone", registry_expires_at=NOW + 30)
    assert not [f for f in diagnose(snapshot(jobs=[fresh])).findings if f.code == "RQD503"]


def test_busy_worker_without_current_job() -> None:
    snap = snapshot(workers=[worker(state="busy")], processes=[process(100), process(101, ppid=100)])
    assert ("RQD107", "worker w1") in codes(snap)
    rq3 = snapshot(workers=[worker(state="busy", version="3.0.0")], processes=[process(100)])
    assert ("RQD107", "worker w1") not in codes(rq3)


def test_rqd108_fires_simple_worker_runs_its_job_in_process() -> None:
    snap = snapshot(workers=[worker(current_job="site1::j1")], jobs=[started(running=60)],
                    processes=[process(100)], stacks=[stacks(100, SLEEP)])
    diagnosis = diagnose(snap)
    [job] = diagnosis.links.jobs
    assert (job.runner.pid if job.runner else None, job.runner_role) == (100, "worker")
    assert "RQD108" in [f.code for f in diagnosis.findings]


def test_findings_never_mutate_the_snapshot(recorded: Snapshot) -> None:
    before = copy.deepcopy(recorded)
    diagnose(recorded)
    assert recorded == before
