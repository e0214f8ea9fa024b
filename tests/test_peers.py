"""Exact peers and file locks on hand-built and recorded snapshots (pure: no services)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rqdoctor.commands.common import load_snapshot
from rqdoctor.config import discover
from rqdoctor.diagnose.activity import classify, is_redis_port
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    Connection,
    FileLock,
    Frame,
    KnownEndpoint,
    LockFile,
    ProcessInfo,
    ProcessStacks,
    Snapshot,
    StackSample,
    ThreadStack,
    WaitFd,
)
from rqdoctor.probes.procfs import parse_lock_line, read_syscall, syscall_table

INCIDENT = Path(__file__).parent / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"
SP = "/home/frappe/frappe-bench/env/lib/python3.11/site-packages/"
APP = "/home/frappe/frappe-bench/apps/myapp/myapp/"
HTTP_JOB, FILELOCK_JOB = "rqd1.localhost::6e7fe896-59cd-4264-9f10-1b0f72f88585", "rqd1.localhost::rqd-filelock-wait"
TARPIT, CACHE, QUEUE = "127.0.0.1:18088", "127.0.0.1:16380", "127.0.0.1:16379"
SHARED = "/home/frappe/frappe-bench/sites/rqd1.localhost/locks/rqd_shared.lock"
MIGRATE = "/home/frappe/frappe-bench/sites/rqd1.localhost/locks/bench_migrate.lock"


@pytest.fixture
def incident() -> Snapshot:
    return load_snapshot(INCIDENT)


def waits(kind: str) -> list[Frame]:
    """A job's main thread waiting in ``kind`` (http, smtp, redis, db)."""
    inner = {
        "http": Frame("HTTPConnection.getresponse", SP + "urllib3/connectionpool.py", 537),
        "smtp": Frame("SMTP.getreply", "/usr/lib/python3.11/smtplib.py", 398),
        "redis": Frame("Connection.read_response", SP + "redis/connection.py", 500),
        "db": Frame("Connection._read_packet", SP + "pymysql/connections.py", 748),
    }[kind]
    return [inner, Frame("run", APP + "jobs.py", 10), Frame("Job.perform", SP + "rq/job.py", 1278)]


def one(frames: list[Frame], **thread: object) -> ProcessStacks:
    main = ThreadStack(thread_id=1, name="MainThread", frames=frames, **thread)  # type: ignore[arg-type]
    return ProcessStacks(pid=100, samples=[StackSample(taken_at=1.0, threads=[main])])


def horse(*raddrs: str, fds: bool = True) -> ProcessInfo:
    conns = [Connection(f"127.0.0.1:{40000 + i}", r, "ESTABLISHED", 10 + i if fds else None)
             for i, r in enumerate(raddrs)]
    return ProcessInfo(pid=100, ppid=50, connections=conns)


def known(*pairs: tuple[str, str]) -> list[KnownEndpoint]:
    return [KnownEndpoint(address, role) for address, role in pairs]


# --- the recorded incident ----------------------------------------------------------------


def test_incident_http_job_peer_is_the_tarpit_not_a_redis_port(incident: Snapshot) -> None:
    """No syscall facts, target Redis 16379, cache 16380 unknown to the config: the worker parent's links decide."""
    diagnosis = diagnose(incident)
    a = diagnosis.activities[diagnosis.links.local(18534)]
    assert a.peer in (TARPIT, None), a
    assert a.peer == TARPIT and not a.peer_exact and a.detail.startswith(f"waiting for HTTP response from {TARPIT}")
    rqd103 = next(f for f in diagnosis.findings if f.code == "RQD103" and f.job_id == HTTP_JOB)
    assert CACHE not in " ".join(rqd103.evidence)


def test_incident_http_job_without_its_worker_parent_is_honestly_ambiguous(incident: Snapshot) -> None:
    incident.processes = [p for p in incident.processes if p.pid != 17434]
    again = diagnose(incident)
    a = again.activities[again.links.local(18534)]
    assert a.peer is None and a.peer_candidates == [CACHE, TARPIT]
    assert f"one of {CACHE}, {TARPIT}" in a.detail


def test_rqd112_fires_recorded_incident_filelock_job_without_the_thread_deadlock_fix(incident: Snapshot) -> None:
    diagnosis = diagnose(incident)
    found = [f for f in diagnosis.findings if f.job_id == FILELOCK_JOB]
    assert [f.code for f in found] == ["RQD112"]
    assert "fork" not in found[0].fix and "not seen" in found[0].evidence[-1]


def _with_holder(snapshot: Snapshot, holder: int = 18453) -> Snapshot:
    """The incident as the live probe sees it now: the waiter blocked in flock(), /proc/locks naming the holder."""
    path = SHARED
    locks = [FileLock(holder, "FLOCK", "WRITE", cmdline=["bench", "execute", "rqdtest.hold"], create_time=1.8e9),
             FileLock(18580, "FLOCK", "WRITE", blocked=True)]
    stacks = next(s for s in snapshot.stacks if s.pid == 18580)
    for sample in stacks.samples:
        for t in sample.threads:
            t.syscall, t.wait_fds, t.wait_fds_exact = "flock", [WaitFd(7, path, 4242, "fd:00", locks)], True
    return snapshot


def test_rqd112_fires_with_the_holder_named_from_proc_locks(incident: Snapshot) -> None:
    diagnosis = diagnose(_with_holder(incident))
    finding = next(f for f in diagnosis.findings if f.job_id == FILELOCK_JOB)
    assert finding.code == "RQD112" and finding.data["holders"] == [18453]
    detail = diagnosis.activities[diagnosis.links.local(18580)].detail
    assert detail == f"waiting for a file lock on {SHARED} (filelock)"
    assert any("held by pid 18453" in line and "bench execute rqdtest.hold" in line for line in finding.evidence)
    assert "kill -TERM 18453" in finding.commands and "pid 18453 (started" in finding.fix
    assert "fork" not in finding.fix


def test_rqd112_fires_no_holder_in_proc_locks_says_so(incident: Snapshot) -> None:
    snapshot = _with_holder(incident)
    for sample in next(s for s in snapshot.stacks if s.pid == 18580).samples:
        sample.threads[0].wait_fds[0].locks = []
    finding = next(f for f in diagnose(snapshot).findings if f.job_id == FILELOCK_JOB)
    assert finding.code == "RQD112" and "no holder" in finding.evidence[-1] and not finding.commands


def _polling(snapshot: Snapshot, *paths: str, local: str | None = None) -> Snapshot:
    """The incident's polling filelock as the live probe records it: held lock files of the bench, no fd."""
    stacks = next(s for s in snapshot.stacks if s.pid == 18580)
    for sample in stacks.samples:
        t = sample.threads[0]
        t.syscall = "clock_nanosleep"
        t.lock_files = [LockFile(p, 4000 + i, "fd:00", [FileLock(18453 + i, "FLOCK", "WRITE", cmdline=["bench"])])
                        for i, p in enumerate(paths)]
        if local:
            t.frames[0].locals = {"lock_filename": repr(local), "poll_interval": "0.05"}
    return snapshot


def test_rqd112_fires_polling_filelock_with_the_only_held_lock_file(incident: Snapshot) -> None:
    finding = next(f for f in diagnose(_polling(incident, SHARED)).findings if f.job_id == FILELOCK_JOB)
    assert finding.code == "RQD112" and finding.data["holders"] == [18453]
    assert any(line.startswith(f"lock file {SHARED}") and "likely" in line for line in finding.evidence)


def test_rqd112_fires_polling_filelock_named_by_its_locals(incident: Snapshot) -> None:
    snapshot = _polling(incident, MIGRATE, SHARED, local=SHARED)
    finding = next(f for f in diagnose(snapshot).findings if f.job_id == FILELOCK_JOB)
    assert finding.data["lock_file"] == SHARED and finding.data["holders"] == [18454]


def test_rqd112_fires_polling_filelock_with_no_bench_lock_held_says_so(incident: Snapshot) -> None:
    finding = next(f for f in diagnose(_polling(incident)).findings if f.job_id == FILELOCK_JOB)
    assert finding.code == "RQD112" and "no lock file of the bench" in finding.evidence[-1]


def test_rqd112_near_miss_several_held_lock_files_names_no_holder(incident: Snapshot) -> None:
    """Two lock files held and nothing says which one it polls: no pid is singled out, nothing to kill."""
    finding = next(f for f in diagnose(_polling(incident, MIGRATE, SHARED)).findings if f.job_id == FILELOCK_JOB)
    assert finding.code == "RQD112" and not any(c.startswith("kill") for c in finding.commands)
    assert f"one of: {MIGRATE}, {SHARED}" in finding.evidence[-1]


def test_rqd112_near_miss_thread_lock_keeps_rqd106(incident: Snapshot) -> None:
    """A threading lock wait looks alike but is no file lock: RQD106 with its fix, no RQD112."""
    for sample in next(s for s in incident.stacks if s.pid == 18580).samples:
        frames = sample.threads[0].frames
        frames[:4] = [Frame("Thread.join", "/usr/lib/python3.11/threading.py", 1112, code="self._tstate_lock()")]
    found = [f.code for f in diagnose(incident).findings if f.job_id == FILELOCK_JOB]
    assert found == ["RQD106"]


def test_rqd112_near_miss_young_file_lock_wait(incident: Snapshot) -> None:
    """A job that has waited less than --min-age for a file lock is normal (a migrate's lock is held briefly)."""
    found = [f.code for f in diagnose(_with_holder(incident), min_age_s=60).findings if f.job_id == FILELOCK_JOB]
    assert "RQD112" not in found


def test_rqd106_near_miss_file_lock_wait(incident: Snapshot) -> None:
    """The filelock job no longer gets RQD106's thread-deadlock-across-fork fix."""
    assert "RQD106" not in [f.code for f in diagnose(_with_holder(incident)).findings if f.job_id == FILELOCK_JOB]


# --- _peer on hand-built facts ------------------------------------------------------------


def test_exact_peer_from_the_blocked_fd_beats_every_rule() -> None:
    # GIVEN a Redis-looking port the job really reads from, besides the tarpit
    process = horse("127.0.0.1:6379", TARPIT)
    stacks = one(waits("http"), syscall="recvfrom", wait_fds=[WaitFd(10, "socket:[99]", 99)], wait_fds_exact=True)
    a = classify(stacks, process)
    assert (a.peer, a.peer_exact) == ("127.0.0.1:6379", True)


def test_poll_set_narrows_then_elimination_decides() -> None:
    process = horse(QUEUE, CACHE, TARPIT, "10.0.0.5:443")
    fds = [WaitFd(11, "socket:[1]", 1), WaitFd(12, "socket:[2]", 2)]
    stacks = one(waits("http"), syscall="poll", wait_fds=fds, wait_fds_exact=True)
    a = classify(stacks, process, known=known((CACHE, "redis_cache")))
    assert (a.peer, a.peer_exact) == (TARPIT, False)


def test_http_peer_excludes_every_known_endpoint() -> None:
    process = horse(CACHE, TARPIT, QUEUE, "127.0.0.1:16381", "127.0.0.1:3306")
    endpoints = known((QUEUE, "redis_queue"), (CACHE, "redis_cache"), ("127.0.0.1:16381", "redis_socketio"),
                      ("127.0.0.1:3306", "db"))
    for _ in range(20):  # psutil's order is arbitrary; so is this list's
        a = classify(one(waits("http")), process, known=endpoints)
        assert (a.peer, a.peer_candidates) == (TARPIT, [])
        process.connections.reverse()


def test_http_peer_ambiguous_says_so_and_names_none() -> None:
    process = horse(QUEUE, TARPIT, "10.0.0.5:443")
    a = classify(one(waits("http")), process, known=known((QUEUE, "redis_queue")))
    assert a.peer is None and a.peer_candidates == ["10.0.0.5:443", TARPIT]
    assert a.detail.startswith(f"waiting for HTTP response from one of 10.0.0.5:443, {TARPIT}")


def test_smtp_peer_prefers_smtp_port_among_unknowns() -> None:
    process = horse(QUEUE, "10.0.0.9:587", "10.0.0.5:443")
    a = classify(one(waits("smtp")), process, known=known((QUEUE, "redis_queue")))
    assert a.peer == "10.0.0.9:587" and "SMTP server 10.0.0.9:587" in a.detail


def test_redis_wait_peer_is_a_redis_endpoint_even_on_odd_ports() -> None:
    assert not is_redis_port(16380)
    process = horse(TARPIT, CACHE)
    a = classify(one(waits("redis")), process, known=known((QUEUE, "redis_queue"), (CACHE, "redis_cache")))
    assert a.peer == CACHE


def test_redis_wait_between_two_bench_redis_servers_is_ambiguous() -> None:
    process = horse(QUEUE, CACHE, TARPIT)
    a = classify(one(waits("redis")), process, known=known((QUEUE, "redis_queue"), (CACHE, "redis_cache")))
    assert a.peer is None and a.peer_candidates == [QUEUE, CACHE]


def test_db_wait_peer_is_a_db_endpoint() -> None:
    process = horse(QUEUE, "10.0.0.7:3307", TARPIT)
    a = classify(one(waits("db")), process, known=known((QUEUE, "redis_queue"), ("10.0.0.7:3307", "db")))
    assert a.peer == "10.0.0.7:3307"
    assert classify(one(waits("db")), horse(QUEUE, TARPIT), known=known((QUEUE, "redis_queue"))).peer is None


def test_old_snapshot_without_fds_never_trusts_the_fd() -> None:
    process = horse("127.0.0.1:6379", TARPIT, fds=False)
    stacks = one(waits("http"), syscall="recvfrom", wait_fds=[WaitFd(10, "socket:[9]", 9)], wait_fds_exact=True)
    assert classify(stacks, process).peer == TARPIT


# --- procfs decoding ----------------------------------------------------------------------


def test_proc_locks_lines() -> None:
    dev, inode, lock = parse_lock_line("3: FLOCK  ADVISORY  WRITE 18453 fd:00:4242 0 EOF")  # type: ignore[misc]
    assert (dev, inode, lock.pid, lock.kind, lock.access, lock.blocked) == ("fd:00", 4242, 18453, "FLOCK", "WRITE",
                                                                           False)
    blocked = parse_lock_line("3: -> FLOCK  ADVISORY  WRITE 18580 fd:00:4242 0 EOF")
    assert blocked is not None and blocked[2].blocked and blocked[2].pid == 18580
    assert parse_lock_line("4: LEASE  ACTIVE    READ  1 08:01:5 0 EOF") is None


def test_syscall_tables_and_states() -> None:
    assert syscall_table("x86_64")[45] == ("recvfrom", "fd") and syscall_table("aarch64")[207] == ("recvfrom", "fd")
    assert syscall_table("aarch64")[32][0] == "flock" and syscall_table("sparc") == {}
    assert read_syscall(1, ["running"]) is not None and read_syscall(1, ["running"]).name == "running"  # type: ignore[union-attr]
    none = read_syscall(1, ["-1", "0x7ffd", "0x7f00"])
    assert none is not None and none.name == "none" and not none.fds
    sleep = read_syscall(1, ["230", "0x1", "0x0", "0x7ffd", "0x0", "0x0", "0x0", "0x7ffd", "0x7f00"], "x86_64")
    assert sleep is not None and (sleep.name, sleep.fds, sleep.exact) == ("clock_nanosleep", [], False)


def test_incident_snapshot_is_the_shared_fixture() -> None:
    shared = Path("/work/shared/fixtures/frappe-15.54.1-incident/hangs-site-account.json")
    if shared.exists():
        assert shared.read_bytes() == INCIDENT.read_bytes()


def test_snapshot_round_trips_new_fields(incident: Snapshot) -> None:
    snapshot = _with_holder(copy.deepcopy(incident))
    snapshot.target.endpoints = known((QUEUE, "redis_queue"))
    assert Snapshot.from_dict(snapshot.to_dict()) == snapshot


def test_target_names_the_bench_redis_servers_from_common_site_config(tmp_path: Path) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "common_site_config.json").write_text(
        '{"redis_queue": "redis://:pw@localhost:16379", "redis_cache": "redis://127.0.0.1:16380", '
        '"redis_socketio": "unix:///run/redis.sock"}')
    info = discover(bench=str(tmp_path), env={}, scan_processes=False).info()
    assert [(e.address, e.role) for e in info.endpoints] == [("127.0.0.1:16379", "redis_queue"),
                                                             ("127.0.0.1:16380", "redis_cache")]
    assert "pw" not in repr(info.endpoints)
