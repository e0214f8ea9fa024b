"""RQD112: a job blocked on an OS file lock (Frappe ``filelock()``, the ``filelock`` package, ``fcntl.flock``)."""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose.advice import process_ref
from rqdoctor.diagnose.context import Context, JobFacts
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.diagnose.rules_jobs import _activity_line
from rqdoctor.model import FileLock, ProcessInfo, WaitFd

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


def lock_fd(ctx: Context, pid: int, thread_id: int | None) -> tuple[str, WaitFd] | None:
    """The system call and the file the job's thread waits to lock, from its latest sample that read one."""
    stacks = next((s for s in ctx.snapshot.stacks if s.pid == pid), None)
    for sample in reversed(stacks.samples if stacks else []):
        for thread in sample.threads:
            if thread.thread_id == thread_id and thread.syscall in ("flock", "fcntl"):
                found = next((w for w in thread.wait_fds if w.target.startswith("/")), None)
                if found is not None:
                    return thread.syscall, found
    return None


def _holder_process(ctx: Context, lock: FileLock) -> ProcessInfo:
    known = next((p for p in ctx.snapshot.processes if p.pid == lock.pid), None)
    return known or ProcessInfo(pid=lock.pid, cmdline=lock.cmdline, create_time=lock.create_time)


def _holder_job(ctx: Context, pid: int) -> str | None:
    return next((j.job.job_id for j in ctx.links.jobs if j.runner is not None and j.runner.pid == pid), None)


@rule("RQD112", "warning", "Job waits on a file lock held by another process")
def file_lock_wait(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.stalled_jobs():
        a, runner = facts.activity, facts.link.runner
        if a is None or runner is None or not a.file_lock:
            continue
        yield _hit(ctx, facts, runner.pid, lock_fd(ctx, runner.pid, a.thread_id))


def _hit(ctx: Context, facts: JobFacts, pid: int, lock_wait: tuple[str, WaitFd] | None) -> Hit:
    job = facts.link.job
    evidence = [*facts.identity(), *_activity_line(facts.activity)]
    base = {"job_id": job.job_id, "pid": pid, "worker": job.worker_name}
    if lock_wait is None:
        evidence.append("the lock file and its holder were not seen (no system call facts for this thread)")
        return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_UNSEEN, commands=_UNSEEN_COMMANDS, **base)
    syscall, wait = lock_wait
    holders = [lock for lock in wait.locks if not lock.blocked and lock.pid != pid]
    evidence.append(f"blocked in {syscall}() on fd {wait.fd}: {wait.target} (inode {wait.inode})")
    data: dict[str, object] = {"lock_file": wait.target, "inode": wait.inode, "holders": [h.pid for h in holders]}
    if not holders:
        evidence.append("/proc/locks lists no holder for that inode")
        return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_NO_HOLDER, data=data, **base)
    refs, commands = [], []
    for lock in holders:
        holder = _holder_process(ctx, lock)
        holder_job = _holder_job(ctx, lock.pid)
        ref = process_ref(holder) + (f", running job {holder_job}" if holder_job else "")
        refs.append(ref)
        evidence.append(f"/proc/locks: {lock.kind} {lock.access} lock held by {ref}")
        commands += [f"rqdoctor stack {lock.pid}", f"kill -TERM {lock.pid}"]
    return Hit(f"job {job.job_id}", evidence=evidence, fix=_FIX_HOLDER.format(holder="; ".join(refs)),
               commands=commands, data=data, **base)

