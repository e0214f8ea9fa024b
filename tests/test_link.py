"""Unit tests of the job ↔ worker ↔ process join, on the recorded Frappe bench and hand-made trees."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from rqdoctor.diagnose.link import Links, link, parse_title
from rqdoctor.model import (
    JobInfo,
    ProbeError,
    ProcessInfo,
    RedisState,
    Snapshot,
    TargetInfo,
    WorkerInfo,
)

FIXTURE = Path(__file__).parent / "data" / "frappe-15.54.1" / "state.json"
HOST = "vm"
T0 = 1_800_000_000.0
FRAPPE_ARGV = ["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _snapshot(workers: list[WorkerInfo], jobs: list[JobInfo], processes: list[ProcessInfo], **kw: object) -> Snapshot:
    target = TargetInfo(redis_url="redis://127.0.0.1:6379/0", redis_url_source="test",
                        bench_path=kw.pop("bench_path", None))  # type: ignore[arg-type]
    return Snapshot(host=HOST, generated_at=T0 + 100, target=target,
                    redis=RedisState(server_time=T0 + 100, workers=workers, jobs=jobs),
                    processes=processes, **kw)  # type: ignore[arg-type]


def _fixture_snapshot() -> Snapshot:
    """The recorded bench as the probes would have stored it (built by hand from the raw keys)."""
    state = json.loads(FIXTURE.read_text())
    keys = state["redis"]
    workers = []
    for key in sorted(k for k in keys if k.startswith("rq:worker:") and keys[k]["type"] == "hash"):
        h = keys[key]["value"]
        workers.append(WorkerInfo(
            name=key.removeprefix("rq:worker:"), key=key, hostname=h["hostname"], pid=int(h["pid"]),
            state=h["state"], queues=h["queues"].split(","), current_job=h.get("current_job"),
            birth=_ts(h["birth"]), last_heartbeat=_ts(h["last_heartbeat"]), version=h["version"],
        ))
    jobs = []
    for key in sorted(k for k in keys if k.startswith("rq:wip:")):
        for member, score in keys[key]["value"]:
            h = keys[f"rq:job:{member}"]["value"]
            jobs.append(JobInfo(
                job_id=member, queue=key.removeprefix("rq:wip:"), registry_expires_at=score, status=h["status"],
                origin=h["origin"], started_at=_ts(h["started_at"]), worker_name=h["worker_name"],
            ))
    processes = [
        ProcessInfo(pid=p["pid"], ppid=p["ppid"], pgid=p["pgid"], sid=p["sid"], create_time=p["create_time"],
                    cmdline=p["cmdline"], cwd=p["cwd"], status=p["status"], worker_like=True)
        for p in state["processes"]
    ]
    assert state["hostname"] == HOST
    return _snapshot(workers, jobs, processes, bench_path=state["bench"])


def _worker(name: str, pid: int | None, *, host: str = HOST, birth: float = T0, state: str = "busy",
            current_job: str | None = None, version: str = "2.6.1", **kw: object) -> WorkerInfo:
    return WorkerInfo(name=name, key=f"rq:worker:{name}", hostname=host, pid=pid, birth=birth, state=state,
                      current_job=current_job, version=version, queues=["q"], **kw)  # type: ignore[arg-type]


def _job(job_id: str, *, worker_name: str | None = None, started_at: float = T0 + 50, status: str = "started",
         **kw: object) -> JobInfo:
    return JobInfo(job_id=job_id, queue="q", status=status, worker_name=worker_name, started_at=started_at,
                   **kw)  # type: ignore[arg-type]


def _proc(pid: int, ppid: int, *, pgid: int | None = None, sid: int | None = None, created: float = T0 - 1,
          argv: list[str] | None = None, worker_like: bool = True, **kw: object) -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=ppid, pgid=pgid if pgid is not None else 100, sid=sid if sid is not None else 100,
                       create_time=created, cmdline=argv if argv is not None else FRAPPE_ARGV,
                       worker_like=worker_like, status="sleeping", **kw)  # type: ignore[arg-type]


# --- the recorded Frappe 15.54.1 bench ---------------------------------------------------------------


def test_fixture_both_horses_matched_to_their_jobs() -> None:
    links = link(_fixture_snapshot())
    by_job = {jl.job.job_id: jl for jl in links.jobs}
    holdlock, lockwait = by_job["diag.localhost::holdlock"], by_job["diag.localhost::lockwait"]
    assert (holdlock.runner.pid, holdlock.runner_role) == (19302, "horse")  # type: ignore[union-attr]
    assert (lockwait.runner.pid, lockwait.runner_role) == (19307, "horse")  # type: ignore[union-attr]
    assert holdlock.worker_process.pid == 18619 and lockwait.worker_process.pid == 18622  # type: ignore[union-attr]
    assert holdlock.worker.name == "3e6904cd5aa043dd92bafc83fa1546ac"  # type: ignore[union-attr]
    assert {jl.location for jl in links.jobs} == {"local"}
    assert {jl.matched_by for jl in links.jobs} == {"current_job"}
    assert not any(jl.pre_start or jl.children for jl in links.jobs)
    assert links.orphans == []


def test_fixture_workers_are_local_forking_workers() -> None:
    links = link(_fixture_snapshot())
    for wl in links.workers:
        assert wl.location == "local" and wl.kind == "fork" and wl.problems == []
        assert wl.horse is not None and wl.horse.ppid == wl.process.pid  # type: ignore[union-attr]
        assert wl.pool_parent is None
    assert links.worker_for(links.local(19302)).process.pid == 18619  # type: ignore[union-attr]
    assert links.worker_for(links.local(18622)).horse.pid == 19307  # type: ignore[union-attr]
    assert links.job_for(links.local(19307)).job.job_id == "diag.localhost::lockwait"  # type: ignore[union-attr]
    assert links.job_for(links.local(18619)) is None and links.worker_for(links.local(1)) is None


def test_fixture_survives_a_json_round_trip() -> None:
    snapshot = _fixture_snapshot()
    again = Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    pairs = sorted((jl.job.job_id, jl.runner.pid) for jl in link(again).jobs)  # type: ignore[union-attr]
    assert pairs == [("diag.localhost::holdlock", 19302), ("diag.localhost::lockwait", 19307)]


def test_fixture_other_host_makes_everything_remote() -> None:
    snapshot = _fixture_snapshot()
    snapshot.host = "another-vm"
    links = link(snapshot)
    assert {wl.location for wl in links.workers} == {"remote"}
    assert all(wl.process is None and wl.horse is None for wl in links.workers)
    assert {(jl.location, jl.runner) for jl in links.jobs} == {("remote", None)}
    # the local processes that look like horses are not claimed as orphans of remote workers' jobs
    assert all(jl.runner_role is None for jl in links.jobs)


# --- hand-made trees ---------------------------------------------------------------------------------


def test_rq1_horse_needs_its_own_session() -> None:
    worker = _worker("w", 200, current_job="j", version="1.16.2")
    same_session = _proc(201, 200, pgid=201, sid=100)  # a process group leader, but not a 1.x horse
    snapshot = _snapshot([worker], [_job("j", worker_name="w")], [_proc(200, 1), same_session])
    assert link(snapshot).workers[0].horse is None
    same_session.sid = 201
    assert link(snapshot).jobs[0].runner is same_session


def test_scheduler_child_in_the_workers_group_is_not_a_horse() -> None:
    worker = _worker("w", 200, state="idle")
    scheduler = _proc(201, 200, pgid=100)
    links = link(_snapshot([worker], [], [_proc(200, 1), scheduler]))
    assert links.workers[0].horse is None and links.workers[0].kind == "unknown"
    assert links.orphans == []


def test_simple_worker_runs_the_job_itself() -> None:
    worker = _worker("w", 200, current_job="j")
    child = _proc(300, 200, pgid=100, argv=["wkhtmltopdf", "-q"], worker_like=False)
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [_proc(200, 1), child]))
    jl = links.jobs[0]
    assert links.workers[0].kind == "simple"
    assert (jl.runner.pid, jl.runner_role, jl.location) == (200, "worker", "local")  # type: ignore[union-attr]
    assert [c.pid for c in jl.children] == [300]
    assert links.job_for(links.local(300)) is jl and links.job_for(links.local(200)) is jl


def test_forked_title_without_horse_is_not_a_simple_worker() -> None:
    worker = _worker("w", 200, current_job="j")
    title = ["rq:worker:w:", "Forked", "999", "at", "1800000000.1"]
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [_proc(200, 1, argv=title)]))
    assert links.workers[0].kind == "fork"
    assert links.workers[0].problems[0].startswith("horse missing:")
    assert links.jobs[0].runner is None and links.jobs[0].location == "local"


def test_worker_pool_parent_and_member_horse() -> None:
    pool_argv = ["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker-pool", "--queue", "q"]
    pool = _proc(150, 1, pgid=150, sid=150, argv=pool_argv)
    members = [_proc(200, 150, pgid=150, sid=150, argv=pool_argv), _proc(210, 150, pgid=150, sid=150, argv=pool_argv)]
    horse = _proc(201, 200, pgid=201, sid=150, created=T0 + 49.8, argv=pool_argv)
    sleep = _proc(202, 201, pgid=201, sid=150, argv=["sleep", "60"], worker_like=False)
    workers = [_worker("a", 200, current_job="j"), _worker("b", 210, state="idle")]
    links = link(_snapshot(workers, [_job("j", worker_name="a")], [pool, *members, horse, sleep]))
    a, b = links.workers
    assert a.pool_parent is pool and b.pool_parent is pool
    assert a.kind == b.kind == "pool"
    assert a.horse is horse and b.horse is None
    jl = links.jobs[0]
    assert jl.runner is horse and jl.runner_role == "horse" and jl.children == [sleep]
    assert links.orphans == []  # the pool parent leads its own group but is not a horse


def test_orphaned_horse_matched_by_title() -> None:
    title = ["rq:worker:gone:", "Processing", "frappe.utils.background_jobs.execute_job", "from", "q", "since", "1"]
    orphan = _proc(400, 1, pgid=400, sid=400, created=T0 + 10, argv=title)
    job = _job("j", worker_name="gone", started_at=T0 + 50)  # far from create_time: the title decides
    links = link(_snapshot([], [job], [orphan]))
    assert links.orphans == [orphan]
    jl = links.jobs[0]
    assert (jl.runner, jl.runner_role, jl.matched_by, jl.location) == (orphan, "orphaned-horse", "title", "local")
    assert jl.worker is None and jl.worker_process is None
    assert parse_title(orphan) == ("gone", "Processing")


def test_orphaned_horse_matched_by_start_time_when_untitled() -> None:
    early = _proc(400, 1, pgid=400, sid=400, created=T0 + 10, cwd="/b/sites")
    close = _proc(410, 1, pgid=410, sid=410, created=T0 + 49.7, cwd="/b/sites")
    dead = _worker("gone", 300, birth=T0)  # its pid no longer exists: the worker is dead
    job = _job("j", worker_name="gone", started_at=T0 + 50)
    links = link(_snapshot([dead], [job], [early, close], bench_path="/b"))
    assert links.workers[0].location == "dead"
    assert links.workers[0].problems[0].startswith("process missing:")
    assert links.orphans == [close]  # untitled and matched to no job: a Frappe worker looks the same
    jl = links.jobs[0]
    assert (jl.runner, jl.runner_role, jl.matched_by) == (close, "orphaned-horse", "started_at")
    assert jl.worker is dead and links.job_for(links.local(400)) is None
    assert links.orphan_evidence[links.local(410)][0].startswith("its parent is pid 1")


def test_another_benchs_orphan_of_the_same_moment_does_not_take_this_jobs_match() -> None:
    # one OOM kill or restart took the workers of two benches on this host: both horses are orphans that
    # started within 40 ms; the other bench's is even closer to this job's start, but nothing ties it to us
    ours = _proc(410, 1, pgid=410, sid=410, created=T0 + 49.43, cwd="/b/sites")
    theirs = _proc(420, 1, pgid=420, sid=420, created=T0 + 49.47, cwd="/other-bench/sites")
    job = _job("j", worker_name="gone", started_at=T0 + 49.78)
    links = link(_snapshot([_worker("gone", 300, birth=T0)], [job], [ours, theirs], bench_path="/b"))
    jl = links.jobs[0]
    assert (jl.runner, jl.runner_role, jl.matched_by) == (ours, "orphaned-horse", "started_at")
    assert links.orphans == [ours] and links.unmatched == set()


def test_untitled_orphan_of_a_loaded_host_matched_by_its_execution() -> None:
    # rq >= 2 writes the execution just before the fork; the horse sets started_at only once it runs the job,
    # which on a loaded host can be many seconds later
    horse = _proc(410, 1, pgid=410, sid=410, created=T0 + 40.2, cwd="/b/sites")
    job = _job("j", worker_name="gone", started_at=T0 + 52, execution_created_at=T0 + 40.0)
    links = link(_snapshot([_worker("gone", 300, birth=T0)], [job], [horse], bench_path="/b"))
    jl = links.jobs[0]
    assert (jl.runner, jl.runner_role, jl.matched_by) == (horse, "orphaned-horse", "started_at")
    far = _job("j", worker_name="gone", started_at=T0 + 52)  # no execution: 11.8 s is too far to claim
    assert link(_snapshot([_worker("gone", 300, birth=T0)], [far], [horse], bench_path="/b")).jobs[0].runner is None


def test_orphan_not_claimed_by_a_job_whose_worker_lives() -> None:
    worker = _worker("w", 200, state="idle")
    orphan = _proc(400, 1, pgid=400, sid=400, created=T0 + 49.9, cwd="/b/sites")
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [_proc(200, 1), orphan], bench_path="/b"))
    assert links.orphans == []
    assert links.jobs[0].runner is None


def test_orphan_candidates_exclude_unregistered_workers_and_other_benches() -> None:
    title = ["rq:worker:gone:", "Processing", "f", "from", "q", "since", "1"]
    foreign = ["rq:worker:elsewhere:", "Processing", "f", "from", "q", "since", "1"]
    listening = _proc(500, 1, pgid=500, sid=500, argv=["rq:worker:x:", "Listening", "on", "q"])
    with_horse = _proc(510, 1, pgid=510, sid=510)
    its_horse = _proc(511, 510, pgid=511, sid=511, cwd="/b/sites", argv=title)  # another Redis's busy worker
    other_bench = _proc(520, 1, pgid=520, sid=520, cwd="/other-bench/sites")
    other_redis = _proc(525, 1, pgid=525, sid=525, cwd="/b/sites", argv=foreign)  # in the bench, not our worker
    ours = _proc(530, 1, pgid=530, sid=530, cwd="/b/sites", argv=title)
    procs = [listening, with_horse, its_horse, other_bench, other_redis, ours]
    links = link(_snapshot([], [_job("j", worker_name="gone")], procs, bench_path="/b"))
    assert links.orphans == [ours]
    assert links.jobs[0].runner is ours


def test_reused_pid_is_not_the_worker() -> None:
    worker = _worker("w", 200, birth=T0, current_job="j")
    stranger = _proc(200, 1, created=T0 + 600, argv=["/usr/sbin/nginx"], worker_like=False)
    child = _proc(201, 200, pgid=201, sid=201, created=T0 + 601, worker_like=False)
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [stranger, child]))
    wl = links.workers[0]
    assert wl.location == "not-found" and wl.process is None and wl.horse is None and wl.claimed is stranger
    assert wl.problems[0].startswith("pid reused:")
    assert links.jobs[0].runner is None and links.worker_for(links.local(200)) is None


def test_process_started_just_before_birth_is_the_worker() -> None:
    worker = _worker("w", 200, birth=T0)
    links = link(_snapshot([worker], [], [_proc(200, 1, created=T0 + 0.9)]))
    assert links.workers[0].location == "local"


def test_two_hashes_on_one_pid_latest_birth_wins() -> None:
    old, new = _worker("old", 200, birth=T0, state="idle"), _worker("new", 200, birth=T0 + 30, state="idle")
    links = link(_snapshot([old, new], [], [_proc(200, 1)]))
    by_name = {wl.worker.name: wl for wl in links.workers}
    assert by_name["new"].location == "local" and by_name["old"].location == "dead"
    assert by_name["old"].problems[0].startswith("pid taken:")


def test_dead_and_unknown_workers() -> None:
    died = _worker("died", 200, death=T0 + 5, state="idle")
    ghost = WorkerInfo(name="ghost", key="rq:worker:ghost", ttl=-1)
    links = link(_snapshot([died, ghost], [], [_proc(200, 1)]))
    assert [wl.location for wl in links.workers] == ["dead", "unknown"]
    assert links.workers[0].problems[0].startswith("death registered:") and links.workers[0].process is None
    assert links.workers[1].problems[0].startswith("no pid:")


def test_missing_process_is_unknown_when_the_process_probe_failed() -> None:
    worker = _worker("w", 200)
    snapshot = _snapshot([worker], [], [], errors=[ProbeError("processes", "timeout", "did not finish")])
    assert link(snapshot).workers[0].location == "unknown"
    snapshot.errors = [ProbeError("processes", "permission", "cwd of 3 processes")]
    assert link(snapshot).workers[0].location == "dead"


def test_remote_worker_and_its_job() -> None:
    worker = _worker("w", 200, host="other-host", current_job="j")
    lookalike = _proc(200, 1)  # same pid on this host is someone else
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [lookalike]))
    assert links.workers[0].location == "remote" and links.workers[0].process is None
    jl = links.jobs[0]
    assert (jl.location, jl.runner, jl.worker) == ("remote", None, worker)


def test_rq3_executions_instead_of_current_job() -> None:
    exec_id = "0123456789abcdef0123456789abcdef"
    worker = _worker("w", 200, version="3.0.0", executions=[f"site::a:b:{exec_id}"])
    horse = _proc(201, 200, pgid=201, sid=100, created=T0 + 49.9)
    jobs = [_job("site::a:b", execution_id=exec_id, worker_name="w"), _job("other", worker_name="w")]
    links = link(_snapshot([worker], jobs, [_proc(200, 1), horse]))
    first, second = links.jobs
    assert (first.runner, first.matched_by, first.pre_start) == (horse, "executions", False)
    assert second.runner is None and second.matched_by == "worker_name"


def test_rq3_pre_start_horse() -> None:
    exec_id = "f" * 32
    worker = _worker("w", 200, version="3.0.0", executions=[f"j:{exec_id}"])
    horse = _proc(201, 200, pgid=201, sid=100)
    links = link(_snapshot([worker], [_job("j", execution_id=exec_id, status="queued")], [_proc(200, 1), horse]))
    assert links.jobs[0].runner is horse and links.jobs[0].pre_start


def test_rq2_pre_start_horse_found_through_the_queue() -> None:
    busy = _worker("busy", 200)  # busy, no current_job yet: the horse has not reached prepare_job_execution
    idle = _worker("idle", 300, state="idle")
    horse = _proc(201, 200, pgid=201, sid=100)
    job = _job("j", execution_id="a" * 32, status="queued", started_at=None)  # type: ignore[arg-type]
    links = link(_snapshot([busy, idle], [job], [_proc(200, 1), horse, _proc(300, 1)]))
    jl = links.jobs[0]
    assert (jl.runner, jl.matched_by, jl.pre_start, jl.worker) == (horse, "queue", True, busy)


def test_job_without_any_worker_is_unknown() -> None:
    links = link(_snapshot([], [_job("j", worker_name=None)], []))
    assert isinstance(links, Links)
    assert (links.jobs[0].location, links.jobs[0].runner) == ("unknown", None)


@pytest.mark.parametrize("status", ["vanished", "sleeping"])
def test_vanished_horse_still_marks_a_forking_worker(status: str) -> None:
    worker = _worker("w", 200, current_job="j")
    horse = _proc(201, 200, pgid=201, sid=201)
    horse.status = status
    links = link(_snapshot([worker], [_job("j", worker_name="w")], [_proc(200, 1), horse]))
    assert links.workers[0].kind == "fork" and links.jobs[0].runner_role == "horse"
