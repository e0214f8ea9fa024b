"""Stack classification: recorded Frappe dumps, hand-written stacks for every kind, progress."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from rqdoctor.commands.common import load_snapshot
from rqdoctor.diagnose.activity import (
    BLOCKED_MAX_CPU_PERCENT,
    KIND_DB_LOCK_WAIT,
    KINDS,
    SPINNING_MIN_CPU_PERCENT,
    Activity,
    classify,
    classify_threads,
    cpu_percent,
    is_library_frame,
    judge_progress,
    main_thread,
    where,
)
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    Connection,
    Frame,
    IoCounters,
    ProcessInfo,
    ProcessStacks,
    StackSample,
    ThreadStack,
    from_plain,
)
from rqdoctor.probes.stacks import parse_dump

DATA = Path(__file__).parent / "data" / "frappe-15.54.1"
SP = "/home/frappe/frappe-bench/env/lib/python3.11/site-packages/"
STD = "/usr/lib/python3.11/"
FRAPPE = "/home/frappe/frappe-bench/apps/frappe/frappe/"
APP = "/home/frappe/frappe-bench/apps/myapp/myapp/"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


# --- helpers ------------------------------------------------------------------------------


def fr(name: str, path: str, line: int = 10, code: str | None = None, **kw: Any) -> Frame:
    """A frame; native when ``path`` is a shared object."""
    native = ".so" in path
    return Frame(name, path, 0 if native else line, module=path if native else None, code=code, **kw)


def job(*inner: Frame, code: str | None = None) -> list[Frame]:
    """``inner`` frames on top of an application job function and the rq horse below it."""
    return [
        *inner,
        fr("run_report", APP + "reports.py", 42, code),
        fr("execute_job", FRAPPE + "utils/background_jobs.py", 222),
        fr("Job.perform", SP + "rq/job.py", 1278),
        fr("Worker.perform_job", SP + "rq/worker.py", 1428),
    ]


def thread(frames: list[Frame], name: str | None = "MainThread", tid: int = 1, **kw: Any) -> ThreadStack:
    return ThreadStack(thread_id=tid, name=name, frames=frames, **kw)


def stacks(*samples: list[ThreadStack], cpu: list[float] | None = None, step: float = 0.4) -> ProcessStacks:
    """Samples ``step`` seconds apart, with process CPU times ``cpu`` (None: unknown)."""
    return ProcessStacks(
        pid=100,
        samples=[
            StackSample(taken_at=1000.0 + i * step, threads=threads, cpu_time=cpu[i] if cpu else None)
            for i, threads in enumerate(samples)
        ],
    )


def proc(*raddrs: str, pid: int = 100) -> ProcessInfo:
    conns = [Connection(f"127.0.0.1:{40000 + i}", raddr, "ESTABLISHED") for i, raddr in enumerate(raddrs)]
    return ProcessInfo(pid=pid, connections=conns)


# --- recorded Frappe 15.54.1 dumps --------------------------------------------------------


@pytest.fixture(scope="module")
def recorded() -> dict[int, tuple[ProcessStacks, ProcessInfo, list[ProcessInfo]]]:
    """Each recorded dump as a one-sample ProcessStacks, with its recorded process and children."""
    raw = json.loads((DATA / "state.json").read_text())["processes"]
    infos = {
        p["pid"]: ProcessInfo(
            pid=p["pid"], ppid=p["ppid"], pgid=p["pgid"], cmdline=p["cmdline"], status=p["status"],
            connections=[Connection(**c) for c in p["tcp"]],
        )
        for p in raw
    }  # fmt: skip
    out = {}
    for path in DATA.glob("pyspy-*.json"):
        pid = int(path.stem.rsplit("-", 1)[1])
        sample = StackSample(taken_at=0.0, threads=parse_dump(json.loads(path.read_text())))
        children = [p for p in infos.values() if p.ppid == pid]
        out[pid] = (ProcessStacks(pid=pid, samples=[sample]), infos[pid], children)
    return out


def test_recorded_lock_wait_horse_is_a_db_query_on_3306(recorded: dict) -> None:
    a = classify(*recorded[19307])
    assert (a.kind, a.peer, a.evidence) == ("db_query", "127.0.0.1:3306", "frames")
    assert a.detail == "waiting for a MariaDB/MySQL query result from 127.0.0.1:3306 (PyMySQL)"
    assert a.where is not None and (a.where.name, a.where.line) == ("lock_wait", 19)
    assert a.thread_name == "MainThread" and a.progress == "unknown" and a.samples == 1


def test_recorded_hold_lock_horse_sleeps(recorded: dict) -> None:
    """``time.sleep`` is a C call: no frame shows it; an idle thread parked in app code is taken for a sleep."""
    a = classify(*recorded[19302])
    assert (a.kind, a.evidence, a.peer) == ("sleep", "inferred", None)
    assert "probably time.sleep" in a.detail
    assert a.where is not None and (a.where.name, a.where.line) == ("hold_lock", 26)


@pytest.mark.parametrize(("worker", "horse"), [(18622, 19307), (18619, 19302)])
def test_recorded_worker_parent_waiting_for_its_horse_is_idle(recorded: dict, worker: int, horse: int) -> None:
    """The parent's wait4 on its horse is rq's monitor loop: idle for the worker itself."""
    activities = classify_threads(*recorded[worker])
    assert len(activities) == 1, "rq's pubsub thread is housekeeping"
    (a,) = activities
    assert (a.kind, a.child_pid, a.thread_name) == ("idle", horse, "MainThread")
    assert a.detail == f"worker waiting for its work-horse pid {horse} to finish"
    assert a.where is not None and a.where.name == "Worker.wait_for_horse"


def test_main_thread_is_mainthread_even_when_listed_second(recorded: dict) -> None:
    stacks_, _, _ = recorded[18622]
    assert [t.name for t in stacks_.samples[0].threads] == ["Thread-1", "MainThread"]
    main = main_thread(stacks_)
    assert main is not None and main.name == "MainThread"


# --- every kind from hand-written stacks ---------------------------------------------------

PUBSUB = thread([fr("PubSubWorkerThread.run", SP + "redis/client.py")], name="Thread-1", tid=2)
TCP = ("127.0.0.1:11000", "127.0.0.1:13000", "127.0.0.1:3306")
CHILD = ProcessInfo(pid=123, ppid=100, cmdline=["wkhtmltopdf", "--quiet", "in.html", "out.pdf"], status="sleeping")

MARIADB = "/usr/lib/libmariadb.so.3"
LIBPY = "/usr/lib/libpython3.11.so.1.0"
SQL = fr("MariaDBDatabase.sql", FRAPPE + "database/database.py", 230)
READINTO = fr("SocketIO.readinto", STD + "socket.py", 706)
SSL_RECV = fr("SSLSocket.recv_into", STD + "ssl.py", 1311)
NO_TIMEOUT = {"self": "<HTTPAdapter at 0x1>", "timeout": "None"}


def case(name: str, frames: list[Frame], kind: str, peer: str | None, detail: str, **opts: Any) -> Any:
    return pytest.param(frames, opts, kind, peer, detail, id=name)


CASES = [
    case("mysqlclient-v16", job(
        fr("BaseCursor._query", SP + "MySQLdb/cursors.py", 319), fr("BaseCursor.execute", SP + "MySQLdb/cursors.py"),
        SQL,
    ), "db_query", "127.0.0.1:3306", "MariaDB/MySQL query result from 127.0.0.1:3306 (mysqlclient)", proc=proc(*TCP)),
    case("mysqlclient-native", job(
        fr("recv", LIBC), fr("pvio_socket_read", MARIADB), fr("ma_net_safe_read", MARIADB),
        fr("mysql_real_query", MARIADB), fr("BaseCursor._query", SP + "MySQLdb/cursors.py", 319),
    ), "db_query", "127.0.0.1:3306", "(mysqlclient)", proc=proc(*TCP)),
    case("psycopg3", job(
        fr("BaseConnection.wait", SP + "psycopg/connection.py", 960), fr("Cursor.execute", SP + "psycopg/cursor.py"),
    ), "db_query", "10.0.0.9:5432", "PostgreSQL query result from 10.0.0.9:5432 (psycopg)",
        proc=proc("127.0.0.1:6379", "10.0.0.9:5432")),
    case("psycopg2-through-frappe.db", job(
        fr("Database.sql", FRAPPE + "database/database.py"),
        fr("PostgresDatabase.sql", FRAPPE + "database/postgres/database.py"),
    ), "db_query", "127.0.0.1:5432", "PostgreSQL query result from 127.0.0.1:5432 (frappe.db)",
        proc=proc("127.0.0.1:13000", "127.0.0.1:5432")),
    case("requests-no-timeout", job(
        READINTO, fr("HTTPResponse._read_status", STD + "http/client.py"),
        fr("HTTPResponse.begin", STD + "http/client.py"),
        fr("HTTPConnectionPool._make_request", SP + "urllib3/connectionpool.py"),
        fr("HTTPConnectionPool.urlopen", SP + "urllib3/connectionpool.py"),
        fr("HTTPAdapter.send", SP + "requests/adapters.py", locals=NO_TIMEOUT),
        fr("Session.send", SP + "requests/sessions.py"), fr("get", SP + "requests/api.py"),
    ), "http", "127.0.0.1:8081", "waiting for HTTP response from 127.0.0.1:8081 (requests, no timeout)",
        proc=proc(*TCP, "127.0.0.1:8081")),
    case("urllib-request", job(
        READINTO, fr("HTTPResponse.begin", STD + "http/client.py"),
        fr("AbstractHTTPHandler.do_open", STD + "urllib/request.py"), fr("urlopen", STD + "urllib/request.py"),
    ), "http", "93.184.216.34:80", "(urllib.request)", proc=proc("127.0.0.1:6379", "93.184.216.34:80")),
    case("smtplib", job(
        SSL_RECV, READINTO, fr("SMTP.getreply", STD + "smtplib.py"), fr("SMTP.ehlo", STD + "smtplib.py"),
        fr("SMTPServer.session", FRAPPE + "email/smtp.py"),
    ), "smtp", "10.0.0.5:587", "waiting on SMTP server 10.0.0.5:587 (smtplib)",
        proc=proc(*TCP, "10.1.1.1:443", "10.0.0.5:587")),
    case("imaplib", job(
        fr("SSLSocket.read", STD + "ssl.py"), fr("IMAP4._get_line", STD + "imaplib.py"),
        fr("IMAP4._get_response", STD + "imaplib.py"), fr("IMAP4.select", STD + "imaplib.py"),
    ), "imap", "10.0.0.6:993", "waiting on IMAP server 10.0.0.6:993 (imaplib)", proc=proc(*TCP, "10.0.0.6:993")),
    case("redis-py", job(
        fr("SocketBuffer._read_from_socket", SP + "redis/_parsers/socket.py"),
        fr("AbstractConnection.read_response", SP + "redis/connection.py"),
        fr("Redis.execute_command", SP + "redis/client.py"),
        fr("RedisWrapper.get_value", FRAPPE + "utils/redis_wrapper.py"),
    ), "redis", "127.0.0.1:13000", "waiting for a Redis reply from 127.0.0.1:13000 (redis-py)",
        proc=proc("127.0.0.1:3306", "127.0.0.1:13000")),
    case("bare-socket", job(SSL_RECV), "socket", "203.0.113.7:9000", "from 203.0.113.7:9000 (socket)",
         proc=proc(*TCP, "203.0.113.7:9000")),
    case("recv-in-app-code", job(code="data = conn.recv(4096)"), "socket", "203.0.113.7:9000",
         "blocked in a socket call", proc=proc(*TCP, "203.0.113.7:9000")),
    case("subprocess-run", job(
        fr("Popen._try_wait", STD + "subprocess.py"), fr("Popen.wait", STD + "subprocess.py"),
        fr("Popen.communicate", STD + "subprocess.py"), fr("run", STD + "subprocess.py"),
    ), "subprocess", None, "waiting on child pid 123 `wkhtmltopdf --quiet in.html out.pdf`", children=[CHILD]),
    case("os-waitpid-in-app-code", job(code="pid, status = os.waitpid(child, 0)"), "subprocess", None,
         "waiting on child pid 123", children=[CHILD]),
    case("wait4-wchan", job(), "subprocess", None, "child pid 123", children=[CHILD], wchan="do_wait"),
    case("thread-join", job(
        fr("Thread._wait_for_tstate_lock", STD + "threading.py"), fr("Thread.join", STD + "threading.py"),
    ), "lock", None, "waiting for a thread to finish (Thread.join) (threading)"),
    case("queue-get", job(fr("Condition.wait", STD + "threading.py"), fr("Queue.get", STD + "queue.py")),
         "lock", None, "waiting for an item from a queue (queue.get) (queue)"),
    case("event-wait", job(fr("Condition.wait", STD + "threading.py"), fr("Event.wait", STD + "threading.py")),
         "lock", None, "threading Condition/Event"),
    case("multiprocessing-lock", job(fr("SemLock.__enter__", STD + "multiprocessing/synchronize.py")),
         "lock", None, "multiprocessing"),
    case("filelock", job(fr("BaseFileLock.acquire", SP + "filelock/_api.py")), "lock", None, "file lock"),
    case("lock-acquire-in-app-code", job(code="LOCK.acquire()"), "lock", None, "waiting to acquire a lock"),
    case("futex-wchan", job(), "lock", None, "waiting to acquire a lock", wchan="futex_wait_queue"),
    case("sleep-source", job(code="time.sleep(600)"), "sleep", None, "sleeping (time.sleep)"),
    case("sleep-wchan", job(), "sleep", None, "sleeping", wchan="hrtimer_nanosleep"),
    case("sleep-native", job(fr("clock_nanosleep", LIBC), fr("time_sleep", LIBPY)), "sleep", None, "sleeping"),
    case("cpu-active", job(), "cpu", None, "on CPU", active=True, owns_gil=True),
    case("cpu-running-wchan", job(code="total += row.amount"), "cpu", None, "on CPU", wchan="0"),
    case("waiting-for-gil", job(fr("pthread_cond_timedwait", LIBC), fr("take_gil", LIBPY)), "cpu", None, "GIL"),
    case("unknown-library-c-call", job(fr("render", SP + "weasyprint/document.py")), "unknown", None,
         "no recognisable wait"),
]  # fmt: skip


@pytest.mark.parametrize(("frames", "opts", "kind", "peer", "detail"), CASES)
def test_kinds(frames: list[Frame], opts: dict[str, Any], kind: str, peer: str | None, detail: str) -> None:
    opts = dict(opts)
    process, children = opts.pop("proc", proc()), opts.pop("children", [])
    a = classify(stacks([thread(frames, **opts), PUBSUB]), process, children)
    assert (a.kind, a.peer) == (kind, peer)
    assert detail in a.detail
    if kind == "subprocess":
        assert a.child_pid == 123


def test_idle_worker_in_blocking_dequeue() -> None:
    frames = [
        fr("SocketBuffer._read_from_socket", SP + "redis/_parsers/socket.py", 65),
        fr("AbstractConnection.read_response", SP + "redis/connection.py", 1133),
        fr("BasicKeyCommands.blmove", SP + "redis/commands/core.py", 2072),
        fr("Queue.lmove", SP + "rq/queue.py", 1390),
        fr("Queue.dequeue_any", SP + "rq/queue.py", 1440),
        fr("BaseWorker.dequeue_job_and_maintain_ttl", SP + "rq/worker/base.py", 1173),
        fr("BaseWorker.work", SP + "rq/worker/base.py", 664),
        fr("worker", SP + "rq/cli/workers.py", 156),
        fr("<module>", "/home/frappe/frappe-bench/env/bin/rq", 8),
    ]
    a = classify(stacks([thread(frames)]), proc("127.0.0.1:3306", "127.0.0.1:6379"))
    assert (a.kind, a.peer) == ("idle", "127.0.0.1:6379")
    assert a.detail == "worker waiting for a job on Redis 127.0.0.1:6379"


def test_suspended_worker_is_idle() -> None:
    frames = [
        fr("BaseWorker.check_for_suspension", SP + "rq/worker/base.py", 1031),
        fr("BaseWorker.work", SP + "rq/worker/base.py", 600),
    ]
    a = classify(stacks([thread(frames)]))
    assert (a.kind, a.detail) == ("idle", "worker suspended")


def test_db_lock_wait_is_in_the_vocabulary() -> None:
    assert KIND_DB_LOCK_WAIT == "db_lock_wait" and KIND_DB_LOCK_WAIT in KINDS


# --- where in your code -------------------------------------------------------------------


def test_where_skips_libraries_and_frappe_wrappers() -> None:
    frames = [
        fr("Connection._read_packet", SP + "pymysql/connections.py"),
        fr("Database.sql", FRAPPE + "database/database.py"),
        fr("get_all", FRAPPE + "__init__.py"),
        fr("DatabaseQuery.execute", FRAPPE + "model/db_query.py"),
        fr("build_ledger", APP + "ledger.py", 77),
        fr("run_report", APP + "reports.py", 42),
    ]
    found = where(thread(frames))
    assert found is not None and (found.name, found.line) == ("build_ledger", 77)
    assert [is_library_frame(f) for f in frames] == [True, True, True, True, False, False]


def test_where_falls_back_to_the_innermost_python_frame() -> None:
    frames = [
        fr("wait4", LIBC),
        fr("Worker.wait_for_horse", SP + "rq/worker.py", 951),
        fr("_run_code", "<frozen runpy>"),
    ]
    found = where(thread(frames))
    assert found is not None and found.name == "Worker.wait_for_horse"


def test_console_scripts_and_frozen_modules_are_library_code() -> None:
    assert is_library_frame(fr("<module>", "/srv/env/bin/rq"))
    assert is_library_frame(fr("_run_module_as_main", "<frozen runpy>"))
    assert not is_library_frame(fr("<module>", "<string>"))


# --- polling loops ------------------------------------------------------------------------


def _poll_loop(step: str) -> list[Frame]:
    app = fr("wait_for_lock", APP + "locks.py", 12 if step == "get" else 14,
             "while cache.get(key):" if step == "get" else "time.sleep(0.2)")  # fmt: skip
    inner = [
        fr("AbstractConnection.read_response", SP + "redis/connection.py"),
        fr("Redis.get", SP + "redis/client.py"),
    ]
    return [*(inner if step == "get" else []), app, fr("execute_job", FRAPPE + "utils/background_jobs.py")]


def test_loop_alternating_redis_get_and_sleep_is_a_polling_sleep() -> None:
    """The other samples all re-check the ``while`` condition: nothing else happens in the loop."""
    samples = [[thread(_poll_loop(step))] for step in ("sleep", "get", "sleep")]
    a = classify(stacks(*samples, cpu=[1.0, 1.001, 1.002]), proc("127.0.0.1:13000"))
    assert (a.kind, a.polling, a.progress) == ("sleep", True, "blocked")
    assert a.detail == "polling loop: sleeps between redis calls"
    assert a.where is not None and a.where.name == "wait_for_lock"
    assert "every other sample re-checks `while cache.get(key):`" in a.progress_evidence[-1]


def test_short_sleep_seen_in_every_sample_without_loop_source_is_only_sleeping() -> None:
    """Re-entered 0.2 s sleep, but neither the loop's source nor counters say it only waits: sleeping."""
    samples = [[thread(_poll_loop("sleep"))] for _ in range(3)]
    a = classify(stacks(*samples, cpu=[1.0, 1.0, 1.0]))
    assert (a.kind, a.polling, a.progress, a.sleep_s) == ("sleep", False, "sleeping", 0.2)
    assert a.detail == "sleeping in a loop: sleeps 0.2 s again and again"
    assert "shorter than the window: a loop" in a.progress_evidence[-1]


def test_long_sleep_is_not_a_polling_loop() -> None:
    samples = [[thread(job(code="time.sleep(600)"))] for _ in range(3)]
    a = classify(stacks(*samples, cpu=[1.0, 1.0, 1.0]))
    assert (a.kind, a.polling, a.progress, a.samples) == ("sleep", False, "blocked", 3)
    assert a.sleep_s == 600 and "one sleep of 600 s for the whole window" in a.progress_evidence


# --- progress -----------------------------------------------------------------------------

BLOCKED = job(fr("SocketIO.readinto", STD + "socket.py", 706))


def _loop(line: int) -> list[Frame]:
    return job(fr("checksum", APP + "crunch.py", line))


@pytest.mark.parametrize(
    ("samples", "cpu", "running", "expected"),
    [
        ([BLOCKED] * 3, [2.0, 2.0, 2.001], False, "blocked"),
        ([_loop(5), _loop(6), _loop(5)], [2.0, 2.4, 2.8], True, "spinning"),
        ([_loop(5), _loop(6), _loop(5)], [2.0, 2.12, 2.24], True, "spinning"),  # 30 %: a busy machine
        ([_loop(5), _loop(6), _loop(5)], [2.0, 2.12, 2.24], False, "progressing"),
        ([_loop(5), BLOCKED, job(fr("render", APP + "pdf.py", 9))], [2.0, 2.2, 2.4], False, "progressing"),
        ([BLOCKED], [2.0], False, "unknown"),
        ([BLOCKED] * 3, None, False, "blocked"),
        ([_loop(5), _loop(6), _loop(7)], None, True, "spinning"),
        ([_loop(5), BLOCKED, _loop(7)], None, False, "progressing"),
    ],
    ids=["blocked", "spinning", "spinning-contended", "moderate-cpu", "moving", "one-sample",
         "blocked-no-cpu", "spinning-no-cpu", "moving-no-cpu"],
)  # fmt: skip
def test_progress(samples: list[list[Frame]], cpu: list[float] | None, running: bool, expected: str) -> None:
    ps = stacks(*[[thread(frames, active=running)] for frames in samples], cpu=cpu)
    assert judge_progress(ps.samples, 1) == expected
    assert classify(ps).progress == expected


def test_thresholds_and_cpu_percent() -> None:
    assert 0 < BLOCKED_MAX_CPU_PERCENT < SPINNING_MIN_CPU_PERCENT <= 100
    ps = stacks([thread(BLOCKED)], [thread(BLOCKED)], cpu=[1.0, 1.2], step=0.4)
    assert cpu_percent(ps.samples) == pytest.approx(50.0)
    assert cpu_percent(ps.samples[:1]) is None


# --- threads and output -------------------------------------------------------------------


def test_main_thread_choice() -> None:
    unnamed = thread(job(code="time.sleep(5)"), name=None, tid=7, os_thread_id=100)
    other = thread(job(code="time.sleep(5)"), name="worker-2", tid=8, os_thread_id=101)
    main = main_thread(stacks([other, unnamed]))
    assert main is not None and main.thread_id == 7, "the thread whose TID is the pid"
    main = main_thread(stacks([PUBSUB, thread(job(), name="Thread-2", tid=9)]))
    assert main is not None and main.thread_id == 9, "rq's pubsub thread is skipped"
    assert main_thread(ProcessStacks(pid=1)) is None


def test_classify_threads_covers_deadlock_partners() -> None:
    join = thread(job(fr("Thread.join", STD + "threading.py", 1119)), tid=1)
    partner = thread([fr("grab", APP + "sync.py", 30, "with second:"), fr("Thread.run", STD + "threading.py")],
                     name="t-a", tid=2, wchan="futex_wait_queue")  # fmt: skip
    acts = classify_threads(stacks([join, partner, PUBSUB]))
    assert [(a.thread_name, a.kind) for a in acts] == [("MainThread", "lock"), ("t-a", "lock")]
    assert acts[1].where is not None and acts[1].where.code == "with second:"


def test_no_samples() -> None:
    a = classify(ProcessStacks(pid=5))
    assert a.kind == "unknown" and a.thread_id is None
    assert classify_threads(ProcessStacks(pid=5)) == []


def test_activity_is_plain_json() -> None:
    a = classify(stacks([thread(job(code="time.sleep(600)"))]))
    assert isinstance(a, Activity)
    data = json.loads(json.dumps(dataclasses.asdict(a)))
    assert data["kind"] == "sleep" and data["where"]["name"] == "run_report" and data["where"]["line"] == 42


# --- progress evidence: counters and loop source ------------------------------------------

POLL_LOOP = ["while client.get(key) is not None:", "    if time.monotonic() >= deadline:",
             "        return False", "    time.sleep(0.2)"]
SAVE_LOOP = ["while time.monotonic() < deadline:", "    cur.execute(INSERT, (n,))", "    conn.commit()",
             "    n += 1", "    time.sleep(0.2)"]


def counted(ps: ProcessStacks, wakeups: list[int], syscalls: list[int] | None = None) -> ProcessStacks:
    """Give each sample context-switch and /proc/<pid>/io counters."""
    for sample, woke, calls in zip(ps.samples, wakeups, syscalls or [0] * len(wakeups), strict=True):
        sample.voluntary_ctx_switches, sample.involuntary_ctx_switches = woke, 3
        sample.io = IoCounters(syscr=100 + calls, syscw=50, rchar=4096 + 10 * calls, wchar=10, read_bytes=0,
                               write_bytes=0)
    return ps


def sleeping_in(loop: list[str] | None, line: int = 14) -> list[Frame]:
    app = fr("wait_for_lock", APP + "locks.py", line, "time.sleep(0.2)", loop=loop)
    return [app, fr("execute_job", FRAPPE + "utils/background_jobs.py")]


def test_poll_loop_from_its_source_and_quiet_counters_is_blocked_polling() -> None:
    ps = counted(stacks(*[[thread(sleeping_in(POLL_LOOP))] for _ in range(5)], cpu=[1.0] * 5, step=0.25),
                 [10, 11, 12, 13, 14])
    a = classify(ps)
    assert (a.kind, a.polling, a.progress) == ("sleep", True, "blocked")
    assert a.detail == "polling loop: sleeps 0.2 s again and again"
    assert "which only re-checks `client.get(key)` and sleeps" in a.progress_evidence[-1]
    assert "file/pipe I/O: 0 read/write syscalls, 0 bytes" in a.progress_evidence


def test_save_loop_from_its_source_is_sleeping_not_polling() -> None:
    ps = counted(stacks(*[[thread(sleeping_in(SAVE_LOOP))] for _ in range(5)], cpu=[1.0] * 5, step=0.25),
                 [10, 13, 16, 19, 22])
    a = classify(ps)
    assert (a.kind, a.polling, a.progress) == ("sleep", False, "sleeping")
    assert "which also runs `cur.execute(INSERT, (n,))`: a loop doing work" in a.progress_evidence[-1]


def test_loop_with_file_io_between_sleeps_is_progressing() -> None:
    ps = counted(stacks(*[[thread(sleeping_in(POLL_LOOP))] for _ in range(3)], cpu=[1.0] * 3),
                 [1, 3, 5], syscalls=[0, 4, 8])
    assert classify(ps).progress == "progressing"


def test_one_socket_read_that_never_wakes_is_blocked_but_one_that_wakes_is_not() -> None:
    ps = counted(stacks(*[[thread(BLOCKED)] for _ in range(5)], cpu=[2.0] * 5, step=0.25), [7, 7, 7, 7, 7])
    a = classify(ps)
    assert a.progress == "blocked" and "the thread never woke up: one call for the whole window" in a.progress_evidence
    streaming = counted(stacks(*[[thread(BLOCKED)] for _ in range(5)], cpu=[2.0] * 5, step=0.25), [7, 9, 12, 14, 17])
    b = classify(streaming)
    assert b.progress == "progressing" and "its calls return" in b.progress_evidence[-1]


def test_spinning_needs_a_thread_that_never_waits() -> None:
    hot = [[thread(_loop(5), active=True)] for _ in range(5)]
    assert classify(counted(stacks(*hot, cpu=[2.0, 2.2, 2.4, 2.6, 2.8], step=0.25), [4] * 5)).progress == "spinning"
    naps = counted(stacks(*hot, cpu=[2.0, 2.2, 2.4, 2.6, 2.8], step=0.25), [4, 14, 24, 34, 44])
    assert classify(naps).progress == "progressing", "it sleeps between bursts of work"


def test_redis_py_lock_acquire_is_a_lock_wait() -> None:
    acquire = fr("Lock.acquire", SP + "redis/lock.py", 212, "mod_time.sleep(sleep)")
    inner = [fr("AbstractConnection.read_response", SP + "redis/connection.py"),
             fr("Redis.set", SP + "redis/client.py"),
             fr("Lock.do_acquire", SP + "redis/lock.py", 225)]
    samples = [[thread(job(acquire))], [thread(job(*inner, acquire))], [thread(job(acquire))]]
    a = classify(counted(stacks(*samples, cpu=[1.0] * 3), [3, 8, 13]))
    assert (a.kind, a.progress) == ("lock", "blocked")
    assert "Redis lock (Lock.acquire)" in a.detail
    assert "inside the same lock acquire in every sample" in a.progress_evidence


def test_frame_loop_round_trips_and_old_snapshots_read() -> None:
    frame = fr("wait_for_lock", APP + "locks.py", 14, "time.sleep(0.2)", loop=POLL_LOOP)
    assert from_plain(Frame, json.loads(json.dumps(dataclasses.asdict(frame)))) == frame
    assert from_plain(StackSample, {"taken_at": 1.0}).io is None


# --- the recorded incident (Frappe 15.54.1 bench, no /proc counters in the snapshot) ------

INCIDENT = Path(__file__).parent / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"


@pytest.fixture(scope="module")
def incident() -> Any:
    return diagnose(load_snapshot(INCIDENT))


def _job(diagnosis: Any, prefix: str) -> tuple[Activity, list[Any]]:
    (link,) = [j for j in diagnosis.links.jobs if j.job.job_id.split("::")[-1].startswith(prefix)]
    found = [f for f in diagnosis.findings if f.job_id == link.job.job_id]
    return diagnosis.activities[diagnosis.links.local(link.runner.pid)], found


def test_rqd106_near_miss_healthy_save_loop(incident: Any) -> None:
    """c57e0424 inserts and commits a ToDo every 0.2 s: one sample caught `d.insert(...)`."""
    a, found = _job(incident, "c57e0424")
    assert a.progress == "progressing" and not a.polling, a
    assert any("between sleeps it ran `d.insert(ignore_permissions=True)`" in e for e in a.progress_evidence)
    assert not [f.code for f in found if f.severity in ("critical", "warning")], found


def test_rqd105_fires_recorded_cpu_loop(incident: Any) -> None:
    a, found = _job(incident, "a9faa580")
    assert a.progress == "spinning"
    (f,) = [f for f in found if f.code == "RQD105"]
    assert "progress: spinning" in f.evidence


def test_rqd113_fires_recorded_long_sleep(incident: Any) -> None:
    """3786cdbe sleeps in `time.sleep(seconds)`: no literal, no counters, so not provably one call."""
    a, found = _job(incident, "3786cdbe")
    assert (a.kind, a.progress) == ("sleep", "sleeping")
    assert [f.code for f in found] == ["RQD113"]
    assert "could not tell one long sleep from a loop of short ones" in found[0].evidence


def test_recorded_filelock_wait_is_a_blocked_file_lock_not_a_thread_lock(incident: Any) -> None:
    a, found = _job(incident, "rqd-filelock-wait")
    assert (a.kind, a.progress, a.file_lock) == ("lock", "blocked", True)
    assert [f.code for f in found if f.code in ("RQD106", "RQD112")] == ["RQD112"]


def test_rqd103_fires_recorded_http_wait_without_counters(incident: Any) -> None:
    a, found = _job(incident, "6e7fe896")
    assert a.progress == "blocked"
    (f,) = [f for f in found if f.code == "RQD103"]
    assert any("judged from stacks and CPU only" in e for e in f.evidence)
