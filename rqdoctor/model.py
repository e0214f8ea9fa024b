"""The snapshot: plain, JSON-serialisable facts gathered by the probes.

Every probe writes into one part of :class:`Snapshot`. Diagnosis and rendering read it, so a
saved snapshot (``--format json`` then ``--from FILE``) can be re-diagnosed on any machine.
Secrets are redacted before values are stored here (see :mod:`rqdoctor.redact`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar, Union

SCHEMA_VERSION = 2

T = TypeVar("T")


@dataclass
class ProbeError:
    """A fact that could not be gathered: the report says what is missing and why."""

    probe: str
    """Which probe failed: ``redis``, ``processes``, ``stacks``, ``database``, ``config``."""
    kind: str
    """Stable short cause: ``unreachable``, ``timeout``, ``permission``, ``missing_tool``, ``corrupt``, ``vanished``…"""
    message: str
    """One human line, secrets already masked."""
    hint: str = ""
    """What the user can do about it."""
    subject: str = ""
    """What it concerns (a key, a pid, a DSN), when narrower than the whole probe."""
    host: str = ""
    """The host whose probe failed, in a snapshot merged from several hosts (empty: the snapshot's ``host``)."""


@dataclass
class SiteInfo:
    """One Frappe site of the bench (database credentials are kept only as redacted DSNs)."""

    name: str
    db_type: str = "mariadb"
    db_host: str = ""
    db_port: int | None = None
    db_socket: str = ""
    db_name: str = ""
    db_user: str = ""


@dataclass
class KnownEndpoint:
    """A service of the bench, from its config: where it listens and what it is."""

    address: str
    """``host:port`` (``[ip]:port`` for IPv6), as in :class:`Connection`."""
    role: str
    """``redis_queue``, ``redis_cache``, ``redis_socketio`` (Redis) or ``db`` (a site's database)."""
    source: str = ""
    """Where it was named: ``redis_url``, ``common_site_config.json``, ``site:<name>``."""


@dataclass
class TargetInfo:
    """Where rqdoctor looked and why (the output of target discovery, passwords masked)."""

    redis_url: str
    redis_url_source: str
    bench_path: str | None = None
    bench_source: str = ""
    """How the bench was found (``--bench``, ``current directory``…), or, with no bench, why none was used."""
    bench_id: str | None = None
    bench_id_source: str = ""
    queue_filter: str | None = None
    """Only queues starting with this prefix (``<bench_id>:``) are shown; None means all."""
    queue_timeouts: dict[str, int] = field(default_factory=dict)
    """Frappe queue type -> default timeout (short/default/long plus custom ``workers``)."""
    sites: list[SiteInfo] = field(default_factory=list)
    db_urls: list[str] = field(default_factory=list)
    """Redacted database URLs given with ``--db-url``."""
    endpoints: list[KnownEndpoint] = field(default_factory=list)
    """The Redis servers common_site_config.json names (``redis_queue``/``redis_cache``/``redis_socketio``)."""
    all_queues: bool = False
    """``--all-queues`` was given (the filter is off on purpose, not for want of a bench)."""
    key_prefix: str = "rq"
    """RQ's key prefix (``RQ_KEY_PREFIX``, rq 3.0): every key read or written starts with ``<key_prefix>:``."""
    key_prefix_source: str = ""
    """How it was chosen (``--key-prefix``, the workers' environment, default…)."""
    bench_dirs: list[str] = field(default_factory=list)
    """``<st_dev>:<st_ino>`` of the bench root and of its ``sites`` folder: the same directories by whatever path
    a process in another mount namespace (a container) knows them (empty: not read)."""


@dataclass
class WorkerInfo:
    """One ``rq:worker:<name>`` hash as read from Redis (missing fields are None)."""

    name: str
    key: str
    hostname: str | None = None
    pid: int | None = None
    ip_address: str | None = None
    state: str | None = None
    queues: list[str] = field(default_factory=list)
    current_job: str | None = None
    current_job_working_time: float | None = None
    executions: list[str] = field(default_factory=list)
    """rq 3.0: members of ``rq:worker:<name>:executions`` (``job_id:execution_id``)."""
    birth: float | None = None
    last_heartbeat: float | None = None
    death: float | None = None
    shutdown_requested: float | None = None
    version: str | None = None
    python_version: str | None = None
    successful_job_count: int | None = None
    failed_job_count: int | None = None
    total_working_time: float | None = None
    ttl: int | None = None
    """TTL of the worker key in seconds; -1 persistent (ghost), -2 gone."""
    in_worker_set: bool = True
    key_type: str = "hash"
    """Redis type of the key; anything but ``hash`` means a corrupt or foreign key."""


@dataclass
class QueueInfo:
    """One RQ queue with its registry counts."""

    name: str
    queued: int = 0
    oldest_queued_job: str | None = None
    oldest_enqueued_at: float | None = None
    started: int = 0
    failed: int = 0
    finished: int = 0
    deferred: int = 0
    scheduled: int = 0
    canceled: int = 0
    intermediate: int = 0
    """Ids in ``rq:queue:<q>:intermediate``: dequeued by a single-queue worker, not started yet (rq >= 1.15)."""
    registered: bool = True
    """Listed in ``rq:queues``."""
    clean_lock_ttl: int | None = None
    """TTL in seconds of ``rq:clean_registries:<q>``, the maintenance lock (None: no lock, or not read):
    no worker cleans this queue's registries before it expires."""


@dataclass
class JobInfo:
    """A started job: its registry entry and the plain fields of ``rq:job:<id>`` (never ``data``)."""

    job_id: str
    queue: str
    execution_id: str | None = None
    registry_expires_at: float | None = None
    """Score of the started-registry entry (heartbeat expiry)."""
    exists: bool = True
    """False when the registry names a job whose hash is gone."""
    status: str | None = None
    origin: str | None = None
    description: str | None = None
    """Call string, secret-looking kwargs masked."""
    timeout: int | None = None
    created_at: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    last_heartbeat: float | None = None
    worker_name: str | None = None
    site: str | None = None
    method: str | None = None
    execution_created_at: float | None = None
    """rq >= 2: ``created_at`` of ``rq:execution:<job>:<execution>``, written by the worker just before the fork."""
    execution_last_heartbeat: float | None = None
    """rq >= 2: ``last_heartbeat`` of that execution hash (None when the hash is gone)."""


@dataclass
class MethodRuns:
    """Durations in seconds (``ended_at - started_at``) of one method's recent runs, newest first per queue."""

    method: str
    finished: list[float] = field(default_factory=list)
    """Of jobs whose hash says ``finished``."""
    failed: list[float] = field(default_factory=list)
    """Of jobs whose hash says ``failed``."""


@dataclass
class RunHistory:
    """Recent runs per method, from the finished and failed registries (raw durations, no statistics).

    Per queue, at most the newest ``per_registry`` live entries of each registry are read, so the
    size is bounded by 2 x that per queue.
    """

    methods: list[MethodRuns] = field(default_factory=list)
    per_registry: int = 0
    """How many entries per queue and registry were asked for (0: history not read)."""
    entries: int = 0
    """Registry entries whose job hash was read."""
    skipped: int = 0
    """Of those, entries left out: hash gone or re-run since, times missing or unparsable, no method."""

    def runs(self, method: str) -> MethodRuns:
        """The entry of ``method``, added if missing."""
        found = next((m for m in self.methods if m.method == method), None)
        if found is None:
            found = MethodRuns(method)
            self.methods.append(found)
        return found


@dataclass
class HiddenQueue:
    """A queue the queue filter left out: its name and (when it is in ``rq:queues``) how many jobs it holds."""

    name: str
    queued: int | None = None
    started: int | None = None
    registered: bool = True
    """Listed in ``rq:queues``; False for a name known only from a hidden worker's queues (no counts read)."""


@dataclass
class HiddenWorker:
    """A worker the queue filter left out: it listens only on hidden queues."""

    name: str
    state: str | None = None
    queues: list[str] = field(default_factory=list)


@dataclass
class JobHash:
    """A ``rq:job:<id>`` hash found by the ``stuck`` scan with status ``queued`` or ``started`` (plain fields only)."""

    job_id: str
    status: str
    origin: str | None = None
    description: str | None = None
    """Call string, secret-looking kwargs masked."""
    created_at: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    worker_name: str | None = None
    site: str | None = None
    method: str | None = None
    held_by: list[str] = field(default_factory=list)
    """Where it was found besides its hash: ``queue``, ``intermediate``, ``started``, ``scheduled``, ``deferred``,
    ``worker <name>``; empty: nowhere (a zombie, when ``checked``)."""
    checked: bool = False
    """Every place was checked (and the status read again, unchanged); False: no verdict."""
    direct: bool = False
    """Looked up by its known id (a Frappe scheduled job), not found by the scan."""


@dataclass
class JobScan:
    """The ``stuck`` scan of job hashes: SCAN ``rq:job:*`` with COUNT, bounded by a key limit and the deadline."""

    complete: bool = False
    """The SCAN reached cursor 0 (every job key was seen)."""
    keys_seen: int = 0
    limit: int = 0
    """At most this many keys are read."""
    stopped_by: str = ""
    """Why a partial scan stopped: ``limit`` or ``deadline``; empty when complete."""
    jobs: list[JobHash] = field(default_factory=list)
    """Hashes with status queued/started of the shown queues (by ``origin``)."""


@dataclass
class RedisState:
    """Everything read from RQ's Redis."""

    server_time: float
    redis_version: str | None = None
    suspended: bool = False
    workers: list[WorkerInfo] = field(default_factory=list)
    queues: list[QueueInfo] = field(default_factory=list)
    jobs: list[JobInfo] = field(default_factory=list)
    round_trips: int = 0
    commands: int = 0
    history: RunHistory = field(default_factory=RunHistory)
    """Recent finished/failed durations per method (read only when some job is running)."""
    hidden_queues: list[HiddenQueue] = field(default_factory=list)
    """Queues of this Redis that the queue filter left out (empty without a filter)."""
    hidden_workers: list[HiddenWorker] = field(default_factory=list)
    """Workers of this Redis that the queue filter left out."""
    hidden_counted: bool = False
    """The probe recorded what the filter hid (False in snapshots of older rqdoctor versions: unknown)."""
    job_scan: JobScan | None = None
    """``stuck`` only: the job hashes that say queued/started, and where each was found (None: not scanned)."""
    other_prefixes: list[str] = field(default_factory=list)
    """With no worker under the key prefix read: other prefixes whose ``<p>:workers`` set exists (bounded SCAN)."""
    run_id: str | None = None
    """``run_id`` of INFO server: the Redis process's identity (snapshots of several hosts must share it)."""


@dataclass
class Connection:
    """One TCP connection of a process (``host:port`` strings)."""

    laddr: str
    raddr: str
    status: str = ""
    fd: int | None = None
    """The socket's file descriptor in the process (psutil; None when unknown)."""


@dataclass
class ProcessIdentity:
    """Who a process is, across PID namespaces: its host pid, and, in a container, the pid the container sees.

    ``pid`` is always the pid in rqdoctor's own PID namespace on ``host`` (the one to signal and to sample);
    ``ns_pid`` is the last ``NSpid`` of ``/proc/<pid>/status`` (equal to ``pid`` outside containers), the pid an
    RQ worker inside the container writes in its hash.
    """

    host: str
    pid: int
    create_time: float | None = None
    ns_pid: int | None = None
    pid_ns: int | None = None
    """Inode of ``/proc/<pid>/ns/pid`` (None: unreadable, or a v1 snapshot)."""
    foreign_ns: bool = False
    """Its PID namespace is not rqdoctor's: it runs in a container (or ``unshare``)."""
    uts_hostname: str | None = None
    """Foreign namespace only: the hostname of its UTS namespace, as the container sees it (RQ's ``hostname``)."""
    container_id: str | None = None
    """From ``/proc/<pid>/cgroup`` (docker, containerd, CRI-O, Kubernetes paths), when it names one."""
    container_name: str | None = None
    """The container's hostname (its UTS name: a short id or a pod name)."""

    def label(self) -> str:
        """``pid 4242`` or ``pid 4242 (container web-1 (0123abcd4567) pid 1)``."""
        if not self.foreign_ns:
            return f"pid {self.pid}"
        short = f" ({self.container_id[:12]})" if self.container_id else ""
        return f"pid {self.pid} (container {self.container_name or '?'}{short} pid {self.ns_pid})"


class ProcKey(NamedTuple):
    """What names a process in diagnosis: its host and its pid there (a pid alone is ambiguous across hosts)."""

    host: str
    pid: int


@dataclass
class ProcessInfo:
    """A local process that matters: a worker, a horse, a pool parent, or a horse's child."""

    pid: int
    """The host pid (rqdoctor's PID namespace), also for a process in a container (see :attr:`identity`)."""
    ppid: int | None = None
    pgid: int | None = None
    sid: int | None = None
    create_time: float | None = None
    cmdline: list[str] = field(default_factory=list)
    cwd: str | None = None
    status: str | None = None
    """psutil status (``sleeping``, ``running``, ``stopped``, ``zombie``…), or ``vanished``: it exited while read."""
    username: str | None = None
    cpu_percent: float | None = None
    cpu_time: float | None = None
    """User + system CPU seconds at the time of the probe."""
    rss: int | None = None
    num_threads: int | None = None
    supervisor_program: str | None = None
    worker_like: bool = False
    """Its argv or title looks like an RQ / Frappe worker."""
    connections: list[Connection] = field(default_factory=list)
    status_again: str | None = None
    """``stuck`` only: the psutil status read again a moment later for a process first seen ``stopped``
    (a process briefly stopped by a debugger or ``py-spy --blocking`` is running again by then)."""
    identity: ProcessIdentity | None = None
    """Schema v2: host, pid and PID-namespace identity (None only when built by hand)."""
    cwd_dir: str | None = None
    """``<st_dev>:<st_ino>`` of its working directory (``stat`` through ``/proc/<pid>/cwd``, which reaches it from
    any mount namespace; None: not read). In a container ``cwd`` is the path inside it."""

    def ident(self, host: str) -> ProcessIdentity:
        """:attr:`identity`, or a plain host one (``host``, pid, start time) when it was not recorded."""
        return self.identity or ProcessIdentity(host, self.pid, self.create_time, self.pid)

    def key(self, host: str) -> ProcKey:
        """Its host (``host`` when its identity names none) and pid."""
        return ProcKey(self.identity.host if self.identity is not None and self.identity.host else host, self.pid)


@dataclass
class Frame:
    """One Python frame from py-spy."""

    name: str
    filename: str
    line: int = 0
    module: str | None = None
    locals: dict[str, str] | None = None
    code: str | None = None
    """Source line of the frame (read by the stacks probe from the file, redacted), when readable."""
    loop: list[str] | None = None
    """Innermost thread frame only: source of the innermost ``while``/``for`` loop of its function around
    ``line`` (header first, redacted, at most 12 lines, ``…`` last when cut); ``[]`` when no loop encloses it;
    None when not read."""


@dataclass
class FileLock:
    """One line of ``/proc/locks`` (a flock/POSIX/OFD lock, held or waited for)."""

    pid: int
    """The owner (or, with ``blocked``, the waiter) as ``/proc/locks`` names it."""
    kind: str
    """``FLOCK``, ``POSIX`` or ``OFDLCK``."""
    access: str = ""
    """``READ`` or ``WRITE``."""
    blocked: bool = False
    """A waiter (``->`` line), not a holder."""
    cmdline: list[str] = field(default_factory=list)
    """The pid's command line (redacted) when it could be read."""
    create_time: float | None = None


@dataclass
class WaitFd:
    """A file descriptor a blocked system call waits on, and what it points to."""

    fd: int
    target: str = ""
    """``/proc/PID/fd/FD`` link: ``socket:[123]``, ``pipe:[4]``, a path, ``anon_inode:[eventpoll]``."""
    inode: int | None = None
    dev: str = ""
    """``maj:min`` in hex as ``/proc/locks`` prints it (files only)."""
    locks: list[FileLock] = field(default_factory=list)
    """``/proc/locks`` lines for this file's inode (read only for ``flock``/``fcntl`` waits)."""


@dataclass
class LockFile:
    """A lock file of the bench that someone holds an OS lock on now (from ``/proc/locks``)."""

    path: str
    inode: int
    dev: str = ""
    locks: list[FileLock] = field(default_factory=list)


@dataclass
class ThreadStack:
    """One thread of one sample, innermost frame first (py-spy order)."""

    thread_id: int
    name: str | None = None
    active: bool = False
    owns_gil: bool = False
    frames: list[Frame] = field(default_factory=list)
    os_thread_id: int | None = None
    """Kernel thread id (Linux TID) when py-spy reports it."""
    wchan: str | None = None
    """Kernel wait channel of the thread at the sample (``/proc/PID/task/TID/wchan``; ``0`` = running)."""
    syscall: str | None = None
    """System call the thread is in (``/proc/PID/task/TID/syscall``): ``recvfrom``, ``flock``…, ``running``,
    ``none`` (blocked outside a syscall), ``nr 123`` (unnamed); None when unreadable."""
    syscall_nr: int | None = None
    wait_fds: list[WaitFd] = field(default_factory=list)
    """The fds that syscall waits on (its fd argument; a poll/select/epoll set when it could be read)."""
    wait_fds_exact: bool = False
    """``wait_fds`` is the complete set the call waits on (False: none, or only part of it, was read)."""
    lock_files: list[LockFile] = field(default_factory=list)
    """Held lock files of the process's bench (``sites/*/locks/*.lock``, ``config/*.lock``), read only while
    the thread runs ``filelock`` code, which polls and holds no fd between attempts."""
    last_ran_s: float | None = None
    """Seconds the thread had not run on a CPU when this sample was read, from the kernel scheduler
    (``/proc/PID/task/TID/sched``), set only when it ran neither during the dump nor since, and was not
    runnable: the stack seen is the one it has been in all that time. None: not known (or it ran)."""


@dataclass
class IoCounters:
    """``/proc/PID/io`` of a process (all its threads). Socket ``send``/``recv`` calls are not counted."""

    syscr: int
    """Read-type syscalls (``read``, ``pread``…) so far."""
    syscw: int
    rchar: int
    """Bytes passed to read-type syscalls (files, pipes, ``read()`` on sockets; page cache included)."""
    wchar: int
    read_bytes: int
    """Bytes really fetched from storage."""
    write_bytes: int


@dataclass
class StackSample:
    """One ``py-spy dump`` of a process, with the process's progress counters read just before it."""

    taken_at: float
    threads: list[ThreadStack] = field(default_factory=list)
    cpu_time: float | None = None
    """Process CPU seconds when the sample was taken."""
    io: IoCounters | None = None
    """``/proc/PID/io`` (None: unreadable, see ``snapshot.errors``)."""
    voluntary_ctx_switches: int | None = None
    """Voluntary context switches of the main thread (``/proc/PID/status``: the thread group leader only);
    every blocking call that waits (sleep, socket read, lock) adds one."""
    involuntary_ctx_switches: int | None = None
    source: str = "py-spy"
    """``py-spy``, or ``faulthandler``: the process's own dump on SIGUSR1 (ASCII, at most 100 frames, no locals),
    read where py-spy could not attach."""


@dataclass
class ProcessStacks:
    """Several samples of one process over a short window."""

    pid: int
    samples: list[StackSample] = field(default_factory=list)
    mode: str = "nonblocking"
    resumed_stopped: bool = False
    """A blocking dump left the process stopped and rqdoctor sent SIGCONT."""
    error: ProbeError | None = None
    host: str = ""
    """The host the process runs on, in a snapshot merged from several hosts (empty: the snapshot's ``host``)."""


@dataclass
class DbSession:
    """One database session (MariaDB/MySQL thread or PostgreSQL backend)."""

    server: str
    """Redacted DSN of the server the session lives on."""
    session_id: int
    user: str | None = None
    db: str | None = None
    client_host: str | None = None
    client_port: int | None = None
    client_pid: int | None = None
    """From the ``_pid`` connection attribute or a matched local socket."""
    client_match: str = ""
    """How client_pid was found (``tcp``/``unix``/``_pid``) or why not (``remote``/``hidden``/``unix_ambiguous``/…);
    in a merged snapshot ``tcp@<host>``: matched on another collected host by its socket's address."""
    command: str | None = None
    state: str | None = None
    time_s: float | None = None
    query: str | None = None
    trx_age_s: float | None = None
    trx_rows_locked: int | None = None
    idle_in_transaction: bool = False
    wait_event: str | None = None
    examined_rows: int | None = None
    """MariaDB ``EXAMINED_ROWS`` at the first read (limited views only)."""
    examined_rows_later: int | None = None
    """The same counter read again a moment later (unchanged: the statement made no progress)."""
    client_pid_host: str | None = None
    """The host client_pid is on, in a merged snapshot (None: the snapshot's ``host``)."""


@dataclass
class DbAccess:
    """How one server was reached: the account and the route that found it."""

    server: str
    """Redacted DSN of the connection used (the ``server`` of its sessions)."""
    user: str
    route: str
    """``--db-url``, ``root_password`` (site config), ``unix_socket`` (as OS root) or ``site_account``."""
    detail: str = ""
    """Where the route came from, e.g. ``root_password in the config of site1.local``."""
    privileged: bool = False
    """It sees every session and the lock views (no ``limited`` entry)."""
    tried: list[str] = field(default_factory=list)
    """Routes tried before it, each with why it was not used (passwords never included)."""


@dataclass
class LockWait:
    """One waiter → blocker edge of the lock-wait graph."""

    server: str
    waiting_session: int
    blocking_session: int
    kind: str = "row"
    """``row`` or ``metadata``."""
    table: str | None = None
    lock_mode: str | None = None
    wait_age_s: float | None = None
    inferred: bool = False
    """The blocker is a best guess (MariaDB metadata lock without METADATA_LOCK_INFO), not read from the server."""


@dataclass
class DatabaseState:
    """What the database probe saw, on every server it reached."""

    servers: list[str] = field(default_factory=list)
    sessions: list[DbSession] = field(default_factory=list)
    lock_waits: list[LockWait] = field(default_factory=list)
    limited_view: list[str] = field(default_factory=list)
    """Servers seen only through per-site accounts (other users' sessions may be hidden)."""
    access: list[DbAccess] = field(default_factory=list)
    """Per server: the account and route used."""
    scope: list[str] = field(default_factory=list)
    """Databases the report is about (the bench's sites and ``--db-url`` ones); empty: every database."""
    hidden_sessions: int = 0
    """Sessions of other databases left out (neither in scope nor in a lock wait with one in scope)."""
    hidden_lock_waits: int = 0


@dataclass
class DocLockFile:
    """A file in ``sites/<site>/locks/`` (``stuck`` only): a Frappe document lock exists as a plain file."""

    site: str
    path: str
    name: str
    """File name without ``.lock``: a 56-hex ``sha224("<doctype>:<name>")`` for ``Document.lock()``."""
    mtime: float
    held_by: list[FileLock] = field(default_factory=list)
    """``/proc/locks`` holders of the file (a ``filelock`` lock; a document lock has none)."""


@dataclass
class JobLogRow:
    """A ``tabScheduled Job Log`` row with status ``Start`` (``stuck`` only)."""

    site: str
    name: str
    scheduled_job_type: str
    method: str | None = None
    """``tabScheduled Job Type.method`` of its type."""
    creation: str = ""
    """As stored (Frappe writes the System Settings time zone, naive)."""
    age_s: float | None = None
    """Seconds since ``creation``: read in ``time_zone`` when known, else by the database's clock (``NOW()``)."""
    time_zone: str | None = None
    """The site's System Settings time zone ``creation`` was read in (None: unknown, ``age_s`` from ``NOW()``)."""


@dataclass
class FrappeState:
    """Frappe leftovers seen by ``stuck``: document lock files and Scheduled Job Log rows left in ``Start``."""

    lock_dirs: list[str] = field(default_factory=list)
    """``sites/<site>/locks`` directories read."""
    locks: list[DocLockFile] = field(default_factory=list)
    job_log_sites: list[str] = field(default_factory=list)
    """Sites whose Scheduled Job Log was read (a site missing here: see ``snapshot.errors``)."""
    job_log_rows: list[JobLogRow] = field(default_factory=list)
    scheduled_methods: dict[str, list[str]] = field(default_factory=dict)
    """Site -> methods of its enabled Scheduled Job Types (their job ids were looked up directly)."""


@dataclass
class ConfigFlag:
    """A scheduler key set in a bench config file (``maintenance_mode``, ``pause_scheduler``, ``disable_scheduler``)."""

    key: str
    value: str
    """As written (JSON text: ``1``, ``true``, ``"yes"``)."""
    source: str
    """The file it is set in; ``sites/<site>/site_config.json`` wins over ``sites/common_site_config.json``."""
    active: bool
    """Whether Frappe reads it as true (a truthy JSON value)."""


@dataclass
class ScheduledJobTypeRow:
    """A ``tabScheduled Job Type`` row (``scheduler`` only)."""

    name: str
    method: str
    frequency: str
    cron_format: str | None = None
    last_execution: str | None = None
    """As stored: naive, in the site's System Settings time zone."""
    stopped: bool = False


@dataclass
class JobLogFailures:
    """``Failed`` rows of ``tabScheduled Job Log`` of one scheduled job type in the last day (``scheduler`` only)."""

    scheduled_job_type: str
    failed: int
    last_failed: str = ""
    last_line: str = ""
    """The last non-empty line of the newest row's ``details`` (its traceback)."""


@dataclass
class SiteScheduler:
    """What one site says about its scheduler: config keys, and (when its database was read) System Settings."""

    site: str
    flags: list[ConfigFlag] = field(default_factory=list)
    db_read: bool = False
    """Whether the site's database was read (False: see ``snapshot.errors``; nothing below is known)."""
    enable_scheduler: bool | None = None
    """System Settings ``enable_scheduler`` (None: no row; Frappe's default is 0, disabled)."""
    dormant_days: int | None = None
    last_activity: str | None = None
    """``creation`` of the newest Activity Log row (site time zone, naive), None when there is none."""
    time_zone: str | None = None
    db_now: str | None = None
    """The database's ``NOW()`` when read (used when the site's time zone is unknown)."""
    job_types: list[ScheduledJobTypeRow] = field(default_factory=list)
    failures: list[JobLogFailures] = field(default_factory=list)


@dataclass
class SchedulerLock:
    """``<bench>/config/scheduler_process``: Frappe's scheduler holds an flock on it while it runs (v15+)."""

    path: str
    state: str
    """``held`` (a non-blocking flock attempt failed: someone holds it), ``free`` (the attempt succeeded and was
    released at once: nobody holds it), ``missing`` (no such file) or ``unreadable``."""
    detail: str = ""
    held_by: list[FileLock] = field(default_factory=list)
    """``/proc/locks`` holders of the file."""


@dataclass
class CronSchedulerInfo:
    """An rq cron scheduler (rq >= 2.4): its ``rq:cron_schedulers`` entry and ``rq:cron_scheduler:<name>`` hash."""

    name: str
    last_heartbeat: float | None = None
    """The ZSET score (epoch seconds of the last heartbeat)."""
    hash_exists: bool = False
    hostname: str | None = None
    pid: int | None = None
    created_at: float | None = None
    jobs: list[dict[str, str]] = field(default_factory=list)
    """Each cron job: ``func_name``, ``queue_name``, ``cron``, ``interval``, ``latest_enqueue_time``,
    ``next_enqueue_time``."""


@dataclass
class FailedJob:
    """A recent entry of a ``rq:failed:<queue>`` registry, with the end of its error (never unpickled)."""

    job_id: str
    queue: str
    method: str | None = None
    ended_at: float | None = None
    exists: bool = True
    error_tail: list[str] = field(default_factory=list)
    """The last lines of ``exc_info`` (zlib-decompressed, or the newest result's ``exc_string``)."""


@dataclass
class HealthState:
    """Scheduler and bench health (``scheduler`` and ``report``): the scheduler's lock and process, each site's
    scheduler settings, rq's cron schedulers, named Redis connections, recent failures, OOM kills."""

    lock: SchedulerLock | None = None
    processes: list[ProcessInfo] = field(default_factory=list)
    """``frappe schedule`` processes of this bench (cwd ``<bench>/sites``)."""
    processes_read: bool = False
    sites: list[SiteScheduler] = field(default_factory=list)
    tick_s: int = 60
    """``scheduler_tick_interval`` (Frappe v15 default 60 s)."""
    all_interval_s: int = 240
    """``scheduler_interval``: how often the ``All`` frequency runs (default 240 s)."""
    background_workers: int | None = None
    """``background_workers`` of common_site_config.json (None: not set; bench's default is 1)."""
    cron_read: bool = False
    cron_schedulers: list[CronSchedulerInfo] = field(default_factory=list)
    client_names: list[str] | None = None
    """Names of Redis client connections (``CLIENT LIST``); None: not read."""
    failed_read: bool = False
    failed_total: int = 0
    """Entries in the shown queues' failed registries."""
    failed: list[FailedJob] = field(default_factory=list)
    oom_kills: dict[str, int] = field(default_factory=dict)
    """cgroup ``memory.events`` file -> its ``oom_kill`` count (only files that could be read)."""
    kernel_log_read: bool = False
    """Whether ``/dev/kmsg`` could be read (root, or ``kernel.dmesg_restrict = 0``)."""
    kernel_oom: list[str] = field(default_factory=list)
    """The kernel's ``Killed process`` / ``Out of memory`` lines of the last hour (at most 20)."""


@dataclass
class PreflightCheck:
    """One ``rqdoctor preflight`` line (:mod:`rqdoctor.preflight`); in a snapshot, a local check that failed."""

    name: str
    status: str
    """``ok``, ``warning`` or ``failed``."""
    detail: str
    fix: list[str] = field(default_factory=list)
    """What to do about it, one line each (commands included)."""


@dataclass
class HostSnapshot:
    """One host of a snapshot merged from several (``rqdoctor collect`` on each, then ``--from`` repeated)."""

    name: str
    generated_at: float
    rqdoctor_version: str = ""
    source: str = ""
    """The file it was read from."""
    redis_used: bool = False
    """Its Redis state is the one diagnosed (the newest snapshot's)."""
    bench_path: str | None = None
    """Its bench's root (each host's own: its workers run there)."""
    bench_dirs: list[str] = field(default_factory=list)
    """Its :attr:`TargetInfo.bench_dirs`."""
    health_used: bool = False
    """Its scheduler and bench health is the one diagnosed (the host whose scheduler runs, else the newest)."""


@dataclass
class Snapshot:
    """The contract between probes, diagnosis and renderers."""

    host: str
    generated_at: float
    target: TargetInfo
    schema_version: int = SCHEMA_VERSION
    rqdoctor_version: str = ""
    redis: RedisState | None = None
    processes: list[ProcessInfo] = field(default_factory=list)
    stacks: list[ProcessStacks] = field(default_factory=list)
    database: DatabaseState | None = None
    errors: list[ProbeError] = field(default_factory=list)
    preflight: list[PreflightCheck] = field(default_factory=list)
    """The cheap local checks (py-spy, ptrace, interpreters) that fail for this run's stacks; empty: ready."""
    frappe: FrappeState | None = None
    """``stuck`` only: the bench's document locks and Scheduled Job Log rows (None: not read)."""
    health: HealthState | None = None
    """``scheduler`` and ``report``: scheduler and bench health (None: not read)."""
    hosts: list[HostSnapshot] = field(default_factory=list)
    """Merged from several hosts: each of them (empty: one host, ``host``). ``host`` is then the one whose Redis
    state is used; every process's ``identity.host`` says where it runs."""

    def key(self, p: ProcessInfo) -> ProcKey:
        """The host and pid of one of its processes."""
        return p.key(self.host)

    @property
    def own_host(self) -> str:
        """The host whose processes are named without it (this snapshot's); empty when merged from several hosts,
        where every process is named with its host."""
        return "" if self.hosts else self.host

    def bench_of(self, host: str) -> str | None:
        """The bench root on ``host`` (merged: that host's own, from its snapshot)."""
        found = next((h for h in self.hosts if h.name == host), None)
        return found.bench_path if found is not None else self.target.bench_path

    def in_bench(self, p: ProcessInfo, host: str) -> bool | None:
        """Whether ``p`` works in the bench root or its ``sites`` folder on ``host``, by directory identity when
        both were read (a container's cwd is a path inside it), else by path; None: its cwd or the bench unknown."""
        found = next((h for h in self.hosts if h.name == host), None)
        dirs = found.bench_dirs if found is not None else self.target.bench_dirs
        if dirs and p.cwd_dir:
            return p.cwd_dir in dirs
        bench = self.bench_of(host)
        if bench is None or p.cwd is None:
            return None
        return p.cwd in {os.path.realpath(bench), os.path.realpath(os.path.join(bench, "sites"))}

    def stacks_of(self, key: ProcKey) -> ProcessStacks | None:
        """The stack samples of a process."""
        return self._index("stacks", self.stacks, lambda s: ProcKey(s.host or self.host, s.pid)).get(key)

    def process(self, key: ProcKey) -> ProcessInfo | None:
        """A process by host and pid."""
        return self._index("processes", self.processes, self.key).get(key)

    def _index(self, name: str, items: list[T], key_of: Callable[[T], ProcKey]) -> dict[ProcKey, T]:
        """``items`` by process key, the first of each key; rebuilt when the list was replaced or grew (the
        probes append to it while collecting), so that per-job lookups stay O(1) at thousands of processes."""
        cache = self.__dict__.setdefault("_indexes", {})
        cached = cache.get(name)
        if cached is None or cached[0] is not items or cached[1] != len(items):
            index: dict[ProcKey, T] = {}
            for item in items:
                index.setdefault(key_of(item), item)
            cached = cache[name] = (items, len(items), index)
        return cached[2]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON: what ``dataclasses.asdict`` gives, without its deep copy of every leaf value
        (most of a big report's JSON time; the leaves here are immutable, or shared lists copied level by
        level as asdict does)."""
        return plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """Rebuild a snapshot from :meth:`to_dict` output (an older schema is migrated first); unknown keys are
        ignored."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if type(version) is int and 1 <= version < SCHEMA_VERSION:
            from rqdoctor import schema  # schema imports this module

            data, version = schema.upgrade(data), SCHEMA_VERSION
        if type(version) is not int or version != SCHEMA_VERSION:
            raise ValueError(f"unsupported snapshot schema_version {version!r} "
                             f"(this rqdoctor reads {SCHEMA_VERSION})")
        return from_plain(cls, data)


def plain(value: Any) -> Any:
    """``dataclasses.asdict`` of a dataclass tree: dataclasses to dicts, lists, tuples and dicts rebuilt, leaves
    (str, int, float, bool, None) kept as they are."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is list:
        return [plain(v) for v in value]
    names = _field_names(kind)
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        items = [plain(v) for v in value]
        return kind(*items) if hasattr(value, "_fields") else kind(items)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


_LEAVES = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type (None: not a dataclass)."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple(f.name for f in dataclasses.fields(kind))


def from_plain(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from plain JSON data, recursively, following its type hints.

    Unknown keys are ignored; a value of the wrong shape raises ``ValueError`` naming its path
    (``redis.workers.pid: expected int, found str``).
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected an object ({cls.__name__}), found {_json_type(data)}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            try:
                kwargs[f.name] = _convert(hints[f.name], data[f.name])
            except ValueError as exc:
                sep = ": " if str(exc).startswith("expected") else "."
                raise ValueError(f"{f.name}{sep}{exc}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(str(exc).replace(".__init__()", ":")) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value) if len(args) == 1 else value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, found {_json_type(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, found {_json_type(value)}")
        _, item = typing.get_args(hint)
        return {k: _convert(item, v) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"expected {hint.__name__}, found {_json_type(value)}")
    return value
