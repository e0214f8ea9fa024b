"""Real rq worker processes for integration tests, and raw-Redis waiters.

Workers run in the flavour's venv in their own session (``start_new_session=True``), so each
``WorkerProcess`` owns exactly one process group. ``stop()`` signals only that group, plus the
work-horse groups (rq puts each horse in a group of its own) and any descendant the harness
has seen: never anything found by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import redis

from .bench import Bench
from .venvs import RQ_FLAVOURS, ensure_venv, venv_python

EXECUTE_JOB = "frappe.utils.background_jobs.execute_job"
_STRIP_ENV = ("PYTHONPATH", "VIRTUAL_ENV", "RQ_KEY_PREFIX", "RQDOCTOR_TEST_WORKER_CLASS", "FRAPPE_BENCH_ROOT",
              "PYTHONHOME")


@dataclass
class WorkerProcess:
    """One started worker command (a worker, a pool, or plain ``rq worker``) and its tree."""

    popen: subprocess.Popen[bytes]
    argv: list[str]
    cwd: Path
    flavour: str
    log_path: Path
    simple: bool = False
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    namespace: str | None = None
    """Started in its own PID and UTS namespace (``unshare``) with this hostname: its hash names
    that hostname and its pid inside the namespace (see :meth:`host_pid`)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The leader and its live descendants now; every one is remembered for stop()."""
        try:
            leader = psutil.Process(self.pid)
            procs = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def host_pid(self, pid: int) -> int | None:
        """The host pid of the process of this tree whose pid is ``pid`` as its hash names it (the last
        ``NSpid`` in a namespace; the pid itself otherwise)."""
        if self.namespace is None:
            return pid
        for p in self.tree():
            if ns_pid(p.pid) == pid and p.pid != self.pid:
                return p.pid
        return None

    def remember(self, proc: psutil.Process) -> None:
        """Track a process of this tree (e.g. an orphaned horse) so stop() ends it."""
        self.seen.setdefault(proc.pid, proc)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM our groups and every process we saw, then SIGKILL what is left; reap."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = self._ours()
            if not procs:
                break
            self._signal(procs, sig)
            deadline = time.monotonic() + grace
            while self._ours() and time.monotonic() < deadline:
                self.popen.poll()  # reap the leader as soon as it exits
                time.sleep(0.05)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)

    def _ours(self) -> list[psutil.Process]:
        self.tree()
        return [p for p in self.seen.values() if _running(p)]

    def _signal(self, procs: list[psutil.Process], sig: int) -> None:
        """Signal ``procs`` and the groups they are in, if led by our leader or one of them."""
        ours = {self.pid} | {p.pid for p in procs}  # our session's group, horses' own groups
        groups = set()
        for p in procs:
            with suppress(ProcessLookupError):
                groups.add(os.getpgid(p.pid))
        for pgid in groups & ours:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for p in procs:
            with suppress(psutil.NoSuchProcess):
                p.send_signal(sig)  # psutil checks the pid was not reused


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ns_pid(pid: int) -> int | None:
    """The last ``NSpid`` of ``/proc/<pid>/status``: the pid in the process's own PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("NSpid:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[-1])


def in_namespace(argv: list[str], hostname: str) -> list[str]:
    """``argv`` run as PID 1 of new PID, UTS and mount namespaces (``/proc`` remounted) with ``hostname``."""
    return ["unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c", 'hostname "$0" && exec "$@"',
            hostname, *argv]


def unshare_refusal() -> str | None:
    """Why a worker cannot be started in its own namespaces here (None: it can)."""
    try:
        done = subprocess.run(in_namespace(["true"], "rqdoctor-probe"), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run: {exc}"
    return None if done.returncode == 0 else f"unshare --pid --uts failed: {done.stderr.strip()[:200]}"


class OtherHost(Protocol):
    """A host of :mod:`tests.harness.hosts`: runs a command inside its own namespaces."""

    name: str

    def enter(self, argv: Sequence[str], cwd: str | os.PathLike[str] = "/") -> list[str]: ...


def _spawn(argv: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _env(bench: Bench, simple: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    env.update(PYTHONPATH=bench.pythonpath, PYTHONUNBUFFERED="1")
    if simple:
        env["RQDOCTOR_TEST_WORKER_CLASS"] = "simple"
    return env


def start_frappe_worker(
    bench: Bench,
    flavour: str,
    queues: Sequence[str] | None = ("short", "default"),
    *,
    pool_size: int | None = None,
    simple: bool = False,
    burst: bool = False,
    env: dict[str, str] | None = None,
    namespace: str | None = None,
    host: OtherHost | None = None,
) -> WorkerProcess:
    """Start ``python -m frappe.utils.bench_helper frappe worker --queue …`` (cwd ``sites``).

    ``queues`` are Frappe queue types (None = all); ``pool_size`` runs ``worker-pool``; ``env`` is added to
    the worker's environment (e.g. ``RQ_KEY_PREFIX``); ``namespace``: in its own PID and UTS namespace with
    that hostname, as in a container (root only; see :func:`in_namespace`); ``host``: inside that host of
    :mod:`tests.harness.hosts` (its hash names the host's name and its pid there).
    """
    python = bench.attach_env(ensure_venv(flavour))
    argv = [str(python), "-m", "frappe.utils.bench_helper", "frappe"]
    argv += ["worker-pool"] if pool_size else ["worker"]
    if queues:
        argv += ["--queue", ",".join(queues)]
    if pool_size:
        argv += ["--num-workers", str(pool_size)]
    if burst:
        argv.append("--burst")
    log = bench.logs_path / "worker.log"
    command = host.enter(argv, bench.sites_path) if host else in_namespace(argv, namespace) if namespace else argv
    popen = _spawn(command, bench.sites_path, {**_env(bench, simple), **(env or {})}, log)
    return WorkerProcess(popen, argv, bench.sites_path, flavour, log, simple=simple,
                         namespace=host.name if host else namespace)


def start_rq_worker(
    bench: Bench,
    flavour: str,
    queues: Sequence[str],
    *,
    simple: bool = False,
    name: str | None = None,
    burst: bool = False,
) -> WorkerProcess:
    """Start the venv's plain ``rq worker -u <redis_url> <queues…>`` (raw queue names)."""
    argv = [str(ensure_venv(flavour) / "bin" / "rq"), "worker", "-u", bench.redis_url]
    if simple:
        argv += ["-w", "rq.SimpleWorker"]
    if name:
        argv += ["-n", name]
    if burst:
        argv.append("--burst")
    argv += list(queues)
    log = bench.logs_path / "rq-worker.log"
    popen = _spawn(argv, bench.sites_path, _env(bench, False), log)
    return WorkerProcess(popen, argv, bench.sites_path, flavour, log, simple=simple)


# --- enqueueing (runs inside the venv, which has rq) -------------------------------------

_ENQUEUE = r"""
import json, sys
from redis import Redis
from rq import Queue
spec = json.loads(sys.argv[1])
q = Queue(spec["queue"], connection=Redis.from_url(spec["redis_url"]))
job = q.enqueue_call(spec["func"], kwargs=spec["kwargs"], timeout=spec["timeout"],
                     job_id=spec["job_id"], result_ttl=600, failure_ttl=7 * 24 * 3600,
                     at_front=spec["at_front"])
print(job.id)
"""


def rq_job_id(flavour: str, site: str, job_id: str | None = None) -> str:
    """The RQ job id Frappe would use with this rq: ``site::id`` (v15), ``site||id`` (v16),
    or a plain ``[A-Za-z0-9_-]+`` id for rq >= 2.8."""
    style = RQ_FLAVOURS[flavour].job_id_style
    if style == "frappe15":
        return f"{site}::{job_id or uuid.uuid4()}"
    if style == "frappe16":
        return f"{site}||{(job_id or str(uuid.uuid4())).replace(':', '|')}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", job_id) if job_id else uuid.uuid4().hex


def enqueue(
    flavour: str,
    redis_url: str,
    queue: str,
    method: str,
    kwargs: dict[str, Any] | None = None,
    *,
    site: str = "site1.local",
    job_id: str | None = None,
    job_timeout: int = 300,
    user: str = "Administrator",
    at_front: bool = False,
) -> str:
    """Enqueue a Frappe-style ``execute_job`` call onto raw queue ``queue``; returns the RQ id."""
    spec = {
        "redis_url": redis_url, "queue": queue, "func": EXECUTE_JOB, "timeout": job_timeout,
        "job_id": rq_job_id(flavour, site, job_id), "at_front": at_front,
        "kwargs": {"site": site, "user": user, "method": method, "event": None,
                   "job_name": method, "is_async": True, "kwargs": kwargs or {}},
    }
    proc = subprocess.run([str(venv_python(ensure_venv(flavour))), "-c", _ENQUEUE, json.dumps(spec)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"enqueue failed in {flavour}:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1]


# --- waiting on raw Redis ----------------------------------------------------------------


@dataclass
class StartedJob:
    """A job seen as started: its hash, the worker hash's name and pid, and the horse."""

    job_id: str
    job: dict[str, str]
    worker_name: str
    worker_pid: int
    horse: psutil.Process | None

    @property
    def executing_pid(self) -> int:
        """Pid running the job code: the horse, or the worker itself for SimpleWorker."""
        return self.horse.pid if self.horse else self.worker_pid


def find_horse(worker_pid: int) -> psutil.Process | None:
    """The work-horse: a child of ``worker_pid`` leading its own process group."""
    try:
        children = psutil.Process(worker_pid).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if os.getpgid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return None


def _s(v: Any) -> Any:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def hgetall_text(r: redis.Redis, key: str) -> dict[str, str]:
    """HGETALL as ``str``, whatever the client's ``decode_responses`` (binary kept lossless)."""
    return {_s(k): _s(v) for k, v in r.hgetall(key).items()}


def text_client(url: str) -> redis.Redis:
    """A redis-py client returning ``str``; binary values (job ``data``) via surrogateescape."""
    return redis.Redis.from_url(url, decode_responses=True, encoding_errors="surrogateescape")


def _describe(r: redis.Redis, worker: WorkerProcess | None, job_id: str | None = None) -> str:
    parts = []
    if job_id:
        job = hgetall_text(r, f"rq:job:{job_id}")
        job.pop("data", None)
        parts.append(f"job hash: {job}")
    parts.append(f"rq:workers: {sorted(map(_s, r.smembers('rq:workers')))}")
    if worker:
        tree = []
        for p in worker.tree():
            try:
                tree.append((p.pid, p.ppid(), os.getpgid(p.pid), " ".join(p.cmdline())))
            except (psutil.Error, OSError):
                tree.append((p.pid, "gone"))
        parts += [f"worker alive: {worker.alive()} rc={worker.popen.returncode}",
                  f"process tree: {tree}", f"log tail:\n{worker.log_tail()}"]
    return "\n".join(parts)


def worker_hashes(r: redis.Redis) -> dict[str, dict[str, str]]:
    """``{worker name: hash}`` for every member of ``rq:workers`` whose hash exists."""
    out = {}
    for key in map(_s, r.smembers("rq:workers")):
        h = hgetall_text(r, key)
        if h:
            out[key.removeprefix("rq:worker:")] = h
    return out


def wait_for_worker_registered(
    r: redis.Redis, worker: WorkerProcess, *, count: int = 1, timeout: float = 30.0
) -> list[str]:
    """Wait until ``count`` worker hashes have a pid in ``worker``'s tree; return their names."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {ns_pid(p.pid) if worker.namespace else p.pid for p in worker.tree() if p.pid != worker.pid
                or not worker.namespace}
        names = [n for n, h in worker_hashes(r).items() if int(h.get("pid", -1)) in pids]
        if len(names) >= count:
            return names
        if not worker.alive() or time.monotonic() > deadline:
            raise AssertionError(
                f"{count} worker(s) of pid {worker.pid} not registered in {timeout}s "
                f"(found {names})\n{_describe(r, worker)}")
        time.sleep(0.1)


def wait_for_job_started(
    r: redis.Redis, job_id: str, worker: WorkerProcess | None = None, *, timeout: float = 30.0
) -> StartedJob:
    """Wait until ``rq:job:<id>`` says started and (unless SimpleWorker) its horse exists."""
    deadline = time.monotonic() + timeout
    expect_horse = not (worker and worker.simple)
    while True:
        job = hgetall_text(r, f"rq:job:{job_id}")
        status, name = job.get("status"), job.get("worker_name")
        if status in ("finished", "failed", "stopped", "canceled"):
            raise AssertionError(f"job {job_id} ended as {status!r} before we saw it run: "
                                 f"{job.get('exc_info', '')[:2000]}\n{_describe(r, worker)}")
        if status == "started" and name:
            pid = _s(r.hget(f"rq:worker:{name}", "pid"))
            if pid and worker is not None and worker.namespace is not None:
                pid = str(worker.host_pid(int(pid)) or "")  # never the host's pid 1
            horse = find_horse(int(pid)) if pid else None
            if pid and (horse or not expect_horse):
                if worker and horse:
                    worker.remember(horse)
                return StartedJob(job_id, job, name, int(pid), horse)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not started (with a horse: {expect_horse}) "
                                 f"within {timeout}s\n{_describe(r, worker, job_id)}")
        time.sleep(0.1)


def wait_for_job_status(
    r: redis.Redis, job_id: str, statuses: Sequence[str], *, timeout: float = 30.0
) -> dict[str, str]:
    """Wait until the job hash's status is one of ``statuses``; return the hash."""
    deadline = time.monotonic() + timeout
    while True:
        job = hgetall_text(r, f"rq:job:{job_id}")
        if job.get("status") in statuses:
            return job
        if time.monotonic() > deadline:
            job.pop("data", None)
            raise AssertionError(f"job {job_id} status {job.get('status')!r} not in {statuses} "
                                 f"after {timeout}s: {job}")
        time.sleep(0.1)


class Workers:
    """Starts workers and always stops every one of them (use as context manager/fixture)."""

    def __init__(self) -> None:
        self.started: list[WorkerProcess] = []

    def frappe(self, bench: Bench, flavour: str, queues: Sequence[str] | None = ("short", "default"),
               **kw: Any) -> WorkerProcess:
        """:func:`start_frappe_worker`, tracked."""
        return self._track(start_frappe_worker(bench, flavour, queues, **kw))

    def rq(self, bench: Bench, flavour: str, queues: Sequence[str], **kw: Any) -> WorkerProcess:
        """:func:`start_rq_worker`, tracked."""
        return self._track(start_rq_worker(bench, flavour, queues, **kw))

    def _track(self, w: WorkerProcess) -> WorkerProcess:
        self.started.append(w)
        return w

    def stop_all(self) -> None:
        errors = []
        for w in reversed(self.started):
            try:
                w.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextmanager
def running_workers() -> Iterator[Workers]:
    """``with running_workers() as w: w.frappe(bench, "rq115")`` - cleaned up in ``finally``."""
    workers = Workers()
    try:
        yield workers
    finally:
        workers.stop_all()
