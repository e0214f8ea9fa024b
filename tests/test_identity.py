"""Identity before any claim (pure): which local process a worker hash really is, orphans, gone runners.

Hand-built snapshots: worker hashes that claim this host and the pids of unrelated processes or a
zombie, a horse that exited during sampling, another Redis's busy worker, no Redis at all. None of
them may make a process a "worker" or a "horse", and none may get kill advice.
"""

from __future__ import annotations

from pathlib import Path

from rqdoctor.commands.common import load_snapshot
from rqdoctor.diagnose.findings import Finding
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.model import Connection, ProbeError, ProcessInfo, Snapshot, WorkerInfo
from rqdoctor.views import job_rows, worker_rows
from tests.test_diagnosis import NOW, SLEEP, busy_bench, snapshot, stacks, started, worker

SLEEP_ARGV = ["sleep", "300"]
PY_LOOP = ["python3", "-c", "while True: import time; time.sleep(1)"]
HORSE_TITLE = ["rq:worker:w1:", "Processing", "app.jobs.work", "from", "short", "since", "1799999940.0"]


def process(pid: int, ppid: int = 1, **kw: object) -> ProcessInfo:
    """A Frappe worker-like process leading its own group (fields overridable)."""
    fields: dict[str, object] = dict(pgid=pid, sid=pid, create_time=NOW - 4000, status="sleeping", worker_like=True,
                                     cmdline=["python", "-m", "frappe.utils.bench_helper", "frappe", "worker"])
    fields.update(kw)
    return ProcessInfo(pid=pid, ppid=ppid, **fields)  # type: ignore[arg-type]


def stranger(pid: int, argv: list[str], ppid: int = 50, **kw: object) -> ProcessInfo:
    """A live local process that is not an RQ worker."""
    fields: dict[str, object] = dict(pgid=pid, sid=pid, create_time=NOW - 7200, cmdline=argv, status="sleeping",
                                     worker_like=False)
    fields.update(kw)
    return ProcessInfo(pid=pid, ppid=ppid, **fields)  # type: ignore[arg-type]


def kill_commands(findings: list[Finding]) -> list[str]:
    return [c for f in findings for c in f.commands if c.lstrip().startswith("kill")]


def about_pid(diagnosis: Diagnosis, pid: int) -> list[Finding]:
    return [f for f in diagnosis.findings if f.pid == pid or f"{pid}" in " ".join(f.commands)]


# --- RQD201: the hash's pid is not that worker ---------------------------------------------------


def test_rqd201_fires_pid_held_by_an_unrelated_sleep_or_python_program() -> None:
    snap = snapshot(workers=[worker("w-sleep", pid=300, current_job="site1::j1"), worker("w-py", pid=310)],
                    jobs=[started(worker_name="w-sleep")],
                    processes=[stranger(300, SLEEP_ARGV), stranger(310, PY_LOOP),
                               stranger(311, ["sh", "-c", "true"], ppid=310)])
    diagnosis = diagnose(snap)
    by_name = {wl.worker.name: wl for wl in diagnosis.links.workers}
    for name, pid in (("w-sleep", 300), ("w-py", 310)):
        wl = by_name[name]
        assert (wl.location, wl.process, wl.horse) == ("not-found", None, None)
        assert wl.claimed is not None and wl.claimed.pid == pid and wl.problems[0].startswith("not a worker:")
        [finding] = [f for f in diagnosis.findings if f.subject == f"worker {name}"]
        assert finding.code == "RQD201" and finding.pid is None
        assert f"that pid is now pid {pid} (started " in finding.evidence[0]
        assert "leave that process alone" in finding.fix
        assert not kill_commands([finding]) and "sudo supervisorctl restart all" not in finding.commands
        key = diagnosis.links.local(pid)
        assert diagnosis.links.worker_for(key) is None and diagnosis.links.job_for(key) is None
        assert about_pid(diagnosis, pid) == []
    [job] = diagnosis.links.jobs
    assert job.runner is None and job.runner_role is None
    assert not kill_commands(diagnosis.findings)
    rows = {r["name"]: r for r in worker_rows(diagnosis)}
    assert rows["w-sleep"]["location"] == "not-found" and rows["w-sleep"]["horse_pid"] is None
    assert [r["pid"] for r in job_rows(diagnosis)] == [None]


def test_rqd201_fires_zombie_worker() -> None:
    zombie = process(300, ppid=50, status="zombie", cmdline=[], worker_like=False)
    snap = snapshot(workers=[worker("z", pid=300)], processes=[zombie])
    diagnosis = diagnose(snap)
    [wl] = diagnosis.links.workers
    assert (wl.location, wl.process) == ("dead", None) and wl.problems[0].startswith("zombie:")
    [finding] = [f for f in diagnosis.findings if f.subject == "worker z"]
    assert finding.code == "RQD201" and finding.pid is None and not kill_commands([finding])
    # an rq-worker command line does not make a zombie alive either
    snap.processes[0].cmdline, snap.processes[0].worker_like = ["rq", "worker", "short"], True
    assert link_location(snap) == "dead"


def link_location(snap: Snapshot) -> str:
    return diagnose(snap).links.workers[0].location


def test_rqd201_fires_reused_pid_names_the_new_process() -> None:
    snap = snapshot(workers=[worker("w1", pid=300)], processes=[process(300, create_time=NOW - 60)])
    diagnosis = diagnose(snap)
    [finding] = [f for f in diagnosis.findings if f.code == "RQD201"]
    assert diagnosis.links.workers[0].location == "not-found"
    assert any(line.startswith("pid reused:") for line in finding.evidence) and finding.pid is None


def test_rqd201_near_miss_live_worker_whose_start_fits_its_birth() -> None:
    snap = snapshot(workers=[worker("w1", pid=100, state="idle")], processes=[process(100)])
    diagnosis = diagnose(snap)
    assert diagnosis.links.workers[0].location == "local"
    assert not [f for f in diagnosis.findings if f.code == "RQD201"]


def test_rqd201_near_miss_process_probe_failed() -> None:
    snap = snapshot(workers=[worker("w1", pid=100)])
    snap.errors.append(ProbeError("processes", "timeout", "did not finish"))
    diagnosis = diagnose(snap)
    assert diagnosis.links.workers[0].location == "unknown"
    assert not [f for f in diagnosis.findings if f.code == "RQD201"]


# --- a runner that exited during sampling ---------------------------------------------------------


def test_horse_that_vanished_mid_sampling_is_gone_without_verdict_or_kill() -> None:
    for mark in ("status", "error", "zombie"):
        snap = busy_bench(running=600, timeout=300)  # past its timeout, and the same stack in every sample
        assert "RQD101" in {f.code for f in diagnose(snap).findings}
        horse = next(p for p in snap.processes if p.pid == 101)
        if mark == "status":
            horse.status = "vanished"
        elif mark == "zombie":
            horse.status = "zombie"
        else:
            snap.errors.append(ProbeError("processes", "vanished", "process 101 exited", subject="pid 101"))
        diagnosis = diagnose(snap)
        [row] = job_rows(diagnosis)
        assert row["gone"] is True and row["pid"] == 101 and row["activity"] is None, mark
        assert "exited during the scan" in row["notes"][0]
        assert row["findings"] == [] and not kill_commands(diagnosis.findings), mark
        assert not [f for f in diagnosis.findings if f.job_id == "site1::j1"]


def test_stacks_probe_vanished_error_marks_the_runner_gone() -> None:
    snap = busy_bench(running=60, timeout=300)
    snap.stacks[0].error = ProbeError("stacks", "vanished", "process 101 is gone", subject="101")
    diagnosis = diagnose(snap)
    assert diagnosis.links.jobs[0].gone and not kill_commands(diagnosis.findings)


# --- RQD110: orphans from the process tree only -----------------------------------------------------


def orphan_bench(horse: ProcessInfo, **target: object) -> Snapshot:
    """Worker w1 was SIGKILLed: its hash lingers (pid 100 gone), its horse was re-parented."""
    snap = snapshot(workers=[worker(current_job="site1::j1")], jobs=[started(running=60, started_at=NOW - 60)],
                    processes=[horse], stacks=[stacks(horse.pid, SLEEP)])
    for key, value in target.items():
        setattr(snap.target, key, value)
    return snap


def test_rqd110_fires_titled_horse_while_the_dead_workers_hash_lingers() -> None:
    horse = process(101, ppid=1, cmdline=HORSE_TITLE, create_time=NOW - 60)
    diagnosis = diagnose(orphan_bench(horse))
    assert diagnosis.links.workers[0].location == "dead"
    [finding] = [f for f in diagnosis.findings if f.code == "RQD110"]
    assert (finding.pid, finding.job_id) == (101, "site1::j1")
    assert finding.commands == ["kill -TERM -101"]
    assert "pid 101 (started " in finding.fix and "runs: rq:worker:w1:" in finding.fix
    assert any("parent is pid 1" in line for line in finding.evidence)
    assert any("names worker w1 of this Redis" in line for line in finding.evidence)
    [job] = diagnosis.links.jobs
    assert (job.runner_role, job.matched_by) == ("orphaned-horse", "title")
    for f in diagnosis.findings:
        for command in kill_commands([f]):
            assert "pid 101 (started " in f.fix, (f.code, command)  # every kill names the checked process


def test_rqd110_fires_untitled_horse_in_the_bench_matched_by_start_time() -> None:
    horse = process(101, ppid=1, create_time=NOW - 60.5, cwd="/home/frappe/frappe-bench/sites")
    diagnosis = diagnose(orphan_bench(horse, bench_path="/home/frappe/frappe-bench"))
    [finding] = [f for f in diagnosis.findings if f.code == "RQD110"]
    assert finding.job_id == "site1::j1"
    assert any("in the bench" in line for line in finding.evidence)
    assert any("matched by its start time" in line for line in finding.evidence)


def test_rqd110_fires_untitled_horse_connected_to_the_target_redis() -> None:
    conn = Connection("127.0.0.1:50000", "127.0.0.1:16379", "ESTABLISHED")
    horse = process(101, ppid=1, create_time=NOW - 60.5, connections=[conn])
    diagnosis = diagnose(orphan_bench(horse, redis_url="redis://:****@localhost:16379/9"))
    [finding] = [f for f in diagnosis.findings if f.code == "RQD110"]
    assert any("connected to the diagnosed Redis at 127.0.0.1:16379" in line for line in finding.evidence)


def test_rqd110_near_miss_untitled_horse_of_another_redis_port() -> None:
    conn = Connection("127.0.0.1:50000", "127.0.0.1:16380", "ESTABLISHED")
    horse = process(101, ppid=1, create_time=NOW - 60.5, connections=[conn])
    diagnosis = diagnose(orphan_bench(horse, redis_url="redis://127.0.0.1:16379/9"))
    assert not [f for f in diagnosis.findings if f.code == "RQD110"] and not kill_commands(diagnosis.findings)


def test_rqd110_near_miss_untitled_process_matching_no_job() -> None:
    horse = process(101, ppid=1, create_time=NOW - 3000, cwd="/b/sites")  # an unregistered Frappe worker?
    diagnosis = diagnose(orphan_bench(horse, bench_path="/b"))
    assert diagnosis.links.orphans == [] and not kill_commands(diagnosis.findings)


def test_rqd110_near_miss_another_redis_busy_worker_on_the_host() -> None:
    """Workers of another Redis DB: parent alive and worker-like, not in our Redis; our Redis is empty."""
    other_title = ["rq:worker:other:", "Processing", "app.jobs.work", "from", "short", "since", "1"]
    procs = [process(500, ppid=1, cmdline=["rq:worker:other:", "Forked", "501", "at", "1"]),
             process(501, ppid=500, cmdline=other_title, create_time=NOW - 60, cwd="/b/sites"),
             process(600, ppid=1), process(601, ppid=600, create_time=NOW - 60, cwd="/b/sites")]
    snap = snapshot(processes=procs, stacks=[stacks(501, SLEEP), stacks(601, SLEEP)])
    snap.target.bench_path = "/b"
    diagnosis = diagnose(snap)
    assert diagnosis.links.orphans == [] and diagnosis.findings == []
    # the same, but our Redis also lists a dead worker and an untitled job started at that time
    snap.redis.workers = [worker(current_job="site1::j1", pid=4242)]  # type: ignore[union-attr]
    snap.redis.jobs = [started(running=60)]  # type: ignore[union-attr]
    diagnosis = diagnose(snap)
    assert diagnosis.links.orphans == [] and not kill_commands(diagnosis.findings)
    assert diagnosis.links.jobs[0].runner is None


def test_rqd110_near_miss_titled_process_naming_a_worker_this_redis_does_not_know() -> None:
    """Another Redis's SimpleWorker (titled ``Processing``, parent supervisord) and orphan, in the bench dir."""
    other = ["rq:worker:other:", "Processing", "app.jobs.work", "from", "short", "since", "1"]
    procs = [process(700, ppid=650, cmdline=other, create_time=NOW - 60, cwd="/b/sites"),
             process(701, ppid=1, cmdline=other, create_time=NOW - 60, cwd="/b/sites")]
    snap = snapshot(workers=[worker(current_job="site1::j1", pid=4242)], jobs=[started(running=60)],
                    processes=procs, stacks=[stacks(700, SLEEP), stacks(701, SLEEP)])
    snap.target.bench_path = "/b"
    diagnosis = diagnose(snap)
    assert diagnosis.links.orphans == [] and diagnosis.links.jobs[0].runner is None
    assert not kill_commands(diagnosis.findings)


def test_rqd110_near_miss_redis_unreadable() -> None:
    """Without Redis: no verdict about workers or jobs, no orphan, no kill advice (every rule)."""
    procs = [process(100), process(101, ppid=100), process(200, ppid=1, cmdline=HORSE_TITLE),
             process(300, ppid=1, cwd="/b/sites")]
    snap = snapshot(processes=procs, stacks=[stacks(101, SLEEP), stacks(200, SLEEP), stacks(300, SLEEP)])
    snap.target.bench_path = "/b"
    snap.redis = None
    snap.errors.append(ProbeError("redis", "connect", "connection refused"))
    diagnosis = diagnose(snap)
    assert diagnosis.links.workers == [] and diagnosis.links.jobs == [] and diagnosis.links.orphans == []
    assert not [f for f in diagnosis.findings if f.code.startswith(("RQD1", "RQD2"))]
    assert not kill_commands(diagnosis.findings)
    assert job_rows(diagnosis) == [] and worker_rows(diagnosis) == []


def test_rqd110_near_miss_orphan_that_exited_during_the_scan() -> None:
    horse = process(101, ppid=1, cmdline=HORSE_TITLE, create_time=NOW - 60, status="vanished")
    diagnosis = diagnose(orphan_bench(horse))
    assert not [f for f in diagnosis.findings if f.code == "RQD110"] and not kill_commands(diagnosis.findings)


# --- RQD107 / RQD108: kill advice names the process it was checked against ---------------------------


def test_rqd107_fires_names_the_horse_it_checked() -> None:
    snap = snapshot(workers=[worker(state="busy")], processes=[process(100), process(101, ppid=100)])
    [finding] = [f for f in diagnose(snap).findings if f.code == "RQD107"]
    assert finding.commands == ["kill -KILL -101"] and "(pid 101 (started " in finding.fix
    assert any(line.startswith("worker process pid 100 (started ") for line in finding.evidence)


def test_rqd107_near_miss_worker_pid_held_by_a_stranger() -> None:
    snap = snapshot(workers=[worker(state="busy")],
                    processes=[stranger(100, PY_LOOP), process(101, ppid=100)])
    diagnosis = diagnose(snap)
    assert not [f for f in diagnosis.findings if f.code == "RQD107"]
    assert diagnosis.links.worker_for(diagnosis.links.local(101)) is None and not kill_commands(diagnosis.findings)


def test_rqd107_near_miss_horse_gone_during_the_scan() -> None:
    snap = snapshot(workers=[worker(state="busy")],
                    processes=[process(100), process(101, ppid=100, status="vanished")])
    assert not [f for f in diagnose(snap).findings if f.code == "RQD107"]


def test_rqd108_fires_names_the_worker_process() -> None:
    snap = snapshot(workers=[worker(current_job="site1::j1")], jobs=[started(running=60)],
                    processes=[process(100)], stacks=[stacks(100, SLEEP)])
    [finding] = [f for f in diagnose(snap).findings if f.code == "RQD108"]
    assert finding.commands == ["kill -TERM 100"] and "pid 100 (started " in finding.fix
    assert any("(pid 100 (started " in line for line in finding.evidence)


def test_rqd108_near_miss_simple_worker_pid_is_an_unrelated_python_program() -> None:
    snap = snapshot(workers=[worker(current_job="site1::j1")], jobs=[started(running=60)],
                    processes=[stranger(100, PY_LOOP)], stacks=[stacks(100, SLEEP)])
    diagnosis = diagnose(snap)
    assert not [f for f in diagnosis.findings if f.code.startswith("RQD1")]
    assert not kill_commands(diagnosis.findings) and about_pid(diagnosis, 100) == []


def test_worker_hash_without_birth_still_needs_a_worker_command_line() -> None:
    w = WorkerInfo(name="w", key="rq:worker:w", hostname="here", pid=300, state="busy")
    diagnosis = diagnose(snapshot(workers=[w], processes=[stranger(300, SLEEP_ARGV)]))
    assert diagnosis.links.workers[0].location == "not-found"


# --- the recorded Frappe 15.54.1 incident -------------------------------------------------------------

INCIDENT = Path(__file__).parent / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"
INCIDENT_HORSES = {"3786cdbe": 18583, "6e7fe896": 18534, "6e9113e8": 18533, "a9faa580": 18544, "c57e0424": 18558,
                   "eca8b743": 18539, "rqd-filelock-wait": 18580}
"""Job id prefix (after ``rqd1.localhost::``) -> its horse pid, as checked on the live system (README)."""


def test_rqd110_near_miss_recorded_incident_every_job_in_its_live_horse() -> None:
    diagnosis = diagnose(load_snapshot(INCIDENT))
    assert {wl.location for wl in diagnosis.links.workers} == {"local"}
    runners = {jl.job.job_id.split("::", 1)[1][:len(prefix)]: (jl.runner.pid if jl.runner else None, jl.runner_role)
               for jl in diagnosis.links.jobs for prefix in INCIDENT_HORSES
               if jl.job.job_id.split("::", 1)[1].startswith(prefix)}
    assert runners == {prefix: (pid, "horse") for prefix, pid in INCIDENT_HORSES.items()}
    assert diagnosis.links.orphans == []
    assert not [f for f in diagnosis.findings if f.code in ("RQD110", "RQD201", "RQD107")]
    for f in diagnosis.findings:  # every kill command names the process it was checked against
        for command in kill_commands([f]):
            assert f"pid {f.pid} (started " in f.fix, (f.code, command)


def test_rqd201_fires_recorded_incident_worker_pid_now_a_stranger() -> None:
    snap = load_snapshot(INCIDENT)
    job = next(jl for jl in diagnose(snap).links.jobs if "3786cdbe" in jl.job.job_id)
    worker_pid = job.worker_process.pid  # type: ignore[union-attr]
    process = next(p for p in snap.processes if p.pid == worker_pid)  # the worker died, its pid was reused
    process.cmdline, process.worker_like = ["/usr/bin/python3", "backup.py"], False
    snap.processes = [p for p in snap.processes if p.pid != 18583 and p.ppid != 18583]  # its horse died too
    snap.stacks = [s for s in snap.stacks if s.pid != 18583]
    diagnosis = diagnose(snap)
    [wl] = [wl for wl in diagnosis.links.workers if wl.worker.pid == worker_pid]
    assert wl.location == "not-found" and wl.horse is None
    links = diagnosis.links
    assert links.job_for(links.local(18583)) is None and links.worker_for(links.local(worker_pid)) is None
    [finding] = [f for f in diagnosis.findings if f.code == "RQD201"]
    assert finding.pid is None and "runs: /usr/bin/python3 backup.py" in finding.evidence[0]
    assert not [f for f in diagnosis.findings if f.pid in (worker_pid, 18583)]
    assert not [c for c in kill_commands(diagnosis.findings) if str(worker_pid) in c or "18583" in c]


def test_rqd108_near_miss_horse_caught_before_it_became_a_process_group() -> None:
    # GIVEN a forking worker whose horse was read between fork() and setsid(): same argv, the worker's group
    snap = busy_bench(running=600, timeout=3000)
    horse = next(p for p in snap.processes if p.pid == 101)
    worker_process = next(p for p in snap.processes if p.pid == horse.ppid)
    horse.pgid, horse.sid = worker_process.pgid, worker_process.sid
    horse.cmdline = list(worker_process.cmdline)
    horse.worker_like = True
    diagnosis = diagnose(snap)
    # THEN it is not taken for a SimpleWorker running its job in the worker (no TERM advice for the worker)
    assert diagnosis.links.workers[0].kind == "fork"
    assert not [f for f in diagnosis.findings if f.code == "RQD108"]
    assert not [c for f in diagnosis.findings for c in f.commands if c == f"kill -TERM {worker_process.pid}"]


def test_rqd110_fires_untitled_horse_late_to_its_job_on_a_loaded_host() -> None:
    """started_at is written in the horse: on a loaded host 12 s after its fork, outside the 5 s match window."""
    horse = process(101, ppid=1, create_time=NOW - 72, cwd="/home/frappe/frappe-bench/sites")
    diagnosis = diagnose(orphan_bench(horse, bench_path="/home/frappe/frappe-bench"))
    links = diagnosis.links
    assert [p.pid for p in links.orphans] == [101] and links.unmatched == {links.local(101)}
    [finding] = [f for f in diagnosis.findings if f.code == "RQD110"]
    assert finding.remedy is None  # weaker evidence: named, with a manual command, but no --kill
    assert any("weaker evidence" in line and "12 s" in line and "site1::j1" in line for line in finding.evidence)
    assert not [f for f in diagnosis.findings if f.remedy is not None and f.remedy.action == "fail_started"]
    blocked = [f for f in diagnosis.findings if f.code in ("RQD201", "RQD503") and f.remedy is None]
    assert blocked and any("orphaned horse pid 101" in f.fix + " ".join(f.evidence) for f in blocked), \
        [(f.code, f.fix, f.evidence) for f in diagnosis.findings]
