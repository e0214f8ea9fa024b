"""RQD2xx: workers and their horses, as Redis and the process table see them."""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose import remedies
from rqdoctor.diagnose.advice import on_host_command, process_ref, redis_cli, rq_key, supervisor_restart_workers
from rqdoctor.diagnose.context import Context, age
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.diagnose.link import JobLink

BUSY_HEARTBEAT_LIMIT_S = 120
"""A busy worker refreshes its heartbeat every job_monitoring_interval (30 s) with a 90 s TTL."""
IDLE_HEARTBEAT_LIMIT_S = 540
"""An idle worker heartbeats before each dequeue, which may block worker_ttl - 15 = 405 s."""


@rule("RQD201", "warning", "Worker is registered in Redis but its process is gone")
def dead_worker(ctx: Context) -> Iterator[Hit]:
    for link in ctx.links.workers:
        w = link.worker
        if link.location not in ("dead", "not-found") or w.death is not None:
            continue
        if link.claimed is None:
            there = "here" if link.host in (None, ctx.here) else f"in the snapshot of {link.host}"
            evidence = [f"Redis says pid {w.pid} on host {w.hostname}; no such process {there}"]
        else:
            now = process_ref(link.claimed, ctx.here)
            evidence = [f"Redis says pid {w.pid} on host {w.hostname}; that pid is now {now}"]
        evidence += list(link.problems)
        if w.current_job:
            evidence.append(f"its current job {w.current_job} stays 'started' until a cleanup runs")
        evidence.append(f"worker key expires in {w.ttl} s" if w.ttl and w.ttl > 0 else "worker key never expires")
        fix = ("Find out why it died (logs/worker.error.log, the kernel log for the OOM killer: the first command "
               "below), then restart the bench's workers (the second command; supervisor restarts only the worker "
               "programs). Its job, if any, is moved to the failed registry by the next maintenance run of a worker "
               "on that queue (see RQD503).")
        if link.location == "not-found":
            fix = (f"Pid {w.pid} here is not this worker, so nothing on this host is to be stopped for it: leave "
                   f"that process alone. If a worker named {w.name} runs elsewhere under this hostname (a container "
                   "sharing it), look there; otherwise the worker died: " + fix[0].lower() + fix[1:])
        commands = ["dmesg | grep -i -e oom -e killed"]
        if link.location == "dead":
            commands.append(supervisor_restart_workers(ctx.snapshot.target))
        remedy = None
        for jl in _unexpired_started(ctx, w.name):
            blocker = remedies.unrun_blocker(ctx.snapshot, ctx.links, jl)
            if blocker is not None:
                evidence.append(f"its started job {jl.job.job_id}: no --kill remedy, {blocker}")
            elif remedy is None:
                remedy = remedies.fail_started(ctx.snapshot, jl, f"worker {w.name} is gone on this host and no "
                                               "process runs its started job")
                evidence.append(f"no process on this host runs its started job {jl.job.job_id}")
                fix += " " + remedies.describe(remedy)
        yield Hit(f"worker {w.name}", evidence=evidence, worker=w.name, fix=fix, commands=commands,
                  pid=w.pid if link.claimed is None else None,  # never point at a process that is not the worker
                  host=link.host if link.claimed is None else None,
                  job_id=remedy.job_id if remedy else None, remedy=remedy)


def _unexpired_started(ctx: Context, worker: str) -> list[JobLink]:
    """Started entries of ``worker`` whose score has not expired yet (expired ones are RQD503's)."""
    return [jl for jl in ctx.links.jobs
            if jl.worker is not None and jl.worker.name == worker and jl.runner is None
            and jl.job.registry_expires_at is not None and jl.job.registry_expires_at >= ctx.now]


@rule("RQD202", "warning", "Ghost worker: a persistent partial worker hash")
def ghost_worker(ctx: Context) -> Iterator[Hit]:
    for w in ctx.redis_workers():
        if w.key_type != "hash" or w.pid is not None or w.birth is not None or w.ttl != -1:
            continue
        yield Hit(
            f"worker {w.name}",
            evidence=[f"{w.key} has no pid/birth and no TTL", "typical after an orphaned horse finished a job "
                      "once its worker had died (rq#1276); `rq info` shows it as `(None None None): ?`"],
            worker=w.name,
            fix=f"After checking that no worker named {w.name} runs, delete the hash and its worker-set member. A "
                "new worker with that name would otherwise fail with 'There exists an active worker named … "
                "already'.",
            commands=[redis_cli(ctx.snapshot.target, "DEL", w.key),
                      redis_cli(ctx.snapshot.target, "SREM", rq_key(ctx.snapshot.target, "workers"), w.key)],
            remedy=remedies.prune_worker(w, "ghost worker hash: no pid, no birth, no TTL"),
        )


@rule("RQD203", "warning", "Worker heartbeat is stale")
def stale_heartbeat(ctx: Context) -> Iterator[Hit]:
    for link in ctx.links.workers:
        w = link.worker
        if link.location in ("dead", "not-found") or w.last_heartbeat is None or w.death is not None:
            continue
        limit = BUSY_HEARTBEAT_LIMIT_S if w.state == "busy" else IDLE_HEARTBEAT_LIMIT_S
        heartbeat_age = age(ctx.now, w.last_heartbeat)
        if heartbeat_age is None or heartbeat_age <= limit:
            continue
        yield Hit(
            f"worker {w.name}",
            evidence=[f"state {w.state}, last heartbeat {heartbeat_age:.0f} s ago (limit {limit} s)"],
            worker=w.name, pid=w.pid, host=link.host,
            fix="The worker's own loop is not running: look at its stack (a hung Redis connection or a stuck "
                "monitor loop); restart it if it is hung.",
            commands=[on_host_command(link.process, ctx.here, f"rqdoctor stack {w.pid}")]
            if link.process is not None else [],
        )


@rule("RQD204", "info", "Stale member of the worker set")
def stale_worker_member(ctx: Context) -> Iterator[Hit]:
    for w in ctx.redis_workers():
        if w.ttl != -2 and w.key_type != "none":
            continue
        workers = rq_key(ctx.snapshot.target, "workers")
        yield Hit(
            f"worker {w.name}",
            evidence=[f"{workers} lists {w.key} but the key does not exist"], worker=w.name,
            fix="Harmless: RQ's worker-registry cleanup removes it, or remove it now.",
            commands=[redis_cli(ctx.snapshot.target, "SREM", workers, w.key)],
        )
