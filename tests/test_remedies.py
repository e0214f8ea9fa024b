"""Remedies as data on the actionable findings (pure, hand-built snapshots)."""

from __future__ import annotations

import pytest

from rqdoctor.diagnose.findings import REMEDY_ACTIONS, Finding
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import JobInfo, ProcessInfo, RedisState, Snapshot, TargetInfo, WorkerInfo

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


def snap(workers: list[WorkerInfo] = (), jobs: list[JobInfo] = (), processes: list[ProcessInfo] = ()) -> Snapshot:
    return Snapshot(host="here", generated_at=NOW, target=TargetInfo("redis://127.0.0.1:6379", "default"),
                    redis=RedisState(server_time=NOW, workers=list(workers), jobs=list(jobs)),
                    processes=list(processes))


def worker(name: str = "w1", pid: int | None = 100, **kw: object) -> WorkerInfo:
    fields = dict(key=f"rq:worker:{name}", hostname="here", pid=pid, state="busy", queues=["short"],
                  birth=NOW - 3600, last_heartbeat=NOW - 5, ttl=90, version="1.15.1")
    fields.update(kw)
    return WorkerInfo(name=name, **fields)  # type: ignore[arg-type]


def proc(pid: int, ppid: int = 1, **kw: object) -> ProcessInfo:
    fields = dict(pgid=pid, sid=pid, create_time=NOW - 3700 + pid / 1000, status="sleeping", worker_like=True,
                  cmdline=["python", "-m", "frappe.utils.bench_helper", "frappe", "worker"])
    fields.update(kw)
    return ProcessInfo(pid=pid, ppid=ppid, **fields)  # type: ignore[arg-type]


def job(job_id: str = "site1::j1", running: float = 400, **kw: object) -> JobInfo:
    fields = dict(queue="short", status="started", started_at=NOW - running, timeout=300, worker_name="w1",
                  registry_expires_at=NOW + 60, execution_id=None)
    fields.update(kw)
    return JobInfo(job_id=job_id, **fields)  # type: ignore[arg-type]


def one(snapshot: Snapshot, code: str) -> Finding:
    found = [f for f in diagnose(snapshot).findings if f.code == code]
    assert len(found) == 1, [(f.code, f.subject) for f in diagnose(snapshot).findings]
    return found[0]


def test_rqd101_horse_past_timeout_gets_stop_horse_with_full_identity() -> None:
    s = snap([worker(current_job="site1::j1")], [job(execution_id="e" * 32)], [proc(100), proc(101, ppid=100)])
    r = one(s, "RQD101").remedy
    assert r is not None and r.action == "stop_horse" and r.action in REMEDY_ACTIONS
    assert (r.host, r.pid, r.pgid, r.create_time) == ("here", 101, 101, s.processes[1].create_time)
    assert (r.parent_pid, r.parent_create_time, r.worker) == (100, s.processes[0].create_time, "w1")
    assert (r.job_id, r.execution_id, r.queue, r.member, r.expected) == (
        "site1::j1", "e" * 32, "short", f"site1::j1:{'e' * 32}", "failed")
    assert r.needs is None
    assert "rqdoctor stuck --kill" in one(s, "RQD101").fix


def test_rqd101_simple_worker_needs_kill_worker() -> None:
    s = snap([worker(current_job="site1::j1")], [job()], [proc(100)])
    r = one(s, "RQD101").remedy
    assert r is not None and (r.action, r.pid, r.needs) == ("stop_worker", 100, "--kill-worker")
    assert any("never comes" in line for line in one(s, "RQD101").evidence)


def test_rqd101_remote_job_has_no_remedy() -> None:
    s = snap([worker(current_job="site1::j1", hostname="far")], [job()])
    assert one(s, "RQD101").remedy is None


def test_rqd101_says_when_the_hard_kill_comes() -> None:
    s = snap([worker(current_job="site1::j1")], [job(running=330)], [proc(100), proc(101, ppid=100)])
    assert "RQ's worker parent kills it in 30 s (at timeout + 60 s)" in one(s, "RQD101").evidence


def test_rqd101_hung_monitor_loop_means_no_hard_kill() -> None:
    s = snap([worker(current_job="site1::j1", last_heartbeat=NOW - 500)], [job(running=500)],
             [proc(100), proc(101, ppid=100, status="stopped")])
    evidence = one(s, "RQD101").evidence
    assert any("its monitor loop is hung, so the hard kill will not come" in line for line in evidence)
    assert any("stopped (state T)" in line for line in evidence)


def test_rqd110_orphan_gets_stop_orphan() -> None:
    orphan = proc(300, ppid=1, cmdline=["rq:worker:gone: Processing site1::j1 from short since 1"])
    s = snap([], [job(worker_name="gone", registry_expires_at=NOW - 30)], [orphan])
    f = one(s, "RQD110")
    r = f.remedy
    assert r is not None and (r.action, r.pid, r.parent_pid, r.job_id, r.member) == (
        "stop_orphan", 300, None, "site1::j1", "site1::j1")
    assert any("moves the job to failed while it may still run" in line for line in f.evidence)
    assert any("no live worker listens on short" in line for line in f.evidence)


def test_rqd201_dead_worker_started_job_gets_fail_started() -> None:
    s = snap([worker(pid=4242, current_job="site1::j1")], [job()], [proc(100)])
    r = one(s, "RQD201").remedy
    assert r is not None and (r.action, r.job_id, r.member, r.host) == ("fail_started", "site1::j1", "site1::j1",
                                                                        "here")


def test_rqd201_near_miss_unmatched_orphan_blocks_fail_started() -> None:
    # a titled orphan of another known worker that no job matches might be running w1's job: no remedy
    other = proc(300, ppid=1, cmdline=["rq:worker:w2: Processing other since 1"])
    s = snap([worker(pid=4242, current_job="site1::j1"), worker("w2", pid=4343)], [job()], [proc(100), other])
    [f] = [x for x in diagnose(s).findings if x.code == "RQD201" and x.subject == "worker w1"]
    assert f.remedy is None
    assert any("might be running it" in line for line in f.evidence)


def test_rqd503_remote_worker_gives_no_remedy() -> None:
    s = snap([worker(hostname="far")], [job(registry_expires_at=NOW - 100)])
    f = one(s, "RQD503")
    assert f.remedy is None and any("not here" in line for line in f.evidence)


def test_rqd503_dead_local_worker_gives_fail_started() -> None:
    s = snap([worker(pid=4242)], [job(registry_expires_at=NOW - 100, execution_id="a" * 32)], [])
    r = one(s, "RQD503").remedy
    assert r is not None and (r.action, r.member) == ("fail_started", f"site1::j1:{'a' * 32}")


def test_rqd202_ghost_gets_prune_worker_needing_prune_ghosts() -> None:
    s = snap([worker("ghost", pid=None, birth=None, ttl=-1, hostname=None, state=None, queues=[])])
    r = one(s, "RQD202").remedy
    assert r is not None and (r.action, r.worker, r.member, r.needs, r.expected) == (
        "prune_worker", "ghost", "rq:worker:ghost", "--prune-ghosts", "absent")


def test_rqd107_busy_horse_gets_stop_horse() -> None:
    s = snap([worker()], [], [proc(100), proc(101, ppid=100)])
    r = one(s, "RQD107").remedy
    assert r is not None and (r.action, r.pid, r.parent_pid, r.job_id) == ("stop_horse", 101, 100, None)


def test_one_target_on_two_findings_is_one_remedy() -> None:
    from rqdoctor.diagnose.remedies import distinct

    s = snap([worker(current_job="site1::j1")], [job()],
             [proc(100), proc(101, ppid=100, status="stopped", status_again="stopped")])
    findings = diagnose(s).findings
    assert {f.code for f in findings if f.remedy} >= {"RQD101", "RQD302"}
    [(remedy, carriers)] = [(r, fs) for r, fs in distinct(findings) if r.pid == 101]
    assert remedy.action == "stop_horse" and {f.code for f in carriers} >= {"RQD101", "RQD302"}


def test_rqd101_expired_entry_of_a_running_job_names_the_cleanup_that_fails_it() -> None:
    idle = worker("w2", pid=200, state="idle")
    s = snap([worker(current_job="site1::j1", last_heartbeat=NOW - 300), idle],
             [job(registry_expires_at=NOW - 200)], [proc(100), proc(101, ppid=100), proc(200)])
    evidence = one(s, "RQD101").evidence
    assert any("moves the job to failed while it may still run" in line for line in evidence)
    assert "next registry cleanup of short: within 600 s (1 idle worker(s) listen; each cleans every 600 s)" \
        in evidence


def test_rqd201_near_miss_pid_held_by_another_process_gives_no_fail_started() -> None:
    # the hash's pid is a shell here: the worker may run in a container sharing the hostname
    shell = proc(4242, worker_like=False, cmdline=["bash"])
    s = snap([worker(pid=4242, current_job="site1::j1")], [job()], [shell])
    f = one(s, "RQD201")
    assert f.remedy is None and any("container sharing this hostname" in line for line in f.evidence)
