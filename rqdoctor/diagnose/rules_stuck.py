"""RQD3xx: stuck work that will never finish by itself (``rqdoctor stuck``).

Stopped and zombie horses, jobs older than ``--older-than``, zombie job hashes, and Frappe's leftovers:
document lock files and Scheduled Job Log rows left in ``Start``. Each rests on positive evidence read
twice or cross-checked (a status read again, every place a job could be held), never on what was not seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from rqdoctor.diagnose import remedies
from rqdoctor.diagnose.advice import bench_cli, on_host, on_host_command, process_ref, redis_cli, rq_key
from rqdoctor.diagnose.cleanup import expired_while_running
from rqdoctor.diagnose.context import Context, age
from rqdoctor.diagnose.findings import Hit, Remedy, rule
from rqdoctor.diagnose.frappe_docs import DOC_LOCK, document_of, lock_name, longest_timeout, scheduled_method
from rqdoctor.diagnose.link import JobLink, WorkerLink
from rqdoctor.diagnose.rules_queues import is_scheduled_job
from rqdoctor.model import DocLockFile, JobHash, JobLogRow, ProcessInfo, ProcKey, Snapshot

ZOMBIE_MIN_AGE_S = 120
"""A job hash is called a zombie only once its last state change is this old (a dequeue in flight is not one)."""
LOCK_SLACK_S = 5
"""Seconds between a job's start (or enqueue) and the lock file it writes, allowed when matching the two."""
STUCK_CODES = frozenset({"RQD101", "RQD107", "RQD110", "RQD201", "RQD202", "RQD203", "RQD503",
                         "RQD301", "RQD302", "RQD303", "RQD304", "RQD305", "RQD306"})
"""The findings ``rqdoctor stuck`` reports: work that will never finish, and what it leaves behind."""


def utc(ts: float | None) -> str:
    """An epoch time as ``2026-12-01 19:02:11 UTC``."""
    return "?" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


@rule("RQD301", "warning", "Job has run longer than --older-than")
def older_than(ctx: Context) -> Iterator[Hit]:
    limit = ctx.older_than_s
    if limit is None:
        return
    for facts in ctx.job_facts():
        running, timeout = facts.running_for_s, facts.timeout_s
        if running is None or running <= limit:
            continue
        if timeout is not None and 0 <= timeout < running:
            continue  # past its timeout: RQD101 says it, with the same remedy
        jl = facts.link
        evidence = [*facts.identity(), f"running {running:.0f} s (since {utc(jl.job.started_at)}), longer than "
                    f"--older-than {limit:g} s" + (f"; its timeout is {timeout} s" if timeout else "")]
        evidence += expired_while_running(ctx, jl)
        remedy = remedies.for_job_runner(ctx.snapshot, jl, f"running {running:.0f} s, past --older-than {limit:g} s")
        fix = "You asked to treat jobs this old as stuck. Look at what it does first (`rqdoctor hangs`)."
        if remedy is not None:
            fix += " " + remedies.describe(remedy)
        else:
            evidence.append(_no_runner(jl))
        yield Hit(f"job {jl.job.job_id}", evidence=evidence, fix=fix, job_id=jl.job.job_id,
                  pid=jl.runner.pid if jl.runner else None, worker=jl.job.worker_name, remedy=remedy,
                  host=ctx.snapshot.key(jl.runner).host if jl.runner else None,
                  data={"running_for_s": round(running, 1), "older_than_s": limit})


def _no_runner(jl: JobLink) -> str:
    if jl.location == "remote":
        return f"its worker runs on host {jl.worker.hostname if jl.worker else '?'}: stop it there"
    return "no live process on this host was matched to it: nothing here to stop"


def _job_of_process(ctx: Context, p: ProcessInfo) -> tuple[JobLink | None, WorkerLink | None]:
    key = ctx.snapshot.key(p)
    return ctx.links.job_for(key), ctx.links.worker_for(key)


@rule("RQD302", "warning", "Work-horse is stopped (state T): it runs nothing until resumed")
def stopped_horse(ctx: Context) -> Iterator[Hit]:
    for p in ctx.snapshot.processes:
        if p.status != "stopped" or p.status_again != "stopped":
            continue
        jl, wl = _job_of_process(ctx, p)
        role = jl.runner_role if jl is not None else ("work-horse" if wl and wl.horse is p else None)
        if role is None and p not in ctx.links.orphans:
            continue  # not a process of this Redis's jobs
        evidence = [f"{process_ref(p, ctx.here)} is in state T (stopped), at the scan and again a moment later",
                    "a stopped process runs no code and no signal handler: RQ's SIGALRM timeout and TERM wait "
                    "until it is resumed; only KILL ends it"]
        if jl is not None:
            evidence.append(f"it runs job {jl.job.job_id} ({jl.runner_role}) of worker {jl.job.worker_name or '?'}")
            evidence += expired_while_running(ctx, jl)
        remedy = remedies.for_job_runner(ctx.snapshot, jl, "its process is stopped (state T)") if jl else None
        if remedy is None and wl is not None and wl.horse is p and wl.process is not None:
            remedy = remedies.for_busy_horse(ctx.snapshot, wl.process, p, wl.worker, None,
                                             "work-horse stopped (state T)")
        elif remedy is None and p in ctx.links.orphans:
            remedy = remedies.for_orphan(ctx.snapshot, ctx.links, p, "orphaned work-horse stopped (state T)")
        fix = ("Someone stopped it: SIGSTOP, Ctrl-Z in a terminal, or a debugger (gdb, strace) attached to it. If "
               "nobody is debugging it, resume it (the command below).")
        if remedy is not None:
            fix += " To end the job instead: " + remedies.describe(remedy)
        yield Hit(f"process {p.pid}{on_host(p, ctx.here)}", evidence=evidence, fix=fix,
                  commands=[on_host_command(p, ctx.here, f"kill -CONT {p.pid}")], pid=p.pid,
                  host=ctx.snapshot.key(p).host,
                  job_id=jl.job.job_id if jl else None, worker=wl.worker.name if wl else None, remedy=remedy)


@rule("RQD303", "warning", "Zombie work-horse: it exited but its worker does not reap it")
def zombie_horse(ctx: Context) -> Iterator[Hit]:
    for p in ctx.snapshot.processes:
        if p.status != "zombie" or p.status_again != "zombie" or p.ppid is None:
            continue
        ppid = ProcKey(ctx.snapshot.key(p).host, p.ppid)
        parent = next((wl for wl in ctx.links.workers
                       if wl.process is not None and ctx.snapshot.key(wl.process) == ppid), None)
        if parent is None or parent.process is None:
            continue  # not the child of a live worker of this Redis
        w = parent.worker
        evidence = [f"pid {p.pid} exited and is a zombie: its parent, worker {w.name} "
                    f"({process_ref(parent.process, ctx.here)}), has not reaped it (seen twice, a moment apart)",
                    "a forking worker reaps its horse at once in its monitor loop (wait4): that loop is not running"]
        heartbeat = age(ctx.now, w.last_heartbeat)
        if heartbeat is not None:
            evidence.append(f"worker state {w.state}, last heartbeat {heartbeat:.0f} s ago")
        job_id = w.current_job
        remedy = Remedy(
            "stop_worker", f"its horse {p.pid} is a zombie the worker does not reap: the worker loop is hung",
            host=ppid.host, pid=parent.process.pid, pgid=parent.process.pgid,
            create_time=parent.process.create_time, worker=w.name, job_id=job_id, expected="absent",
            needs="--kill-worker")
        yield Hit(f"worker {w.name}", evidence=evidence, worker=w.name, pid=parent.process.pid, host=ppid.host,
                  job_id=job_id,
                  fix="The worker is hung after its horse ended: restart it (its job stays 'started' until a "
                      "registry cleanup fails it, see RQD503). A zombie itself cannot be killed; it goes when its "
                      "parent reaps it or exits. " + remedies.describe(remedy),
                  commands=[on_host_command(parent.process, ctx.here, f"kill -TERM {parent.process.pid}")],
                  remedy=remedy)


def zombie_since(job: JobHash) -> float | None:
    """When the hash last changed state: started_at for started, else enqueued_at, else created_at."""
    if job.status == "started" and job.started_at is not None:
        return job.started_at
    return job.enqueued_at or job.created_at


def _in_a_title(snapshot: Snapshot, job_id: str) -> bool:
    return any(job_id in " ".join(p.cmdline) for p in snapshot.processes)


def zombie_hashes(ctx: Context, min_age_s: float = ZOMBIE_MIN_AGE_S) -> Iterator[tuple[JobHash, float | None]]:
    """Checked queued/started hashes held nowhere (queue, registry, worker, process), with their age."""
    redis = ctx.snapshot.redis
    if redis is None or redis.job_scan is None:
        return
    linked = {jl.job.job_id for jl in ctx.links.jobs}
    for job in redis.job_scan.jobs:
        if not job.checked or job.held_by or job.job_id in linked or _in_a_title(ctx.snapshot, job.job_id):
            continue
        since = age(ctx.now, zombie_since(job))
        if since is None or since < min_age_s:
            continue
        yield job, since


@rule("RQD304", "warning", "Zombie job hash: queued or started, but in no queue, registry or process")
def zombie_job_hash(ctx: Context) -> Iterator[Hit]:
    for job, since in zombie_hashes(ctx):
        yield zombie_hit(ctx, job, since)


def zombie_hit(ctx: Context, job: JobHash, since: float | None) -> Hit:
    """The RQD304 hit of one zombie hash (also used for a killed job's leftovers)."""
    origin = job.origin or "?"
    key = rq_key(ctx.snapshot.target, "job:", job.job_id)
    evidence = [f"{key} says {job.status} since {utc(zombie_since(job))}"
                + (f" ({since:.0f} s ago)" if since is not None else "") + f", queue {origin}",
                f"it is in no place a job waits or runs: not in {rq_key(ctx.snapshot.target, 'queue:', origin)} nor"
                " its intermediate list, not in "
                "the started, scheduled or deferred registry, no worker's current job, no process's title"]
    scheduled = scheduled_method(job.job_id)
    fix = ("No worker will ever take it and no cleanup moves it (cleanups read registries, not hashes). Mark it "
           "failed (the command below) so that whatever checks its status stops waiting.")
    if scheduled is not None or is_scheduled_job(job.job_id):
        site, method = scheduled or (job.site or "?", job.method or "?")
        evidence.append(f"it blocks the scheduled job {method} on site {site} since {utc(zombie_since(job))}: "
                        f"the scheduler skips every run while it says {job.status} (\"Skipped queueing {method} "
                        f"because it was found in queue for {site}\" in logs/scheduler.log)")
        fix = ("Until it is gone this scheduled job never runs again. " + fix
               + " The scheduler enqueues it again at its next due time.")
    remedy = remedies.clear_job_hash(job.job_id, job.origin, f"job hash says {job.status} but is held nowhere")
    fix += " " + remedies.describe(remedy)
    return Hit(f"job {job.job_id}", evidence=evidence, fix=fix, job_id=job.job_id, worker=job.worker_name,
               commands=[redis_cli(ctx.snapshot.target, "HSET", key, "status", "failed")],
               remedy=remedy, severity="critical" if scheduled else None,
               data={"status": job.status, "origin": job.origin, "since": zombie_since(job),
                     "scheduled_method": scheduled[1] if scheduled else None})


def lock_holders(ctx: Context, lock: DocLockFile) -> tuple[list[str], list[str]]:
    """Jobs that may own a document lock: (matched by document, not excludable), as ``job <id>`` strings.

    A started job owns it when its call string names the document; one whose document cannot be read is
    excluded only if it started after the lock was written. A queued job cannot be read here: any queue whose
    oldest job was enqueued before the lock was written might hold its owner.
    """
    redis = ctx.snapshot.redis
    matched, unknown = [], []
    for jl in ctx.links.jobs:
        job = jl.job
        document = document_of(job.description)
        if document is not None:
            if lock_name(*document) == lock.name:
                matched.append(f"job {job.job_id} ({document[0]} {document[1]})")
        elif job.started_at is None or job.started_at <= lock.mtime + LOCK_SLACK_S:
            unknown.append(f"job {job.job_id} (its document is not in its call string)")
    for q in redis.queues if redis is not None else []:
        if q.queued and (q.oldest_enqueued_at is None or q.oldest_enqueued_at <= lock.mtime + LOCK_SLACK_S):
            unknown.append(f"queue {q.name} ({q.queued} queued since before the lock)")
    return matched, unknown


@rule("RQD305", "warning", "Stale document lock: a lock file no running job holds")
def stale_document_lock(ctx: Context) -> Iterator[Hit]:
    frappe = ctx.snapshot.frappe
    if frappe is None:
        return
    longest = longest_timeout(ctx.snapshot.target.queue_timeouts)
    for lock in frappe.locks:
        held = age(ctx.snapshot.generated_at, lock.mtime)
        if not DOC_LOCK.fullmatch(lock.name) or lock.held_by or held is None or held <= longest:
            continue
        matched, unknown = lock_holders(ctx, lock)
        if matched or unknown:
            continue  # a job that may own it runs or waits: not stale
        yield lock_hit(ctx, lock, [f"{lock.path} written {utc(lock.mtime)}, {held:.0f} s ago: longer than the "
                                   f"longest queue timeout ({longest} s), so no job that took it can still run",
                                   "no job running or queued on this bench works on that document"])


def unjudged_locks(ctx: Context) -> list[str]:
    """Old document locks RQD305 gave no verdict on because a possible owner could not be matched (one line each)."""
    frappe = ctx.snapshot.frappe
    if frappe is None:
        return []
    longest = longest_timeout(ctx.snapshot.target.queue_timeouts)
    lines = []
    for lock in frappe.locks:
        held = age(ctx.snapshot.generated_at, lock.mtime)
        if not DOC_LOCK.fullmatch(lock.name) or lock.held_by or held is None or held <= longest:
            continue
        matched, unknown = lock_holders(ctx, lock)
        if unknown and not matched:
            lines.append(f"document lock {lock.site}/{lock.name} ({held:.0f} s old) not judged: could not match "
                         + ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""))
    return lines


def lock_hit(ctx: Context, lock: DocLockFile, evidence: list[str]) -> Hit:
    """The RQD305 hit of one document lock (also a killed job's leftover)."""
    return Hit(
        f"lock {lock.site}/{lock.name}",
        evidence=[*evidence, "no process holds it (/proc/locks): a document lock is the file itself"],
        fix="The job that locked this document ended without unlocking it (killed, or its worker died before the "
            "after_job hook ran): submitting or running the queued action on that document fails with "
            "'Document Queued' (DocumentLockedError) until the file goes (Frappe ignores it after 12 h). Delete it "
            "(what the document's Force Unlock button does).",
        commands=[f"rm -- {lock.path}"], data={"site": lock.site, "path": lock.path, "mtime": lock.mtime})


def row_runs(ctx: Context, row: JobLogRow) -> list[str]:
    """Started jobs with a live process that run the row's scheduled job type on its site."""
    out = []
    for jl in ctx.links.jobs:
        site_method = scheduled_method(jl.job.job_id)
        same = site_method == (row.site, row.method) or (jl.job.site == row.site and jl.job.method == row.method)
        if row.method and same and (jl.runner is not None or jl.location == "remote"):
            out.append(jl.job.job_id)
    return out


@rule("RQD306", "warning", "Scheduled Job Log row left in Start: its run never finished")
def job_log_left_in_start(ctx: Context) -> Iterator[Hit]:
    frappe = ctx.snapshot.frappe
    if frappe is None:
        return
    limit = longest_timeout(ctx.snapshot.target.queue_timeouts) + 60
    for row in frappe.job_log_rows:
        if row.age_s is None or row.age_s <= limit or row_runs(ctx, row):
            continue
        clock = f"in the site's time zone {row.time_zone}" if row.time_zone else "by the database clock"
        yield row_hit(ctx, row, [f"Scheduled Job Log {row.name} ({row.scheduled_job_type}, method "
                                 f"{row.method or '?'}) on site {row.site} says Start since {row.creation}, "
                                 f"{row.age_s:.0f} s ago ({clock}): longer than any job may run "
                                 f"({limit} s, the longest queue timeout + 60 s)",
                                 "no running job runs that scheduled job type"])


def row_hit(ctx: Context, row: JobLogRow, evidence: list[str]) -> Hit:
    """The RQD306 hit of one Start row (also a killed job's leftover)."""
    sql = f"UPDATE `tabScheduled Job Log` SET status = 'Failed' WHERE name = '{row.name.replace(chr(39), '')}';"
    return Hit(
        f"scheduled job log {row.site}/{row.name}",
        evidence=evidence,
        fix="The run it records ended without finishing (killed, out of memory, or its worker restarted): the row "
            "blocks nothing by itself (only a job id left queued or started does, see RQD304 and RQD503), but the "
            "log says the job is still running. Find why the run ended (the failed registry, logs/worker.error.log), "
            "then mark the row Failed: open the site's database console (first command) and run the statement.",
        commands=[bench_cli(ctx.snapshot.target, "--site", row.site, "mariadb"), sql],
        data={"site": row.site, "name": row.name, "scheduled_job_type": row.scheduled_job_type, "method": row.method})
