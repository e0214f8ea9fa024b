"""RQD5xx: queues and RQ's Redis state."""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose.advice import redis_cli, rqdoctor_cli
from rqdoctor.diagnose.context import Context, age
from rqdoctor.diagnose.findings import Hit, rule

BACKLOG_LIMIT_S = 600
"""A job queued longer than this while workers listen means the queue does not keep up."""


def is_scheduled_job(job_id: str) -> bool:
    """Frappe's fixed id of a scheduled job type (``site::scheduled_job::method`` / ``site||scheduled_job||…``)."""
    return "::scheduled_job::" in job_id or "||scheduled_job||" in job_id


def listeners(ctx: Context, queue: str) -> list[str]:
    """Names of workers (not known dead) listening on ``queue``."""
    return [link.worker.name for link in ctx.links.workers
            if queue in link.worker.queues and link.location not in ("dead", "not-found") and link.worker.death is None]


@rule("RQD501", "critical", "Queue has jobs but no worker listens on it")
def queue_without_listener(ctx: Context) -> Iterator[Hit]:
    if ctx.snapshot.redis is None:
        return
    for q in ctx.snapshot.redis.queues:
        if q.queued == 0 or listeners(ctx, q.name):
            continue
        waited = age(ctx.now, q.oldest_enqueued_at)
        evidence = [f"{q.queued} job(s) queued, 0 workers listening"]
        if waited is not None:
            evidence.append(f"oldest queued job {q.oldest_queued_job} has waited {waited:.0f} s")
        yield Hit(
            f"queue {q.name}",
            evidence=evidence, data={"queue": q.name, "queued": q.queued},
            fix="Start a worker for this queue. On a bench, production supervisor configs since v14.18 have no "
                "dedicated `default` worker (short and long workers also take `default`); a custom queue needs "
                "its own entry in common_site_config.json `workers`, then regenerate and reload the supervisor config.",
            commands=["bench setup supervisor", "sudo supervisorctl reread && sudo supervisorctl update"],
        )


@rule("RQD502", "critical", "RQ is suspended: workers take no new jobs")
def rq_suspended(ctx: Context) -> Iterator[Hit]:
    if ctx.snapshot.redis is None or not ctx.snapshot.redis.suspended:
        return
    yield Hit(
        "redis rq:suspended",
        evidence=["the key rq:suspended exists (set by `rq suspend`)"],
        fix="Resume by deleting rq:suspended (what `rq resume` does), unless someone suspended RQ on purpose "
            "for maintenance.",
        commands=[redis_cli(ctx.snapshot.target, "DEL", "rq:suspended")],
    )


@rule("RQD503", "warning", "Abandoned job: started, but nobody heartbeats it")
def abandoned_job(ctx: Context) -> Iterator[Hit]:
    for link in ctx.links.jobs:
        job = link.job
        expires = job.registry_expires_at
        if expires is None or expires >= ctx.now or link.runner is not None:
            continue
        scheduled = is_scheduled_job(job.job_id)
        evidence = [f"started-registry entry expired {ctx.now - expires:.0f} s ago (no heartbeat)"]
        if job.worker_name:
            evidence.append(f"worker {job.worker_name} is not running it any more")
        fix = ("A live worker listening on this queue moves it to the failed registry at its next maintenance "
               "(every 10 min); it cannot finish. Re-run the work if it matters: the job did not complete.")
        if scheduled:
            evidence.append("a scheduled job: while it stays 'started', the scheduler skips every later run "
                            "(\"Skipped queueing … because it was found in queue\")")
            fix += " Until it is gone this scheduled job type never runs again."
        yield Hit(f"job {job.job_id}", evidence=evidence, fix=fix, job_id=job.job_id, worker=job.worker_name,
                  severity="critical" if scheduled else None)


@rule("RQD504", "warning", "Queue backlog: jobs wait long although workers listen")
def queue_backlog(ctx: Context) -> Iterator[Hit]:
    if ctx.snapshot.redis is None:
        return
    for q in ctx.snapshot.redis.queues:
        waited = age(ctx.now, q.oldest_enqueued_at)
        names = listeners(ctx, q.name)
        if not q.queued or not names or waited is None or waited <= BACKLOG_LIMIT_S:
            continue
        busy = sum(1 for link in ctx.links.workers if link.worker.name in names and link.worker.state == "busy")
        yield Hit(
            f"queue {q.name}",
            evidence=[f"{q.queued} queued, oldest waited {waited:.0f} s",
                      f"{busy} of {len(names)} listening workers busy"],
            data={"queue": q.name, "queued": q.queued},
            fix="If every listening worker is busy with a hung job, the first command below shows which. Otherwise "
                "add workers (`background_workers` in common_site_config.json, then regenerate the supervisor "
                "config with the other two) or move long work to the `long` queue.",
            commands=[rqdoctor_cli(ctx.snapshot.target, "hangs"), "bench setup supervisor",
                      "sudo supervisorctl reread && sudo supervisorctl update"],
        )
