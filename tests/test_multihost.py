"""Unit tests of one diagnosis from several hosts' snapshots (rqdoctor.merge and the (host, pid) keying).

Two hosts of one bench share a Redis and a MariaDB; both run a worker with pid 4242, so anything keyed by a
bare pid would mix them up. Host A's database probe sees its horse's session wait for a session whose client
is on host B (``remote`` from A); host B was collected with ``--no-db``, its horse's socket has that address.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rqdoctor.actions.plan import build_plan
from rqdoctor.diagnose.advice import on_host_command, process_ref
from rqdoctor.diagnose.run import diagnose
from rqdoctor.merge import MergeError, merge
from rqdoctor.model import (
    Connection,
    DatabaseState,
    DbSession,
    Frame,
    HealthState,
    JobInfo,
    LockWait,
    ProbeError,
    ProcessIdentity,
    ProcessInfo,
    ProcessStacks,
    ProcKey,
    RedisState,
    SchedulerLock,
    Snapshot,
    StackSample,
    TargetInfo,
    ThreadStack,
    WorkerInfo,
)

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0
RUN_ID = "a" * 40
DB = "mysql://root@10.0.0.9:3306"
ARGV = ["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"]


def _process(host: str, pid: int, ppid: int, pgid: int, connections: list[Connection] | None = None) -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=ppid, pgid=pgid, create_time=T0 - 10, cmdline=ARGV, status="sleeping",
                       worker_like=True, connections=connections or [],
                       identity=ProcessIdentity(host, pid, T0 - 10, pid))


def _worker(name: str, host: str, job: str) -> WorkerInfo:
    return WorkerInfo(name=name, key=f"rq:worker:{name}", hostname=host, pid=4242, state="busy", queues=["short"],
                      current_job=job, birth=T0, last_heartbeat=T0 + 95, version="2.6.1")


def _redis(now: float) -> RedisState:
    workers = [_worker("wa", "host-a", "ja"), _worker("wb", "host-b", "jb"), _worker("wc", "host-c", "jc")]
    jobs = [JobInfo(job_id=j, queue="short", status="started", worker_name=w, started_at=T0 + 5, method="app.run")
            for j, w in (("ja", "wa"), ("jb", "wb"), ("jc", "wc"))]
    return RedisState(server_time=now, workers=workers, jobs=jobs, run_id=RUN_ID)


def _sleeping(pid: int, host: str = "") -> ProcessStacks:
    frame = Frame("sleep", "/b/apps/app/app/run.py", 10)
    return ProcessStacks(pid, [StackSample(T0 + 99, [ThreadStack(1, "MainThread", frames=[frame])], cpu_time=1.0),
                               StackSample(T0 + 99.5, [ThreadStack(1, "MainThread", frames=[frame])], cpu_time=1.0)],
                         host=host)


def host_a() -> Snapshot:
    """Host A: its worker 4242 and horse 4300, and the database as A sees it."""
    sessions = [
        DbSession(DB, 10, user="u", db="site", client_host="10.0.0.1", client_port=50001, client_pid=4300,
                  client_match="tcp", command="Query", query="UPDATE tabItem SET x = 1", time_s=30),
        DbSession(DB, 42, user="u", db="site", client_host="10.0.0.2", client_port=50002, client_match="remote",
                  command="Sleep", time_s=60, trx_age_s=60),
    ]
    database = DatabaseState(servers=[DB], sessions=sessions,
                             lock_waits=[LockWait(DB, 10, 42, table="tabItem", wait_age_s=30)])
    return Snapshot(host="host-a", generated_at=T0 + 100, target=TargetInfo("redis://10.0.0.5:6379/0", "test"),
                    rqdoctor_version="0.1.0", redis=_redis(T0 + 100),
                    processes=[_process("host-a", 4242, 1, 4242),
                               _process("host-a", 4300, 4242, 4300,
                                        [Connection("10.0.0.1:50001", "10.0.0.9:3306", "ESTABLISHED")])],
                    database=database)


def host_b() -> Snapshot:
    """Host B, collected a little earlier with --no-db: its worker 4242 and horse 4301 (sampled: it sleeps)."""
    return Snapshot(host="host-b", generated_at=T0 + 90, target=TargetInfo("redis://10.0.0.5:6379/0", "test"),
                    rqdoctor_version="0.1.0", redis=_redis(T0 + 90),
                    processes=[_process("host-b", 4242, 1, 4242),
                               _process("host-b", 4301, 4242, 4301,
                                        [Connection("10.0.0.2:50002", "10.0.0.9:3306", "ESTABLISHED")])],
                    stacks=[_sleeping(4242)])


def merged() -> Snapshot:
    return merge([("a.json", host_a()), ("b.json", host_b())])


def test_merged_snapshot_names_its_hosts_and_takes_the_newest_redis_state() -> None:
    snap = merged()
    assert [(h.name, h.source, h.redis_used) for h in snap.hosts] == [
        ("host-a", "a.json", True), ("host-b", "b.json", False)]
    assert snap.host == "host-a" and snap.redis is not None and snap.redis.server_time == T0 + 100
    assert {(p.identity.host, p.pid) for p in snap.processes if p.identity} == {
        ("host-a", 4242), ("host-a", 4300), ("host-b", 4242), ("host-b", 4301)}
    assert [s.host for s in snap.stacks] == ["host-b"]
    again = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again.hosts == snap.hosts and again.stacks[0].host == "host-b"


def test_each_worker_hash_is_matched_on_its_own_host_though_both_have_pid_4242() -> None:
    diagnosis = diagnose(merged())
    by_name = {wl.worker.name: wl for wl in diagnosis.links.workers}
    assert (by_name["wa"].host, by_name["wa"].location) == ("host-a", "local")
    assert (by_name["wb"].host, by_name["wb"].location) == ("host-b", "local")
    assert by_name["wa"].process is not by_name["wb"].process
    assert by_name["wa"].horse.pid == 4300 and by_name["wb"].horse.pid == 4301  # type: ignore[union-attr]
    assert (by_name["wc"].host, by_name["wc"].location, by_name["wc"].process) == (None, "remote", None)
    jobs = {jl.job.job_id: jl for jl in diagnosis.links.jobs}
    assert jobs["jc"].location == "remote" and jobs["jc"].runner is None
    links = diagnosis.links
    assert links.worker_for(ProcKey("host-b", 4242)) is by_name["wb"]
    assert links.worker_for(ProcKey("host-a", 4242)) is by_name["wa"]
    assert links.job_for(ProcKey("host-b", 4301)) is jobs["jb"]


def test_stacks_belong_to_the_host_they_were_sampled_on() -> None:
    diagnosis = diagnose(merged())
    assert ProcKey("host-b", 4242) in diagnosis.activities
    assert ProcKey("host-a", 4242) not in diagnosis.activities


def test_a_blocker_session_from_another_host_is_matched_by_its_client_address() -> None:
    snap = merged()
    assert snap.database is not None
    blocker = next(s for s in snap.database.sessions if s.session_id == 42)
    assert (blocker.client_pid, blocker.client_pid_host, blocker.client_match) == (4301, "host-b", "tcp@host-b")
    diagnosis = diagnose(snap)
    [finding] = [f for f in diagnosis.findings if f.code == "RQD401"]
    assert (finding.job_id, finding.pid, finding.host) == ("ja", 4300, "host-a")
    # merged from several hosts, every pid is named with its host (none is "this host")
    assert finding.evidence[0].startswith("session 10 (pid 4300 on host-a) waits 30 s for a row lock on tabItem")
    assert finding.evidence[1].startswith("held by session 42 = RQ job jb, pid 4301 on host-b, idle in transaction")
    assert finding.evidence[2] == "the blocker is RQ job jb"
    data = finding.data["blocker"]
    assert (data["session_id"], data["pid"], data["host"], data["role"], data["job_id"]) == (
        42, 4301, "host-b", "rq-job", "jb")
    [idle] = [f for f in diagnosis.findings if f.code == "RQD402"]
    assert (idle.pid, idle.host) == (4301, "host-b")


def test_without_the_other_host_the_blocker_stays_remote() -> None:
    diagnosis = diagnose(host_a())
    [finding] = [f for f in diagnosis.findings if f.code == "RQD401"]
    assert finding.evidence[0].startswith("session 10 (pid 4300) waits")  # one host: pids as before
    assert "held by session 42 = remote host 10.0.0.2" in finding.evidence[1]
    assert finding.data["blocker"]["pid"] is None


def test_a_loopback_client_address_is_never_matched_on_another_host() -> None:
    a, b = host_a(), host_b()
    assert a.database is not None
    a.database.sessions[1].client_host = "127.0.0.1"
    b.processes[1].connections = [Connection("127.0.0.1:50002", "127.0.0.1:3306", "ESTABLISHED")]
    snap = merge([("a.json", a), ("b.json", b)])
    assert snap.database is not None and snap.database.sessions[1].client_pid is None


def test_sessions_seen_from_both_hosts_are_one_session_preferring_the_matched_copy() -> None:
    a, b = host_a(), host_b()
    assert a.database is not None
    b.database = dataclasses.replace(a.database, sessions=[
        dataclasses.replace(a.database.sessions[1], client_pid=4301, client_match="tcp")])
    snap = merge([("a.json", a), ("b.json", b)])
    assert snap.database is not None
    assert sorted(s.session_id for s in snap.database.sessions) == [10, 42]
    blocker = next(s for s in snap.database.sessions if s.session_id == 42)
    assert (blocker.client_pid, blocker.client_pid_host, blocker.client_match) == (4301, "host-b", "tcp")
    assert len(snap.database.lock_waits) == 1


def test_snapshots_of_another_redis_server_are_refused_naming_the_file() -> None:
    other = host_b()
    assert other.redis is not None
    other.redis.run_id = "b" * 40
    with pytest.raises(MergeError, match=r"^b\.json: another Redis server \(run_id bbbbbbbbbbbb, not aaaaaaaaaaaa\)"):
        merge([("a.json", host_a()), ("b.json", other)])


def test_without_run_ids_another_redis_url_is_refused() -> None:
    a, b = host_a(), host_b()
    assert a.redis is not None and b.redis is not None
    a.redis.run_id = b.redis.run_id = None
    b.target.redis_url = "redis://10.0.0.6:6379/0"
    with pytest.raises(MergeError, match=r"^b\.json: another Redis URL"):
        merge([("a.json", a), ("b.json", b)])


def test_the_same_host_twice_is_refused() -> None:
    with pytest.raises(MergeError, match=r"^a2\.json: host host-a is already given by a\.json"):
        merge([("a.json", host_a()), ("a2.json", host_a())])


def test_another_hosts_redis_failure_is_not_the_merged_reports() -> None:
    b = host_b()
    b.redis = None
    b.errors += [ProbeError("redis", "unreachable", "Redis at redis://10.0.0.5:6379/0: cannot connect"),
                 ProbeError("stacks", "permission", "py-spy cannot attach", subject="pid 4301")]
    snap = merge([("a.json", host_a()), ("b.json", b)])
    assert snap.redis is not None and snap.redis.server_time == T0 + 100
    assert [(e.probe, e.host, e.message) for e in snap.errors] == [
        ("stacks", "host-b", "host-b: py-spy cannot attach")]


def test_kill_plan_refuses_a_process_of_another_host() -> None:
    diagnosis = diagnose(merged(), older_than_s=1)
    remedies = {f.remedy.host: f for f in diagnosis.findings if f.remedy is not None and f.remedy.pid is not None}
    assert {"host-a", "host-b"} <= set(remedies)
    assert remedies["host-b"].remedy.pid == 4301  # type: ignore[union-attr]
    steps = {s.remedy.host: s for s in build_plan(diagnosis.findings, set(), "host-a")}
    assert steps["host-b"].refused == "the process is on host 'host-b', not this host ('host-a')"
    assert steps["host-a"].refused is None


def test_snapshots_collected_far_apart_say_so() -> None:
    assert [e for e in merged().errors if e.probe == "merge"] == []  # 10 s apart
    b = host_b()
    b.generated_at = T0 - 200
    [spread] = [e for e in merge([("a.json", host_a()), ("b.json", b)]).errors if e.probe == "merge"]
    assert spread.message.startswith("the hosts' snapshots were collected 300 s apart")


def test_a_single_snapshot_is_not_changed_by_a_merge() -> None:
    one = host_a()
    assert merge([("a.json", one)]) is one and one.hosts == []


def test_a_command_for_another_hosts_process_goes_through_ssh() -> None:
    snap = merged()
    horse_b = snap.process(ProcKey("host-b", 4301))
    horse_a = snap.process(ProcKey("host-a", 4300))
    assert horse_a is not None and horse_b is not None
    assert on_host_command(horse_b, "host-a", "kill -TERM -4301") == "ssh host-b 'kill -TERM -4301'"
    assert on_host_command(horse_a, "host-a", "kill -TERM -4300") == "kill -TERM -4300"
    assert process_ref(horse_b, "host-a").startswith("pid 4301 on host-b (started ")
    assert process_ref(horse_a, "host-a").startswith("pid 4300 (started ")


def test_a_dead_worker_of_another_collected_host_is_dead_there_not_remote() -> None:
    b = host_b()
    b.processes = []  # worker wb and its horse exited before host B was read
    diagnosis = diagnose(merge([("a.json", host_a()), ("b.json", b)]))
    [wb] = [wl for wl in diagnosis.links.workers if wl.worker.name == "wb"]
    assert (wb.host, wb.location) == ("host-b", "dead")
    [finding] = [f for f in diagnosis.findings if f.code == "RQD201"]
    assert finding.evidence[0] == "Redis says pid 4242 on host host-b; no such process in the snapshot of host-b"
    assert (finding.pid, finding.host, finding.remedy) == (4242, "host-b", None)


def test_a_recorded_one_host_snapshot_loads_with_the_new_fields_defaulted() -> None:
    recorded = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
    data = json.loads(recorded.read_text())
    snap = Snapshot.from_dict(data.get("snapshot", data))
    assert snap.hosts == [] and snap.redis is not None and snap.redis.run_id is None
    assert all(s.host == "" for s in snap.stacks) and all(e.host == "" for e in snap.errors)
    assert merge([("x.json", snap)]) is snap


def _benches(b_cwd: str) -> Snapshot:
    """Each host's bench at its own path, the workers running in ``sites`` of it (B's in ``b_cwd``)."""
    sides = []
    for snap, bench, cwd in ((host_a(), "/srv/a-bench", "/srv/a-bench/sites"), (host_b(), "/srv/b-bench", b_cwd)):
        snap.target.bench_path, snap.target.queue_filter, snap.target.bench_id = bench, "bench:", "bench"
        assert snap.redis is not None
        for w in snap.redis.workers:
            w.queues = ["bench:short"]
        for p in snap.processes:
            p.cwd = cwd
        sides.append((f"{snap.host}.json", snap))
    return merge(sides)


def test_each_worker_is_checked_against_its_own_hosts_bench() -> None:
    assert [f for f in diagnose(_benches("/srv/b-bench/sites")).findings if f.code == "RQD609"] == []
    [foreign] = [f for f in diagnose(_benches("/srv/other-bench/sites")).findings if f.code == "RQD609"]
    assert (foreign.worker, foreign.host) == ("wb", "host-b")
    assert foreign.evidence[1].endswith("runs in /srv/other-bench/sites, not in /srv/b-bench")


def test_snapshots_of_another_bench_id_are_refused() -> None:
    a, b = host_a(), host_b()
    a.target.queue_filter, b.target.queue_filter = "one:", "two:"
    with pytest.raises(MergeError, match=r"^b\.json: another bench id"):
        merge([("a.json", a), ("b.json", b)])


def _scheduler(snap: Snapshot, running: bool) -> Snapshot:
    """``snap`` with health read: the bench's scheduler runs on its host (lock held, a process) or not (no lock)."""
    lock = SchedulerLock("/b/config/scheduler_process", "held" if running else "missing")
    proc = _process(snap.host, 5000, 1, 5000)
    snap.health = HealthState(lock=lock, processes=[proc] if running else [], processes_read=True,
                              oom_kills={"/sys/fs/cgroup/w/memory.events": 1})
    return snap


def test_scheduler_health_is_the_host_whose_scheduler_runs_though_another_is_newer() -> None:
    snap = merge([("a.json", _scheduler(host_a(), running=False)), ("b.json", _scheduler(host_b(), running=True))])
    assert snap.health is not None and snap.health.lock is not None and snap.health.lock.state == "held"
    assert [p.identity.host for p in snap.health.processes if p.identity] == ["host-b"]
    assert {h.name: h.health_used for h in snap.hosts} == {"host-a": False, "host-b": True}
    # host A's missing lock is no verdict: the scheduler runs on B
    assert [f for f in diagnose(snap).findings if f.code == "RQD605"] == []
    assert snap.health.oom_kills == {"/sys/fs/cgroup/w/memory.events": 1, "host-a:/sys/fs/cgroup/w/memory.events": 1}


def test_scheduler_health_without_a_scheduler_anywhere_is_the_newest_hosts() -> None:
    snap = merge([("a.json", _scheduler(host_a(), running=False)), ("b.json", _scheduler(host_b(), running=False))])
    assert {h.name: h.health_used for h in snap.hosts} == {"host-a": True, "host-b": False}
    assert [f.code for f in diagnose(snap).findings if f.code == "RQD605"] == ["RQD605"]


def test_the_header_names_each_hosts_bench_path() -> None:
    from rqdoctor.render.header import facts

    rows = dict(facts(_benches("/srv/b-bench/sites")))
    assert rows["bench"] == "/srv/a-bench on host-a, /srv/b-bench on host-b"


def test_a_container_worker_is_in_the_bench_by_directory_identity_whatever_path_it_sees() -> None:
    # one host; its worker runs in a container whose cwd is the bench's sites folder mounted at another path
    snap = host_a()
    snap.target.bench_path, snap.target.queue_filter, snap.target.bench_id = "/srv/volume/bench", "bench:", "bench"
    snap.target.bench_dirs = ["64768:11", "64768:12"]  # the bench root and its sites folder, by st_dev:st_ino
    assert snap.redis is not None
    for w in snap.redis.workers:
        w.queues = ["bench:short"]
    for p in snap.processes:
        p.cwd, p.cwd_dir = "/home/frappe/frappe-bench/sites", "64768:12"
    assert [f for f in diagnose(snap).findings if f.code == "RQD609"] == []
    for p in snap.processes:
        p.cwd_dir = "64768:99"  # another directory: another bench's worker
    [foreign] = [f for f in diagnose(snap).findings if f.code == "RQD609"]
    assert foreign.evidence[1].endswith("runs in /home/frappe/frappe-bench/sites, not in /srv/volume/bench")
