"""RQD301-RQD306 (stuck work) and the leftovers of a killed job: pure, on hand-built snapshots."""

from __future__ import annotations

import pytest

from rqdoctor.commands.stuck import parse_duration
from rqdoctor.diagnose.findings import Finding
from rqdoctor.diagnose.frappe_docs import document_of, lock_name, scheduled_method
from rqdoctor.diagnose.leftovers import leftovers
from rqdoctor.diagnose.rules_stuck import STUCK_CODES
from rqdoctor.diagnose.run import diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import (
    DocLockFile,
    FileLock,
    FrappeState,
    JobHash,
    JobInfo,
    JobLogRow,
    JobScan,
    ProcessInfo,
    QueueInfo,
    RedisState,
    Snapshot,
    TargetInfo,
    WorkerInfo,
)

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0
SITE = "site1.local"
SCHED = f"{SITE}::scheduled_job::erpnext.tasks.daily"
DOC_CALL = ("frappe.utils.background_jobs.execute_job(event=None, is_async=True, job_name='execute_action', "
            "kwargs={'__doctype': 'Sales Invoice', '__name': 'SINV-0001', '__action': 'submit'}, "
            f"method='frappe.model.document.execute_action', site='{SITE}', user='Administrator')")
DOC_LOCK = lock_name("Sales Invoice", "SINV-0001")


def snap(workers: list[WorkerInfo] = (), jobs: list[JobInfo] = (), processes: list[ProcessInfo] = (),
         queues: list[QueueInfo] = (), scan: list[JobHash] | None = None,
         frappe: FrappeState | None = None) -> Snapshot:
    redis = RedisState(server_time=NOW, workers=list(workers), jobs=list(jobs), queues=list(queues))
    if scan is not None:
        redis.job_scan = JobScan(complete=True, keys_seen=len(scan), limit=1000, jobs=list(scan))
    return Snapshot(host="here", generated_at=NOW,
                    target=TargetInfo("redis://127.0.0.1:6379", "default", bench_path="/b",
                                      queue_timeouts={"short": 300, "default": 300, "long": 1500}),
                    redis=redis, processes=list(processes), frappe=frappe)


def worker(name: str = "w1", pid: int = 100, **kw: object) -> WorkerInfo:
    fields = dict(key=f"rq:worker:{name}", hostname="here", pid=pid, state="busy", queues=["short"],
                  birth=NOW - 3600, last_heartbeat=NOW - 5, ttl=90, version="1.15.1")
    fields.update(kw)
    return WorkerInfo(name=name, **fields)  # type: ignore[arg-type]


def proc(pid: int, ppid: int = 1, **kw: object) -> ProcessInfo:
    fields = dict(pgid=pid, sid=pid, create_time=NOW - 3700, status="sleeping", worker_like=True,
                  cmdline=["python", "-m", "frappe.utils.bench_helper", "frappe", "worker"])
    fields.update(kw)
    return ProcessInfo(pid=pid, ppid=ppid, **fields)  # type: ignore[arg-type]


def job(job_id: str = "site1.local::j1", running: float = 100, **kw: object) -> JobInfo:
    fields = dict(queue="short", status="started", started_at=NOW - running, timeout=300, worker_name="w1",
                  registry_expires_at=NOW + 60, site=SITE)
    fields.update(kw)
    return JobInfo(job_id=job_id, **fields)  # type: ignore[arg-type]


def busy(running: float = 100, horse: dict | None = None, **job_kw: object) -> Snapshot:
    return snap([worker(current_job="site1.local::j1")], [job(running=running, **job_kw)],
                [proc(100), proc(101, ppid=100, **(horse or {}))])


def found(s: Snapshot, code: str, **kw: object) -> list[Finding]:
    return [f for f in diagnose(s, **kw).findings if f.code == code]  # type: ignore[arg-type]


def zombie(job_id: str = SCHED, status: str = "queued", age: float = 3600, **kw: object) -> JobHash:
    fields = dict(origin="short", enqueued_at=NOW - age, created_at=NOW - age, checked=True, held_by=[])
    fields.update(kw)
    return JobHash(job_id=job_id, status=status, **fields)  # type: ignore[arg-type]


def doc_lock(age: float = 4000, name: str = DOC_LOCK, **kw: object) -> DocLockFile:
    return DocLockFile(SITE, f"/b/sites/{SITE}/locks/{name}.lock", name, NOW - age, **kw)  # type: ignore[arg-type]


def start_row(age: float = 4000, method: str = "erpnext.tasks.daily") -> JobLogRow:
    return JobLogRow(SITE, "abc123", method, method, "2026-12-01 10:00:00", age)


# --- RQD301: --older-than -------------------------------------------------------------------------


def test_rqd301_fires_job_older_than_asked_with_a_stop_remedy() -> None:
    [f] = found(busy(running=200), "RQD301", older_than_s=120)
    assert f.subject == "job site1.local::j1" and f.data["older_than_s"] == 120
    assert f.remedy is not None and (f.remedy.action, f.remedy.pid, f.remedy.parent_pid) == ("stop_horse", 101, 100)


def test_rqd301_near_miss_younger_or_not_asked_or_past_timeout() -> None:
    assert found(busy(running=100), "RQD301", older_than_s=120) == []
    assert found(busy(running=200), "RQD301") == []
    assert found(busy(running=400), "RQD301", older_than_s=120) == []  # RQD101's, with the same remedy
    assert found(busy(running=400), "RQD101", older_than_s=120)


# --- RQD302: stopped horse ------------------------------------------------------------------------


def test_rqd302_fires_horse_stopped_twice() -> None:
    [f] = found(busy(horse={"status": "stopped", "status_again": "stopped"}), "RQD302")
    assert f.subject == "process 101" and f.commands == ["kill -CONT 101"] and f.job_id == "site1.local::j1"
    assert f.remedy is not None and f.remedy.action == "stop_horse"


def test_rqd302_near_miss_briefly_stopped_by_py_spy_blocking() -> None:
    # stopped at the scan, running again half a second later (py-spy --blocking, a debugger's single step)
    assert found(busy(horse={"status": "stopped", "status_again": "sleeping"}), "RQD302") == []
    # a saved snapshot without the second read: no verdict
    assert found(busy(horse={"status": "stopped"}), "RQD302") == []


def test_rqd302_near_miss_stopped_process_of_no_job() -> None:
    s = snap([], [], [proc(500, worker_like=False, cmdline=["vim"], status="stopped", status_again="stopped")])
    assert found(s, "RQD302") == []


# --- RQD303: zombie horse -------------------------------------------------------------------------


def test_rqd303_fires_zombie_horse_not_reaped() -> None:
    s = busy(horse={"status": "zombie", "status_again": "zombie"})
    s.redis.workers[0].last_heartbeat = NOW - 400  # type: ignore[union-attr]
    [f] = found(s, "RQD303")
    assert f.subject == "worker w1" and f.remedy is not None
    assert (f.remedy.action, f.remedy.pid, f.remedy.needs) == ("stop_worker", 100, "--kill-worker")
    assert any("last heartbeat 400 s ago" in line for line in f.evidence)


def test_rqd303_near_miss_reaped_a_moment_later() -> None:
    assert found(busy(horse={"status": "zombie", "status_again": "vanished"}), "RQD303") == []
    orphan_zombie = snap([], [], [proc(300, status="zombie", status_again="zombie")])  # parent pid 1 reaps it
    assert found(orphan_zombie, "RQD303") == []


# --- RQD304: zombie job hash ----------------------------------------------------------------------


def test_rqd304_fires_scheduled_job_hash_in_no_queue() -> None:
    [f] = found(snap(scan=[zombie()]), "RQD304")
    assert f.severity == "critical" and f.subject == f"job {SCHED}"
    assert any("blocks the scheduled job erpnext.tasks.daily on site site1.local" in e for e in f.evidence)
    assert f.remedy is not None and (f.remedy.action, f.remedy.job_id, f.remedy.queue) == (
        "clear_job_hash", SCHED, "short")
    assert f.commands == [f"redis-cli -h 127.0.0.1 -p 6379 HSET rq:job:{SCHED} status failed"]


def test_rqd304_fires_plain_started_hash_is_a_warning() -> None:
    [f] = found(snap(scan=[zombie("site1.local::x", status="started", started_at=NOW - 900)]), "RQD304")
    assert f.severity == "warning"


def test_rqd304_near_miss_job_legitimately_queued() -> None:
    # healthy look-alike: the same hash, found in its queue list
    assert found(snap(scan=[zombie(held_by=["queue"])]), "RQD304") == []
    assert found(snap(scan=[zombie(held_by=["scheduled"])]), "RQD304") == []


def test_rqd304_near_miss_young_unchecked_or_running() -> None:
    assert found(snap(scan=[zombie(age=30)]), "RQD304") == []  # a dequeue in flight
    assert found(snap(scan=[zombie(checked=False)]), "RQD304") == []  # status changed or unreadable: no verdict
    titled = proc(300, cmdline=[f"rq:worker:w9: Processing {SCHED} from short since 1"])
    assert found(snap(processes=[titled], scan=[zombie()]), "RQD304") == []


# --- RQD305: stale document lock ------------------------------------------------------------------


def test_rqd305_fires_old_document_lock_no_job_works_on() -> None:
    [f] = found(snap(frappe=FrappeState(locks=[doc_lock()])), "RQD305")
    assert f.subject == f"lock {SITE}/{DOC_LOCK}" and f.commands == [f"rm -- /b/sites/{SITE}/locks/{DOC_LOCK}.lock"]
    assert f.remedy is None  # deleting a file is not an action of --kill


def test_rqd305_near_miss_a_running_job_works_on_that_document() -> None:
    # healthy look-alike: the job that locked the document still runs (past the longest timeout)
    s = snap([worker(current_job="site1.local::j1")], [job(running=5000, description=DOC_CALL, timeout=-1)],
             [proc(100), proc(101, ppid=100)], frappe=FrappeState(locks=[doc_lock()]))
    assert found(s, "RQD305") == []


def test_rqd305_near_miss_young_held_filelock_or_queued_owner() -> None:
    assert found(snap(frappe=FrappeState(locks=[doc_lock(age=600)])), "RQD305") == []
    assert found(snap(frappe=FrappeState(locks=[doc_lock(name="bench_migrate")])), "RQD305") == []
    held = doc_lock(held_by=[FileLock(pid=5, kind="FLOCK")])
    assert found(snap(frappe=FrappeState(locks=[held])), "RQD305") == []
    waiting = QueueInfo("short", queued=3, oldest_enqueued_at=NOW - 5000)
    assert found(snap(queues=[waiting], frappe=FrappeState(locks=[doc_lock()])), "RQD305") == []


def test_rqd305_near_miss_unreadable_job_that_started_before_the_lock() -> None:
    s = snap([worker(current_job="site1.local::j1")], [job(running=5000, description="app.x()", timeout=-1)],
             [proc(100), proc(101, ppid=100)], frappe=FrappeState(locks=[doc_lock()]))
    assert found(s, "RQD305") == []


# --- RQD306: Scheduled Job Log row left in Start ---------------------------------------------------


def test_rqd306_fires_old_start_row_with_no_run() -> None:
    [f] = found(snap(frappe=FrappeState(job_log_sites=[SITE], job_log_rows=[start_row()])), "RQD306")
    assert f.subject == f"scheduled job log {SITE}/abc123"
    assert f.commands[0] == "cd /b && bench --site site1.local mariadb"
    assert "SET status = 'Failed' WHERE name = 'abc123'" in f.commands[1]


def test_rqd306_near_miss_its_job_is_running() -> None:
    # healthy look-alike: the scheduled job of that type runs now (long past the longest timeout)
    s = snap([worker(current_job=SCHED)], [job(SCHED, running=5000, timeout=-1)], [proc(100), proc(101, ppid=100)],
             frappe=FrappeState(job_log_rows=[start_row()]))
    assert found(s, "RQD306") == []


def test_rqd306_near_miss_young_row() -> None:
    assert found(snap(frappe=FrappeState(job_log_rows=[start_row(age=600)])), "RQD306") == []


# --- leftovers of a killed job ---------------------------------------------------------------------


def test_leftovers_name_lock_row_and_stale_scheduled_id_of_the_killed_job() -> None:
    killed = job(SCHED, description=DOC_CALL.replace("execute_action", "run_scheduled_job"), method=None)
    killed.method = "erpnext.tasks.daily"
    fresh = snap(scan=[zombie(status="started", started_at=NOW - 10, age=10)],
                 frappe=FrappeState(locks=[doc_lock(age=5)], job_log_rows=[start_row(age=8)]))
    codes = sorted(f.code for f in leftovers(fresh, [SCHED], [killed]))
    assert codes == ["RQD304", "RQD305", "RQD306"]


def test_leftovers_ignore_other_jobs_and_older_rows() -> None:
    killed = job("site1.local::other", started_at=NOW - 10, method="erpnext.tasks.daily")
    fresh = snap(scan=[zombie()], frappe=FrappeState(locks=[doc_lock(age=5)], job_log_rows=[start_row(age=4000)]))
    assert leftovers(fresh, ["site1.local::other"], [killed]) == []


# --- helpers ----------------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert [parse_duration(v) for v in ("90s", "30m", "2h", "1d", "45", "1.5h")] == [90, 1800, 7200, 86400, 45, 5400]
    for bad in ("", "5x", "-3m", "0", "m"):
        with pytest.raises(RqdoctorError):
            parse_duration(bad)


def test_document_of_and_scheduled_method() -> None:
    assert document_of(DOC_CALL) == ("Sales Invoice", "SINV-0001")
    assert document_of("app.x(doctype='ToDo', name='T1')") == ("ToDo", "T1")
    assert document_of("app.x()") is None
    assert scheduled_method(SCHED) == (SITE, "erpnext.tasks.daily")
    assert scheduled_method(f"{SITE}||scheduled_job||erpnext.tasks.daily") == (SITE, "erpnext.tasks.daily")
    assert scheduled_method("site::j1") is None


def test_stuck_codes_are_registered() -> None:
    from rqdoctor.diagnose.findings import RULES

    assert set(RULES) >= STUCK_CODES


def test_rqd302_fires_stopped_orphan_gets_stop_orphan() -> None:
    orphan = proc(300, cmdline=["rq:worker:gone: Processing site1.local::j1 from short since 1"], status="stopped",
                  status_again="stopped")
    s = snap([], [job(worker_name="gone")], [orphan])
    [f] = found(s, "RQD302")
    assert f.remedy is not None and (f.remedy.action, f.remedy.pid) == ("stop_orphan", 300)


def test_stuck_snapshot_round_trips_through_json() -> None:
    import json

    s = snap([worker()], [job()], [proc(100, status="stopped", status_again="stopped")],
             [QueueInfo("short", clean_lock_ttl=300)], scan=[zombie(held_by=["queue"], direct=True)],
             frappe=FrappeState(lock_dirs=["/b/sites/site1.local/locks"],
                                locks=[doc_lock(held_by=[FileLock(pid=5, kind="FLOCK")])],
                                job_log_sites=[SITE], job_log_rows=[start_row()],
                                scheduled_methods={SITE: ["erpnext.tasks.daily"]}))
    assert Snapshot.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_old_lock_that_could_not_be_matched_is_said() -> None:
    from rqdoctor.diagnose.rules_stuck import unjudged_locks

    s = snap([worker(current_job="site1.local::j1")], [job(running=5000, description="app.x()", timeout=-1)],
             [proc(100), proc(101, ppid=100)], frappe=FrappeState(locks=[doc_lock()]))
    [line] = unjudged_locks(diagnose(s).context)
    assert "not judged: could not match job site1.local::j1 (its document is not in its call string)" in line
