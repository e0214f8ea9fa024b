"""RQD103/105/106/109/113 on hand-built snapshots: severe verdicts only with positive evidence of no progress."""

from __future__ import annotations

from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    Frame,
    IoCounters,
    JobInfo,
    ProcessInfo,
    ProcessStacks,
    RedisState,
    Snapshot,
    StackSample,
    TargetInfo,
    ThreadStack,
    WorkerInfo,
)

NOW = 1_800_000_000.0
APP = "/home/frappe/frappe-bench/apps/app/app/jobs.py"
STD = "/usr/lib/python3.11/"
SP = "/home/frappe/frappe-bench/env/lib/python3.11/site-packages/"
POLL_LOOP = ["while cache.get(key):", "    time.sleep(0.2)"]
SAVE_LOOP = ["while True:", "    doc.insert()", "    frappe.db.commit()", "    time.sleep(0.2)"]


def sample(i: int, frames: list[Frame], cpu: float, woke: int | None, syscalls: int = 0,
           active: bool = False) -> StackSample:
    thread = ThreadStack(thread_id=1, name="MainThread", frames=frames, os_thread_id=101, active=active,
                         wchan="0" if active else "do_sys_poll")
    io = None if woke is None else IoCounters(syscr=10 + syscalls, syscw=5, rchar=100 + syscalls * 64, wchar=20,
                                              read_bytes=0, write_bytes=0)
    return StackSample(NOW - 1 + 0.25 * i, [thread], cpu_time=cpu, io=io, voluntary_ctx_switches=woke,
                       involuntary_ctx_switches=None if woke is None else 2)


def bench(frames: list[Frame], cpu: list[float], woke: list[int] | None = None, syscalls: list[int] | None = None,
          active: bool = False, running: float = 60) -> Snapshot:
    """One horse (pid 101) of worker w1 running job j1, sampled five times over 1 s."""
    samples = [sample(i, frames, cpu[i], woke[i] if woke else None, (syscalls or [0] * 5)[i], active)
               for i in range(5)]
    worker = WorkerInfo(name="w1", key="rq:worker:w1", hostname="here", pid=100, state="busy", queues=["short"],
                        current_job="site1::j1", birth=NOW - 3600, last_heartbeat=NOW - 5, ttl=90, version="1.15.1")
    job = JobInfo(job_id="site1::j1", queue="short", status="started", started_at=NOW - running, timeout=900,
                  worker_name="w1", registry_expires_at=NOW + 60, method="app.jobs.work", site="site1")
    procs = [ProcessInfo(pid=pid, ppid=ppid, pgid=pgid, sid=pgid, create_time=NOW - 4000, status="sleeping",
                         cmdline=["python", "-m", "frappe.utils.bench_helper", "frappe", "worker"], worker_like=True)
             for pid, ppid, pgid in ((100, 1, 100), (101, 100, 101))]
    return Snapshot(host="here", generated_at=NOW, target=TargetInfo("redis://127.0.0.1:6379", "default"),
                    redis=RedisState(server_time=NOW, workers=[worker], jobs=[job]), processes=procs,
                    stacks=[ProcessStacks(pid=101, samples=samples)])


def found(snapshot: Snapshot) -> dict[str, list[str]]:
    return {f.code: f.evidence for f in diagnose(snapshot).findings if f.job_id == "site1::j1"}


def app(line: int, code: str, loop: list[str] | None = None) -> list[Frame]:
    return [Frame("work", APP, line, code=code, loop=loop)]


SOCKET = [Frame("SocketIO.readinto", STD + "socket.py", 706), *app(12, "data = conn.recv(4096)")]
FLAT = [1.0] * 5


def test_rqd103_fires_socket_read_that_never_wakes() -> None:
    evidence = found(bench(SOCKET, FLAT, woke=[4] * 5))["RQD103"]
    assert "the thread never woke up: one call for the whole window" in evidence
    assert "0 voluntary context switches of the thread (each real wait adds one)" in evidence


def test_rqd103_near_miss_streaming_read() -> None:
    """Same stack and no CPU, but the thread wakes up: the reads return, data is flowing."""
    assert not {"RQD103", "RQD109"} & set(found(bench(SOCKET, FLAT, woke=[4, 6, 9, 11, 14])))


def test_rqd105_near_miss_work_between_naps() -> None:
    """On CPU in one function in every sample, but it sleeps between bursts: work, not a spin."""
    hot = app(30, "digest = hashlib.sha256(digest).digest()")
    cpu = [1.0, 1.15, 1.3, 1.45, 1.6]
    assert "RQD105" in found(bench(hot, cpu, woke=[4] * 5, active=True))
    assert "RQD105" not in found(bench(hot, cpu, woke=[4, 14, 24, 34, 44], active=True))


def test_rqd106_fires_poll_loop() -> None:
    evidence = found(bench(app(2, "time.sleep(0.2)", POLL_LOOP), FLAT, woke=[4, 6, 8, 10, 12]))["RQD106"]
    assert "progress: blocked" in evidence
    assert any("which only re-checks `cache.get(key)` and sleeps" in e for e in evidence)


def test_rqd106_near_miss_loop_doing_work_between_sleeps() -> None:
    codes = found(bench(app(4, "time.sleep(0.2)", SAVE_LOOP), FLAT, woke=[4, 7, 10, 13, 16]))
    assert list(codes) == ["RQD113"]
    assert "sleeping 0.2 s at a time: not a lock wait and not a hang by itself" in codes["RQD113"]


def test_rqd106_near_miss_poll_loop_doing_file_io() -> None:
    """The loop text only polls, but the process reads and writes files meanwhile: not provably idle."""
    codes = found(bench(app(2, "time.sleep(0.2)", POLL_LOOP), FLAT, woke=[4, 6, 8, 10, 12], syscalls=[0, 3, 6, 9, 12]))
    assert "RQD106" not in codes


def test_rqd109_fires_one_long_sleep() -> None:
    evidence = found(bench(app(7, "time.sleep(600)", []), FLAT, woke=[4] * 5))["RQD109"]
    assert evidence[2] == "sleeping 600 s in one sleep call"


def test_rqd109_near_miss_sleep_without_proof_of_one_call() -> None:
    """``time.sleep(seconds)``, no counters: one long sleep or a loop of short ones? Only RQD113 (info)."""
    codes = found(bench(app(7, "time.sleep(seconds)"), FLAT))
    assert list(codes) == ["RQD113"]


def test_rqd113_fires_sleep_loop() -> None:
    assert "RQD113" in found(bench(app(7, "time.sleep(1)", []), FLAT, woke=[4, 5, 6, 6, 7]))


def test_rqd113_near_miss_progressing_loop() -> None:
    """Sleeps, but uses CPU between sleeps: progressing, no finding at all."""
    cpu = [1.0, 1.05, 1.1, 1.15, 1.2]
    assert found(bench(app(4, "time.sleep(0.2)", SAVE_LOOP), cpu, woke=[4, 7, 10, 13, 16])) == {}
