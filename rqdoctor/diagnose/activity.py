"""What a process's threads are doing, judged from its stack samples (pure: no I/O).

A thread's wait is read from its innermost *library* frames: the run of stdlib, site-packages,
native, rq and Frappe-wrapper frames above the first application frame. The most specific match
wins: an RQ worker loop over a protocol (DB driver, HTTP, Redis, threading…) over a bare
socket. When application code waits inside a C call (``time.sleep``, ``lock.acquire``,
``sock.recv``), the frame's source line decides, then the kernel wait channel, then py-spy's
active flag. An idle thread parked in application code with nothing else to go on is taken
for a ``time.sleep`` (``evidence="inferred"``).

A worker parent waiting in rq's ``monitor_work_horse``/``wait_for_horse`` is ``idle`` for its
own sake: the job's activity is its horse's, classified separately.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rqdoctor.diagnose.progress import (  # noqa: F401  (re-exported: the progress vocabulary)
    BLOCKED_MAX_CPU_PERCENT,
    PROGRESS_BLOCKED,
    PROGRESS_PROGRESSING,
    PROGRESS_SLEEPING,
    PROGRESS_SPINNING,
    PROGRESS_UNKNOWN,
    SPINNING_MIN_CPU_PERCENT,
    Verdict,
    Window,
    cpu_percent,
    judge,
    sleep_seconds,
)
from rqdoctor.endpoints import address, redis_address
from rqdoctor.model import Frame, KnownEndpoint, ProcessInfo, ProcessStacks, Snapshot, StackSample, ThreadStack

KIND_DB_QUERY = "db_query"
KIND_DB_LOCK_WAIT = "db_lock_wait"
"""Set by the database join when the session behind a ``db_query`` waits on a lock."""
KIND_HTTP = "http"
KIND_SMTP = "smtp"
KIND_IMAP = "imap"
KIND_REDIS = "redis"
KIND_SOCKET = "socket"
KIND_SUBPROCESS = "subprocess"
KIND_LOCK = "lock"
KIND_SLEEP = "sleep"
KIND_CPU = "cpu"
KIND_IDLE = "idle"
KIND_UNKNOWN = "unknown"
KINDS = (
    KIND_DB_QUERY, KIND_DB_LOCK_WAIT, KIND_HTTP, KIND_SMTP, KIND_IMAP, KIND_REDIS, KIND_SOCKET,
    KIND_SUBPROCESS, KIND_LOCK, KIND_SLEEP, KIND_CPU, KIND_IDLE, KIND_UNKNOWN,
)  # fmt: skip

MYSQL_PORTS = frozenset({3306, 3307})
POSTGRES_PORTS = frozenset({5432, 5433})
SMTP_PORTS = frozenset({25, 465, 587, 2525})
IMAP_PORTS = frozenset({143, 993})
_PEER_STATUSES = ("ESTABLISHED", "SYN_SENT", "")


def is_redis_port(port: int) -> bool:
    """Redis's default ports and bench's (queue 11000+, socketio 12000+, cache 13000+)."""
    return 6379 <= port < 6390 or any(base <= port < base + 100 for base in (11000, 12000, 13000))


@dataclass
class Activity:
    """What one thread of a process is doing over the sampling window (plain, JSON-friendly)."""

    kind: str
    """One of :data:`KINDS`."""
    detail: str
    """One human line, e.g. ``waiting for HTTP response from 127.0.0.1:8081 (requests, no timeout)``."""
    progress: str = PROGRESS_UNKNOWN
    """``blocked``, ``spinning``, ``progressing``, ``sleeping`` or ``unknown`` (see :mod:`.progress`)."""
    thread_id: int | None = None
    thread_name: str | None = None
    peer: str | None = None
    """``host:port`` of the network peer waited on, from the process's TCP connections (None when ambiguous)."""
    peer_exact: bool = False
    """``peer`` is the connection of the very fd the thread's system call waits on (``/proc``), not a deduction."""
    peer_candidates: list[str] = field(default_factory=list)
    """With no single peer: the endpoints it could be (also named in ``detail``)."""
    file_lock: bool = False
    """The thread waits for an OS file lock (``filelock``, Frappe's ``filelock()``, ``fcntl.flock``/``lockf``)."""
    child_pid: int | None = None
    """The child process waited on (``subprocess``; the horse of an ``idle`` worker parent)."""
    where: Frame | None = None
    """Innermost application frame ("where in your code"), else the innermost frame."""
    cpu_percent: float | None = None
    """Process CPU over the window (100 = one core)."""
    evidence: str = ""
    """What decided ``kind``: ``frames``, ``source``, ``wchan``, ``py-spy`` (active flag) or ``inferred``."""
    polling: bool = False
    """A loop that only re-checks a condition and sleeps (e.g. waiting for a lock key in Redis)."""
    samples: int = 0
    """How many samples contained this thread."""
    progress_evidence: list[str] = field(default_factory=list)
    """What ``progress`` rests on: samples, CPU, context switches, I/O counters, stack and loop source."""
    sleep_s: float | None = None
    """Duration of the sleep the thread is in, when its source line gives it."""


# --- frames -------------------------------------------------------------------------------

_LIB_ROOT = re.compile(r"^.*/(?:site-packages|dist-packages)/|^.*/lib/python\d+\.\d+t?/")
_SHORT_ROOT = re.compile(r"^.*?/(?:site-packages|dist-packages)/|^.*?/lib/python\d+\.\d+t?/|^.*?/apps/")


def short_path(filename: str) -> str:
    """A frame's file relative to site-packages, the stdlib or the bench's apps (for display)."""
    return _SHORT_ROOT.sub("", filename, count=1)


_FRAPPE_WRAPPER = re.compile(
    r"(?:^|/)frappe/(?:database/|utils/|model/|query_builder/|commands/|integrations/utils\.py$|__init__\.py$)"
)
_SCRIPT = re.compile(r"/bin/[^/]+$")


@dataclass(frozen=True)
class _View:
    """A frame seen by the rules."""

    frame: Frame
    func: str
    rel: str | None
    """Path under site-packages or the stdlib (``pymysql/connections.py``), None elsewhere."""
    native: bool
    frappe: bool

    @property
    def library(self) -> bool:
        filename = self.frame.filename
        return (
            self.native or self.rel is not None or self.frappe
            or filename.startswith("<frozen") or bool(_SCRIPT.search(filename))
        )  # fmt: skip


def _view(frame: Frame) -> _View:
    native = frame.module is not None or not (frame.filename.endswith(".py") or frame.filename.startswith("<"))
    root = _LIB_ROOT.match(frame.filename)
    return _View(
        frame=frame,
        func=frame.name.rsplit(".", 1)[-1],
        rel=None if native or root is None else frame.filename[root.end() :],
        native=native,
        frappe=bool(_FRAPPE_WRAPPER.search(frame.filename)),
    )


def is_library_frame(frame: Frame) -> bool:
    """Stdlib, site-packages, native, a console script, or one of Frappe's own wrappers."""
    return _view(frame).library


def where(thread: ThreadStack) -> Frame | None:
    """Innermost application frame; if all is library code, the innermost Python frame."""
    views = [_view(f) for f in thread.frames]
    for view in views:
        if not view.library:
            return view.frame
    return next((v.frame for v in views if not v.native), thread.frames[0] if thread.frames else None)


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    rank: int
    """3: an RQ worker's loop or the GIL; 2: a protocol or primitive; 1: a bare transport."""
    kind: str
    lib: str
    test: Callable[[_View], bool]
    what: str = ""


def _under(*prefixes: str, funcs: Sequence[str] = ()) -> Callable[[_View], bool]:
    return lambda v: v.rel is not None and v.rel.startswith(prefixes) and (not funcs or v.func in funcs)


def _path(pattern: str) -> Callable[[_View], bool]:
    compiled = re.compile(pattern)
    return lambda v: not v.native and bool(compiled.search(v.frame.filename))


def _native(*prefixes: str) -> Callable[[_View], bool]:
    return lambda v: v.native and v.func.startswith(prefixes)


_RQ_DEQUEUE = ("dequeue_job_and_maintain_ttl", "dequeue_any", "dequeue_job", "lpop", "lmove")
_RQ_HORSE = ("wait_for_horse", "monitor_work_horse")
_WAITING_FOR_JOB = "worker waiting for a job"
_WAITING_FOR_HORSE = "worker waiting for its work-horse"
_MYSQL_NATIVE = ("mysql_", "mthd_my_", "ma_net", "ma_pvio", "pvio_", "cli_safe_read", "my_net_read", "vio_read")
_LOCK_NATIVE = (
    "futex", "__futex", "pthread_cond", "___pthread_cond", "pthread_mutex_lock", "sem_", "do_futex_wait",
    "PyThread_acquire_lock", "acquire_timed", "lock_PyThread", "rlock_acquire",
)  # fmt: skip
_SLEEP_NATIVE = ("clock_nanosleep", "__clock_nanosleep", "nanosleep", "__nanosleep", "time_sleep", "pysleep")
_SOCKET_NATIVE = (
    "recv", "__recv", "__libc_recv", "poll", "__poll", "ppoll", "select", "__select", "epoll_wait", "sock_",
    "internal_select", "SSL_read",
)  # fmt: skip
_MP_WAITS = tuple(f"multiprocessing/{m}.py" for m in ("synchronize", "queues", "connection", "pool", "managers"))
_FUTURE_WAITS = ("result", "wait", "as_completed", "shutdown", "__exit__", "map")
_SLEEPING = "sleeping (time.sleep)"
_FILE_LOCK = "waiting for a file lock"
_FILE_LOCK_SYSCALLS = ("flock", "fcntl")
_RUNNING = "running Python code (on CPU)"
_RULES: tuple[_Rule, ...] = (
    _Rule(3, KIND_IDLE, "rq", _under("rq/", funcs=_RQ_DEQUEUE), _WAITING_FOR_JOB),
    _Rule(3, KIND_IDLE, "rq", _under("rq/", funcs=_RQ_HORSE), _WAITING_FOR_HORSE),
    _Rule(3, KIND_IDLE, "rq", _under("rq/", funcs=("check_for_suspension",)), "worker suspended"),
    _Rule(3, KIND_IDLE, "rq", _under("rq/worker_pool"), "worker pool supervising its workers"),
    _Rule(3, KIND_IDLE, "rq", _under("rq/scheduler.py", "rq/cron.py"), "rq scheduler waiting for its next run"),
    _Rule(3, KIND_CPU, "CPython", _native("take_gil"), "waiting for the GIL held by another thread"),
    _Rule(2, KIND_DB_QUERY, "PyMySQL", _under("pymysql/")),
    _Rule(2, KIND_DB_QUERY, "mysqlclient", _under("MySQLdb/")),
    _Rule(2, KIND_DB_QUERY, "psycopg", _under("psycopg/")),
    _Rule(2, KIND_DB_QUERY, "psycopg2", _under("psycopg2/")),
    _Rule(2, KIND_DB_QUERY, "frappe.db", _path(r"(?:^|/)frappe/database/")),
    _Rule(2, KIND_DB_QUERY, "libmysqlclient", _native(*_MYSQL_NATIVE)),
    _Rule(2, KIND_DB_QUERY, "libpq", _native("PQ", "pq", "psyco_", "curs_execute")),
    _Rule(2, KIND_HTTP, "requests", _under("requests/")),
    _Rule(2, KIND_HTTP, "urllib3", _under("urllib3/")),
    _Rule(2, KIND_HTTP, "httpx", _under("httpx/", "httpcore/")),
    _Rule(2, KIND_HTTP, "http.client", _under("http/client.py")),
    _Rule(2, KIND_HTTP, "urllib.request", _under("urllib/request.py")),
    _Rule(2, KIND_HTTP, "frappe.integrations", _path(r"(?:^|/)frappe/integrations/utils\.py$")),
    _Rule(2, KIND_SMTP, "smtplib", _under("smtplib.py")),
    _Rule(2, KIND_IMAP, "imaplib", _under("imaplib.py")),
    _Rule(
        3, KIND_LOCK, "redis-py", _under("redis/lock.py", "redis/asyncio/lock.py", funcs=("acquire", "do_acquire")),
        "waiting for a Redis lock (Lock.acquire)",
    ),
    _Rule(2, KIND_REDIS, "redis-py", _under("redis/")),
    _Rule(2, KIND_SUBPROCESS, "subprocess", _under("subprocess.py")),
    _Rule(2, KIND_SUBPROCESS, "multiprocessing", _under("multiprocessing/popen_")),
    _Rule(2, KIND_SUBPROCESS, "libc", _native("wait4", "__wait4", "waitpid", "__waitpid", "os_wait")),
    _Rule(
        2, KIND_LOCK, "threading", _under("threading.py", funcs=("join", "_wait_for_tstate_lock")),
        "waiting for a thread to finish (Thread.join)",
    ),
    _Rule(
        2, KIND_LOCK, "threading", _under("threading.py", funcs=("wait", "wait_for")),
        "waiting on a threading Condition/Event",
    ),
    _Rule(
        2, KIND_LOCK, "threading", _under("threading.py", funcs=("acquire", "__enter__")),
        "waiting on a threading lock or semaphore",
    ),
    _Rule(2, KIND_LOCK, "queue", _under("queue.py", funcs=("get",)), "waiting for an item from a queue (queue.get)"),
    _Rule(2, KIND_LOCK, "queue", _under("queue.py", funcs=("put", "join")), "waiting on a queue"),
    _Rule(
        2, KIND_LOCK, "multiprocessing", _under(*_MP_WAITS),
        "waiting on a multiprocessing lock, queue or pool",
    ),
    _Rule(
        2, KIND_LOCK, "concurrent.futures", _under("concurrent/futures/", funcs=_FUTURE_WAITS),
        "waiting for a future's result",
    ),
    _Rule(3, KIND_LOCK, "filelock", _under("filelock/"), _FILE_LOCK),
    _Rule(3, KIND_LOCK, "frappe", _path(r"(?:^|/)frappe/utils/synchronization\.py$"), _FILE_LOCK),
    _Rule(2, KIND_LOCK, "fcntl", _native("flock", "__flock", "lockf", "fcntl_flock", "fcntl_lockf"),
          f"{_FILE_LOCK} (flock)"),
    _Rule(2, KIND_LOCK, "libpthread", _native(*_LOCK_NATIVE), "waiting on a lock"),
    _Rule(2, KIND_SLEEP, "", _native(*_SLEEP_NATIVE), _SLEEPING),
    _Rule(1, KIND_SOCKET, "socket", _under("socket.py", "ssl.py", "selectors.py", "asyncio/")),
    _Rule(1, KIND_SOCKET, "libc", _native(*_SOCKET_NATIVE)),
)  # fmt: skip

_SOURCE_KINDS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\b(?:fcntl\.)?(?:flock|lockf)\s*\("), KIND_LOCK, f"{_FILE_LOCK} (fcntl)"),
    (re.compile(r"\bsleep\s*\("), KIND_SLEEP, _SLEEPING),
    (re.compile(r"\bos\.wait(?:pid|4|3)?\s*\("), KIND_SUBPROCESS, "waiting on a child process (os.wait)"),
    (re.compile(r"\bfcntl\.(?:flock|lockf)\s*\("), KIND_LOCK, "waiting for a file lock (fcntl)"),
    (re.compile(r"\.acquire\s*\(|^with\b.*lock", re.IGNORECASE), KIND_LOCK, "waiting to acquire a lock"),
    (
        re.compile(r"\.(?:recv|recv_into|recvfrom|recvmsg|accept|connect|sendall)\s*\("),
        KIND_SOCKET,
        "blocked in a socket call",
    ),
    (re.compile(r"\bselect\s*\(|\.poll\s*\("), KIND_SOCKET, "waiting in select/poll"),
)
_SOCKET_WCHAN = ("wait_woken", "sk_wait", "inet_csk_accept", "tcp_", "unix_stream", "sock_", "skb_")
_POLL_WCHAN = ("poll_schedule_timeout", "do_select", "do_sys_poll", "ep_poll", "do_epoll_wait")
_WCHAN_KINDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("hrtimer_nanosleep", "do_nanosleep", "clock_nanosleep"), KIND_SLEEP, _SLEEPING),
    (("do_wait", "kernel_wait"), KIND_SUBPROCESS, "waiting on a child process"),
    (("futex",), KIND_LOCK, "waiting to acquire a lock"),
    (("locks_lock_inode_wait", "flock_lock", "fcntl_setlk", "do_lock_file_wait"), KIND_LOCK, _FILE_LOCK),
    (_SOCKET_WCHAN, KIND_SOCKET, "blocked in a socket read"),
    (_POLL_WCHAN, KIND_SOCKET, "waiting in select/poll"),
)


@dataclass
class _Reading:
    """The kind of one thread in one sample, and why."""

    kind: str
    lib: str
    what: str
    evidence: str
    thread: ThreadStack
    prefix: list[_View]


def _match(view: _View) -> _Rule | None:
    return next((rule for rule in _RULES if rule.test(view)), None)


def _read(thread: ThreadStack, has_children: bool) -> _Reading:
    """Classify one thread of one sample."""
    views = [_view(f) for f in thread.frames]
    prefix = list(itertools.takewhile(lambda v: v.library, views))
    matched = [rule for rule in map(_match, prefix) if rule is not None]
    if matched:
        best = max(matched, key=lambda r: r.rank)  # the innermost of the highest rank
        same = [r for r in matched if r.kind == best.kind and r.rank == best.rank]
        outer = [r for r in same if not r.lib.startswith("frappe")] or same
        return _Reading(best.kind, outer[-1].lib, outer[-1].what, "frames", thread, prefix)

    if thread.syscall in _FILE_LOCK_SYSCALLS and any(w.locks for w in thread.wait_fds):
        return _Reading(KIND_LOCK, "", f"{_FILE_LOCK} ({thread.syscall})", "syscall", thread, prefix)
    top = next((v for v in views if not v.native), None)
    code = top.frame.code if top is not None else None
    for pattern, kind, what in _SOURCE_KINDS:
        if code and pattern.search(code):
            return _Reading(kind, "", what, "source", thread, prefix)
    wchan = thread.wchan or ""
    for prefixes, kind, what in _WCHAN_KINDS:
        if wchan.startswith(prefixes):
            return _Reading(kind, "", what, "wchan", thread, prefix)
    if "pipe" in wchan and has_children:
        return _Reading(KIND_SUBPROCESS, "", "reading a child's output", "wchan", thread, prefix)
    if _running(thread):
        return _Reading(KIND_CPU, "", _RUNNING, "wchan" if wchan == "0" else "py-spy", thread, prefix)
    if top is not None and not top.library:
        what = "idle in a C call from application code, probably time.sleep"
        return _Reading(KIND_SLEEP, "", what, "inferred", thread, prefix)
    return _Reading(KIND_UNKNOWN, "", "no recognisable wait in the stack", "", thread, prefix)


# --- threads ------------------------------------------------------------------------------


def is_housekeeping(thread: ThreadStack) -> bool:
    """rq's pubsub listener or a heartbeat thread: never the job's thread."""
    if "heartbeat" in (thread.name or "").lower():
        return True
    return any(f.name.endswith("PubSubWorkerThread.run") or "heartbeat" in f.name.lower() for f in thread.frames)


def main_thread(stacks: ProcessStacks) -> ThreadStack | None:
    """The job's thread in the latest sample: MainThread, else the pid's own thread, else the first real one."""
    threads = next((s.threads for s in reversed(stacks.samples) if s.threads), [])
    return (
        next((t for t in threads if t.name == "MainThread"), None)
        or next((t for t in threads if t.os_thread_id == stacks.pid), None)
        or next((t for t in threads if not is_housekeeping(t)), None)
        or (threads[0] if threads else None)
    )


def _thread_in(sample: StackSample, thread_id: int) -> ThreadStack | None:
    return next((t for t in sample.threads if t.thread_id == thread_id), None)


# --- progress -----------------------------------------------------------------------------


def judge_progress(samples: Sequence[StackSample], thread_id: int) -> str:
    """``blocked`` / ``spinning`` / ``progressing`` / ``sleeping`` / ``unknown`` for one thread over the samples."""
    return classify(ProcessStacks(pid=-1, samples=list(samples)), thread_id=thread_id).progress


def _running(thread: ThreadStack) -> bool:
    """On CPU (or runnable) at the sample: py-spy's flags, or no kernel wait channel."""
    return thread.active or thread.owns_gil or thread.wchan == "0"


# --- classification -----------------------------------------------------------------------


def classify(
    stacks: ProcessStacks,
    process: ProcessInfo | None = None,
    children: Sequence[ProcessInfo] = (),
    thread_id: int | None = None,
    known: Sequence[KnownEndpoint] = (),
) -> Activity:
    """Activity of one thread of a process (default: the job's main thread) over its samples."""
    if thread_id is None:
        main = main_thread(stacks)
        if main is None:
            return Activity(KIND_UNKNOWN, "no stack sample", cpu_percent=cpu_percent(stacks.samples))
        thread_id = main.thread_id
    live_children = sorted((c for c in children if c.status != "zombie"), key=lambda c: c.pid)
    present = [(s, t) for s in stacks.samples if (t := _thread_in(s, thread_id))]
    if not present:
        return Activity(KIND_UNKNOWN, f"thread {thread_id} not in any sample", thread_id=thread_id)
    readings = [_read(t, bool(live_children)) for _, t in present]
    reading, loop = _choose(readings, present[-1][0].taken_at - present[0][0].taken_at)
    thread = reading.thread
    window = Window([r.thread for r in readings], [r.kind for r in readings], [where(r.thread) for r in readings],
                    reading.kind, blocking_dumps=stacks.mode.startswith("blocking"),
                    inferred=all(r.evidence == "inferred" for r in readings if r.kind == KIND_SLEEP))
    leader = thread.os_thread_id == stacks.pid or (thread.os_thread_id is None and thread.name == "MainThread")
    verdict = judge(window, [s for s, _ in present], leader)
    pick = _peer(reading, process, known)
    waits_on_child = reading.kind == KIND_SUBPROCESS or reading.what == _WAITING_FOR_HORSE
    child = live_children[0] if waits_on_child and live_children else None
    return Activity(
        kind=reading.kind,
        detail=_detail(reading, pick.peer or _one_of(pick.candidates), child, _loop_text(reading, loop, verdict)),
        progress=verdict.progress,
        thread_id=thread_id,
        thread_name=thread.name,
        peer=pick.peer,
        peer_exact=pick.exact,
        peer_candidates=pick.candidates,
        file_lock=reading.kind == KIND_LOCK and reading.what.startswith(_FILE_LOCK),
        child_pid=child.pid if child else None,
        where=where(thread),
        cpu_percent=cpu_percent(stacks.samples),
        evidence=reading.evidence,
        polling=verdict.polling,
        samples=len(readings),
        progress_evidence=verdict.evidence,
        sleep_s=verdict.sleep_s,
    )


def _loop_text(reading: _Reading, loop: str | None, verdict: Verdict) -> str | None:
    """The detail of a sleep: a poll loop, a loop that sleeps between steps, or one sleep."""
    if verdict.polling:
        return f"polling loop: {loop or 'sleeps and re-checks a condition'}"
    if reading.kind != KIND_SLEEP:
        return None
    if verdict.progress in (PROGRESS_SLEEPING, PROGRESS_PROGRESSING) and loop:
        return f"sleeping in a loop: {loop}"
    if verdict.sleep_s is not None:
        return f"{reading.what or _SLEEPING}, {verdict.sleep_s:g} s"
    return None


def classify_threads(
    stacks: ProcessStacks,
    process: ProcessInfo | None = None,
    children: Sequence[ProcessInfo] = (),
    known: Sequence[KnownEndpoint] = (),
) -> list[Activity]:
    """Activity of every thread but rq's housekeeping ones, the job's main thread first."""
    main = main_thread(stacks)
    if main is None:
        return []
    threads = next(s.threads for s in reversed(stacks.samples) if s.threads)
    others = [t.thread_id for t in threads if t.thread_id != main.thread_id and not is_housekeeping(t)]
    return [classify(stacks, process, children, tid, known) for tid in [main.thread_id, *others]]


_POLLED = {KIND_REDIS, KIND_DB_QUERY, KIND_HTTP, KIND_SOCKET, KIND_CPU, KIND_UNKNOWN}
"""Kinds a loop may be caught in between its sleeps."""


def _choose(readings: list[_Reading], window: float) -> tuple[_Reading, str | None]:
    """The reading that stands for the window, and a description when the thread sleeps in a loop.

    A loop is seen either directly (samples alternate a sleep with short calls) or through a
    sleep literal shorter than the window while every sample sleeps there: it was re-entered.
    Whether the loop only waits or does work is judged by :func:`.progress.judge`.
    """
    kinds = [r.kind for r in readings]
    others = set(kinds) - {KIND_SLEEP}
    if KIND_SLEEP in kinds and others and others <= _POLLED:
        polled = "/".join(sorted(others - {KIND_CPU, KIND_UNKNOWN})) or "short"
        return next(r for r in reversed(readings) if r.kind == KIND_SLEEP), f"sleeps between {polled} calls"
    if (
        len(readings) > 1
        and not others
        and len({(f.filename, f.line) for r in readings if (f := where(r.thread))}) == 1
    ):
        seconds = sleep_seconds(where(readings[-1].thread))
        if seconds is not None and seconds < window:
            return readings[-1], f"sleeps {seconds:g} s again and again"
    counts = Counter(kinds)
    top = max(counts.values())
    return next(r for r in reversed(readings) if counts[r.kind] == top), None


def _port(address: str) -> int | None:
    _, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else None


@dataclass(frozen=True)
class _Pick:
    """The peer of a wait, or the endpoints it could be."""

    peer: str | None = None
    candidates: list[str] = field(default_factory=list)
    exact: bool = False


_REDIS_ROLES = ("redis_queue", "redis_cache", "redis_socketio")
ROLE_WORKER = "worker"
"""A known endpoint that the job's worker parent itself is connected to (a service of the worker, not of the job)."""
_MAX_CANDIDATES = 4


def known_endpoints(snapshot: Snapshot, process: ProcessInfo | None) -> list[KnownEndpoint]:
    """The bench's services (its Redis URL, its sites' DBs, its config's Redis servers), plus what the
    process's worker parent is connected to."""
    target = snapshot.target
    known = list(target.endpoints)
    queue = redis_address(target.redis_url)
    if queue is not None:
        known.append(KnownEndpoint(queue, "redis_queue", "redis_url"))
    for site in target.sites:
        port = site.db_port or (5432 if site.db_type == "postgres" else 3306)
        if not site.db_socket and site.db_type != "sqlite":
            known.append(KnownEndpoint(address(site.db_host or "127.0.0.1", port), "db", f"site:{site.name}"))
    parent = next((p for p in snapshot.processes if process and p.pid == process.ppid and p.worker_like
                   and snapshot.key(p).host == snapshot.key(process).host), None)
    if parent is not None:
        known += [KnownEndpoint(c.raddr, ROLE_WORKER, f"pid {parent.pid}") for c in parent.connections if c.raddr]
    return known


def _peer(reading: _Reading, process: ProcessInfo | None, known: Sequence[KnownEndpoint] = ()) -> _Pick:
    """The remote ``host:port`` the wait is on: exactly from the blocked syscall's fd, else by elimination.

    By elimination, a Redis wait picks among the bench's Redis endpoints, a DB wait among its DB
    endpoints (then the driver's usual ports), and any other wait among the endpoints the bench does
    not know (not its Redis, DBs, nor what the worker parent talks to). Never a guess between several.
    """
    if process is None or reading.kind not in (
        KIND_DB_QUERY, KIND_HTTP, KIND_SMTP, KIND_IMAP, KIND_REDIS, KIND_SOCKET, KIND_IDLE,
    ):  # fmt: skip
        return _Pick()
    if reading.kind == KIND_IDLE and reading.what != _WAITING_FOR_JOB:
        return _Pick()
    conns = [c for c in process.connections if c.raddr and c.status in _PEER_STATUSES and _port(c.raddr)]
    thread = reading.thread
    if thread.wait_fds_exact and all(c.fd is not None for c in conns):
        fds = {w.fd for w in thread.wait_fds if w.target.startswith("socket:")}
        conns = [c for c in conns if c.fd in fds]
        if len({c.raddr for c in conns}) == 1:
            return _Pick(conns[0].raddr, exact=True)
    addresses = sorted({c.raddr for c in conns})
    roles: dict[str, set[str]] = {}
    for endpoint in known:
        roles.setdefault(endpoint.address, set()).add(endpoint.role)
    fits = _fits(reading, addresses, roles)
    if len(fits) == 1:
        return _Pick(fits[0])
    return _Pick(candidates=fits[:_MAX_CANDIDATES])


def _fits(reading: _Reading, addresses: list[str], roles: dict[str, set[str]]) -> list[str]:
    """The addresses that can be the peer of this kind of wait, best evidence first."""
    def having(*wanted: str) -> list[str]:
        return [a for a in addresses if roles.get(a, set()) & set(wanted)]

    ports = {a: _port(a) or 0 for a in addresses}
    db_ports = MYSQL_PORTS | POSTGRES_PORTS
    if reading.kind == KIND_IDLE:
        return having("redis_queue") or having(*_REDIS_ROLES) or [a for a in addresses if is_redis_port(ports[a])]
    if reading.kind == KIND_REDIS:
        return having(*_REDIS_ROLES) or [a for a in addresses if is_redis_port(ports[a])]
    if reading.kind == KIND_DB_QUERY:
        preferred = POSTGRES_PORTS if reading.lib.startswith(("psycopg", "libpq")) else MYSQL_PORTS
        if reading.lib == "frappe.db":
            preferred = db_ports
        return having("db") or [a for a in addresses if ports[a] in preferred and not roles.get(a)]
    unknown = [a for a in addresses if not roles.get(a)]
    protocol = {KIND_SMTP: SMTP_PORTS, KIND_IMAP: IMAP_PORTS}.get(reading.kind, frozenset())
    if len(unknown) > 1:  # last hints: the protocol's own ports, then not a usual Redis or DB port
        unknown = ([a for a in unknown if ports[a] in protocol]
                   or [a for a in unknown if not is_redis_port(ports[a]) and ports[a] not in db_ports] or unknown)
    return unknown


def _one_of(candidates: list[str]) -> str | None:
    """``one of A, B`` for an ambiguous peer (None when there is no candidate)."""
    return f"one of {', '.join(candidates)}" if candidates else None


def _timeout_note(reading: _Reading) -> str:
    """``, no timeout`` / ``, timeout 30s`` when a library frame's locals say so."""
    for view in reading.prefix:
        for name in ("timeout", "read_timeout"):
            value = (view.frame.locals or {}).get(name)
            if value == "None":
                return ", no timeout"
            if value and re.fullmatch(r"\d+(?:\.\d+)?", value):
                return f", timeout {value}s"
    return ""


def _detail(reading: _Reading, peer: str | None, child: ProcessInfo | None, loop: str | None) -> str:
    """The one-line description of a reading (``loop``: the description of a sleep, when there is one)."""
    kind, lib = reading.kind, reading.lib
    via = f" ({lib}{_timeout_note(reading)})" if lib else ""
    source = f" from {peer}" if peer else ""
    if loop:
        return loop
    if kind == KIND_DB_QUERY:
        port = _port(peer) if peer else None
        if lib in ("PyMySQL", "mysqlclient", "libmysqlclient") or port in MYSQL_PORTS:
            server = "MariaDB/MySQL"
        elif lib in ("psycopg", "psycopg2", "libpq") or port in POSTGRES_PORTS:
            server = "PostgreSQL"
        else:
            server = "database"
        return f"waiting for a {server} query result{source}{via}"
    if kind == KIND_HTTP:
        return f"waiting for HTTP response{source}{via}"
    if kind in (KIND_SMTP, KIND_IMAP):
        return f"waiting on {kind.upper()} server{' ' + peer if peer else ''}{via}"
    if kind == KIND_REDIS:
        return f"waiting for a Redis reply{source}{via}"
    if kind == KIND_SUBPROCESS:
        if child is None:
            return f"{reading.what or 'waiting on a child process'} (no child process found){via}"
        return f"waiting on child pid {child.pid} `{_cmd(child)}`{_cpu(child)}"
    if kind == KIND_IDLE:
        if child is not None:
            return f"{reading.what} pid {child.pid} to finish"
        return f"{reading.what}{' on Redis ' + peer if peer else ''}"
    if kind == KIND_SOCKET:
        return f"{reading.what or 'waiting on a network read'}{source}{via}"
    if kind == KIND_SLEEP:
        return reading.what or _SLEEPING
    lock_file = next((w.target for w in reading.thread.wait_fds if w.target.startswith("/")), None)
    if kind == KIND_LOCK and reading.what.startswith(_FILE_LOCK) and lock_file:
        return f"{reading.what.replace(_FILE_LOCK, f'{_FILE_LOCK} on {lock_file}', 1)}{via}"
    return f"{reading.what or kind}{via}"


def _cmd(process: ProcessInfo) -> str:
    text = " ".join(process.cmdline) or f"pid {process.pid}"
    return text if len(text) <= 80 else text[:77] + "..."


def _cpu(process: ProcessInfo) -> str:
    return f", {process.cpu_percent:.0f}% CPU" if process.cpu_percent is not None else ""
