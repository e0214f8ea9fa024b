"""RQD5xx: queues and RQ's Redis state."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from rqdoctor.diagnose import remedies
from rqdoctor.diagnose.advice import redis_cli, rq_key, rqdoctor_cli
from rqdoctor.diagnose.cleanup import next_cleanup
from rqdoctor.diagnose.context import Context, age
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.model import RedisState, TargetInfo

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
    key = rq_key(ctx.snapshot.target, "suspended")
    yield Hit(
        f"redis {key}",
        evidence=[f"the key {key} exists (set by `rq suspend`)"],
        fix=f"Resume by deleting {key} (what `rq resume` does), unless someone suspended RQ on purpose "
            "for maintenance.",
        commands=[redis_cli(ctx.snapshot.target, "DEL", key)],
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
        evidence += next_cleanup(ctx, job.queue).lines
        blocker = remedies.unrun_blocker(ctx.snapshot, ctx.links, link)
        remedy = None
        if blocker is None:
            remedy = remedies.fail_started(ctx.snapshot, link, "started entry expired and no process runs it")
            fix += " " + remedies.describe(remedy)
        else:
            evidence.append(f"no --kill remedy: {blocker}")
        yield Hit(f"job {job.job_id}", evidence=evidence, fix=fix, job_id=job.job_id, worker=job.worker_name,
                  severity="critical" if scheduled else None, remedy=remedy)


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


TARGET_CODES = {"RQD505", "RQD506", "RQD507"}
"""Findings about the target itself (the queue filter matched nothing): every command that reads Redis runs them."""


def prefix_of(queue: str) -> str:
    """The bench id part of a Frappe queue name (``<bench_id>:<type>``); the whole name when it has no ``:``."""
    return queue.rsplit(":", 1)[0] if ":" in queue else queue


def hidden_by_prefix(redis: RedisState) -> dict[str, dict[str, int]]:
    """What the queue filter hid, per queue-name prefix: queues, queued and started jobs, workers, busy workers."""
    out: dict[str, dict[str, int]] = {}

    def entry(prefix: str) -> dict[str, int]:
        return out.setdefault(prefix, {"queues": 0, "queued": 0, "started": 0, "workers": 0, "busy": 0})

    for q in redis.hidden_queues:
        e = entry(prefix_of(q.name))
        e["queues"] += 1
        e["queued"] += q.queued or 0
        e["started"] += q.started or 0
    for w in redis.hidden_workers:
        for prefix in dict.fromkeys(prefix_of(q) for q in w.queues):
            e = entry(prefix)
            e["workers"] += 1
            e["busy"] += w.state == "busy"
    return out


def _no_queue_matches(ctx: Context) -> tuple[TargetInfo, dict[str, dict[str, int]]] | None:
    """The target and what was hidden, when the queue filter matched no queue (in rq:queues or listened on)."""
    target, redis = ctx.snapshot.target, ctx.snapshot.redis
    if redis is None or not target.queue_filter or redis.queues:
        return None
    hidden = hidden_by_prefix(redis)
    return (target, hidden) if hidden else None


def _has_jobs(counts: dict[str, int]) -> bool:
    return bool(counts["queued"] or counts["started"] or counts["busy"])


def _prefix_line(prefix: str, c: dict[str, int]) -> str:
    return (f"{prefix}:* : {c['queues']} queue(s), {c['queued']} queued, {c['started']} started, "
            f"{c['workers']} worker(s) ({c['busy']} busy)")


def _target_evidence(target: TargetInfo) -> list[str]:
    bench = f"bench {target.bench_path} ({target.bench_source})" if target.bench_path else "no bench"
    return [f"{bench}, bench id {target.bench_id} ({target.bench_id_source})",
            f"no queue named {target.queue_filter}* in {target.redis_url}: neither in {rq_key(target, 'queues')} "
            "nor among the queues any worker listens on"]


MISMATCH_FIX = (
    "rqdoctor shows only queues named `<bench_id>:<type>`, as Frappe names them. If the queues above are this "
    "bench's, its workers run with another bench_id: set bench_id in sites/common_site_config.json to their prefix "
    "and restart the workers, or point --bench at the bench that owns them (never give two benches sharing one "
    "Redis the same bench_id). Run again with --all-queues to see every queue of this Redis now.")


@rule("RQD505", "warning", "Bench id matches no queue while other queues of its Redis have jobs")
def bench_id_mismatch(ctx: Context) -> Iterator[Hit]:
    found = _no_queue_matches(ctx)
    if found is None:
        return
    target, hidden = found
    busy = {p: c for p, c in hidden.items() if _has_jobs(c)}
    if not busy:
        return
    ranked = sorted(busy.items(), key=lambda pc: (-(pc[1]["queued"] + pc[1]["started"] + pc[1]["busy"]), pc[0]))
    commands = [redis_cli(target, "SMEMBERS", rq_key(target, "queues"))]
    if len(ranked) == 1:
        commands.append(f"bench set-config -g bench_id {shlex.quote(ranked[0][0])}")
    yield Hit(
        f"bench id {target.bench_id}",
        evidence=[*_target_evidence(target), "queues of other prefixes hold jobs:",
                  *(_prefix_line(p, c) for p, c in ranked[:5])]
        + ([f"… and {len(ranked) - 5} more prefix(es) with jobs"] if len(ranked) > 5 else []),
        fix=MISMATCH_FIX, commands=commands,
        data={"bench_id": target.bench_id, "bench_id_source": target.bench_id_source,
              "queue_filter": target.queue_filter, "prefixes_with_jobs": dict(ranked)},
    )


@rule("RQD506", "info", "Bench id matches no queue of its Redis (the other queues are idle)")
def bench_id_matches_nothing(ctx: Context) -> Iterator[Hit]:
    found = _no_queue_matches(ctx)
    if found is None or any(_has_jobs(c) for c in found[1].values()):
        return
    target, hidden = found
    yield Hit(
        f"bench id {target.bench_id}",
        evidence=[*_target_evidence(target), "queues of other prefixes, none with queued or started jobs:",
                  *(_prefix_line(p, c) for p, c in sorted(hidden.items())[:5])],
        fix=MISMATCH_FIX, commands=[redis_cli(target, "SMEMBERS", rq_key(target, "queues"))],
        data={"bench_id": target.bench_id, "bench_id_source": target.bench_id_source,
              "queue_filter": target.queue_filter, "prefixes": hidden},
    )


@rule("RQD507", "warning", "No RQ worker under the key prefix read, but workers sets of another prefix exist")
def other_key_prefix(ctx: Context) -> Iterator[Hit]:
    redis = ctx.snapshot.redis
    if redis is None or redis.workers or not redis.other_prefixes:
        return
    target = ctx.snapshot.target
    workers = rq_key(target, "workers")
    yield Hit(
        f"key prefix {target.key_prefix}",
        evidence=[f"no worker registered in {workers} (key prefix {target.key_prefix}: "
                  f"{target.key_prefix_source or 'default'})",
                  "this Redis has the workers set(s) " + ", ".join(f"{p}:workers" for p in redis.other_prefixes)
                  + ": rq 3.0 workers started with RQ_KEY_PREFIX name every key under their prefix"],
        fix="Read the keys of that prefix: pass --key-prefix (the workers' RQ_KEY_PREFIX). rqdoctor learns it from "
            "the workers' /proc/<pid>/environ only when it runs as root or as their user.",
        commands=[rqdoctor_cli(target, "hangs", "--key-prefix", redis.other_prefixes[0]),
                  redis_cli(target, "SMEMBERS", f"{redis.other_prefixes[0]}:workers")],
        data={"key_prefix": target.key_prefix, "other_prefixes": list(redis.other_prefixes)},
    )
