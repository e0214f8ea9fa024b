"""RQD112: a job blocked on an OS file lock (Frappe ``filelock()``, the ``filelock`` package, ``fcntl.flock``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from rqdoctor.diagnose.advice import on_host_command, process_ref
from rqdoctor.diagnose.context import Context, JobFacts
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.diagnose.rules_jobs import _activity_line
from rqdoctor.model import FileLock, ProcessIdentity, ProcessInfo, ProcKey

_FIX_HOLDER = (
    "The lock is an OS flock held by {holder}: the job waits until that process closes the file or exits. "
    "Find out what the holder is doing first: a migrate, install, restore or build holding a Frappe file lock "
    "(sites/<site>/locks/<name>.lock, or config/<name>.lock for global ones) will release it when it finishes, so "
    "wait; a holder that is itself stuck releases it only when it ends, so end it. Deleting the lock file does not "
    "release an flock (it only lets the next locker take a new file beside the holder); Frappe's filelock() gives "
    "up with LockTimeoutError after its timeout (30 s by default), plain flock waits forever."
)
_FIX_NO_HOLDER = (
    "No process holds this file in /proc/locks now, so the next attempt should get it; if the job stays here, "
    "look at its stack again (the lock may be taken and dropped again and again by another process)."
)
_FIX_UNSEEN = (
    "Who holds the lock could not be read here (the waiting thread's system call and /proc/locks need root or the "
    "workers' user, and a polling filelock holds no fd between attempts). List the held locks with their pids and "
    "files, see what the holder is doing, and wait for it or end it; do not delete the lock file."
)
_UNSEEN_COMMANDS = ["lslocks --output PID,TYPE,MODE,PATH,COMMAND", "cat /proc/locks"]


class LockWait(NamedTuple):
    """The lock file a job waits for and the ``/proc/locks`` lines of its inode."""

    path: str
    inode: int | None
    locks: list[FileLock]
    how: str
    """How the file was found: ``flock() on fd 7``, ``filelock's lock_filename``, ``the only … held now``."""
    others: list[str]
    """Other held lock files it could be (the wait's file is not known exactly)."""


_PATH_LOCALS = ("lock_filename", "lock_file", "lock_path")


def lock_wait(ctx: Context, runner: ProcKey, thread_id: int | None) -> LockWait | None:
    """The file the job's thread waits to lock, from its latest sample that tells.

    Exactly: the blocked ``flock``/``fcntl`` call's fd. For a polling ``filelock`` (no fd between
    attempts): the held lock file a frame's locals name, else the only held lock file of the bench.
    """
    stacks, pid = ctx.snapshot.stacks_of(runner), runner.pid
    threads = [t for s in reversed(stacks.samples if stacks else []) for t in s.threads if t.thread_id == thread_id]
    for t in threads:
        fd = next((w for w in t.wait_fds if w.target.startswith("/")), None)
        if t.syscall in ("flock", "fcntl") and fd is not None:
            return LockWait(fd.target, fd.inode, fd.locks, f"{t.syscall}() on fd {fd.fd}", [])
    for t in threads:
        held = [f for f in t.lock_files if any(not lk.blocked and lk.pid != pid for lk in f.locks)]
        if not held:
            continue
        named = {v.strip("'\"") for f in t.frames for k, v in (f.locals or {}).items() if k in _PATH_LOCALS}
        exact = [f for f in held if f.path in named]
        if exact:
            return LockWait(exact[0].path, exact[0].inode, exact[0].locks, "the lock path in its frame's locals", [])
        if len(held) == 1:
            return LockWait(held[0].path, held[0].inode, held[0].locks,
                            "likely: the only lock file of the bench held now", [])
        return LockWait("", None, [], "", [f.path for f in held])
    if any(t.syscall is not None for t in threads):  # /proc was read: no lock file of the bench is held
        return LockWait("", None, [], "/proc", [])
    return None


def _holder_process(ctx: Context, host: str, lock: FileLock) -> ProcessInfo:
    """The holder named by ``/proc/locks`` of ``host`` (a pid of that host)."""
    known = ctx.snapshot.process(ProcKey(host, lock.pid))
    return known or ProcessInfo(pid=lock.pid, cmdline=lock.cmdline, create_time=lock.create_time,
                                identity=ProcessIdentity(host, lock.pid, lock.create_time, lock.pid))


def _holder_job(ctx: Context, key: ProcKey) -> str | None:
    return next((j.job.job_id for j in ctx.links.jobs if j.runner is not None and ctx.snapshot.key(j.runner) == key),
                None)


@rule("RQD112", "warning", "Job waits on a file lock held by another process")
def file_lock_wait(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.stalled_jobs():
        a, runner = facts.activity, facts.link.runner
        if a is None or runner is None or not a.file_lock:
            continue
        key = ctx.snapshot.key(runner)
        yield _hit(ctx, facts, key, lock_wait(ctx, key, a.thread_id))


def _hit(ctx: Context, facts: JobFacts, runner: ProcKey, wait: LockWait | None) -> Hit:
    job, pid = facts.link.job, runner.pid
    evidence = [*facts.identity(), *_activity_line(facts.activity)]
    base = {"job_id": job.job_id, "pid": pid, "host": runner.host, "worker": job.worker_name}
    if wait is None or not wait.path:
        if wait is None:
            seen = "the lock file and its holder were not seen (no /proc facts for this thread)"
        elif wait.others:
            seen = f"several lock files of the bench are held now, it waits for one of: {', '.join(wait.others)}"
        else:
            seen = "/proc/locks shows no lock file of the bench (sites/*/locks, config) held now: the lock is elsewhere"
        evidence.append(seen)
        return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_UNSEEN, commands=_UNSEEN_COMMANDS, **base)
    holders = [lock for lock in wait.locks if not lock.blocked and lock.pid != pid]
    evidence.append(f"lock file {wait.path} (inode {wait.inode}), from {wait.how}")
    data: dict[str, object] = {"lock_file": wait.path, "inode": wait.inode, "holders": [h.pid for h in holders]}
    if not holders:
        evidence.append("/proc/locks lists no holder for that inode")
        return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_NO_HOLDER, data=data, **base)
    refs, commands = [], []
    for lock in holders:
        holder = _holder_process(ctx, runner.host, lock)
        holder_job = _holder_job(ctx, ProcKey(runner.host, lock.pid))
        ref = process_ref(holder, ctx.here) + (f", running job {holder_job}" if holder_job else "")
        refs.append(ref)
        evidence.append(f"/proc/locks: {lock.kind} {lock.access} lock held by {ref}")
        commands += [on_host_command(holder, ctx.here, f"rqdoctor stack {lock.pid}"),
                     on_host_command(holder, ctx.here, f"kill -TERM {lock.pid}")]
    return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_HOLDER.format(holder="; ".join(refs)),
               commands=commands, data=data, **base)
