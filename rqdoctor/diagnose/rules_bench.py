"""RQD609-RQD615: bench health around the workers (``rqdoctor scheduler``, ``report``): another bench's workers
on this bench's queues, fewer workers than configured, worker hashes without a connection, failures piling up,
jobs killed by RQ's timeout or SIGKILL, an unreachable ``redis_queue``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from rqdoctor.diagnose.advice import process_ref, redis_cli, rqdoctor_cli, supervisor_restart_workers
from rqdoctor.diagnose.context import Context
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.model import FailedJob

FAILED_WINDOW_S = 3600
FAILED_GROWTH = 5
"""This many failures (of the entries read) within :data:`FAILED_WINDOW_S` is called growth."""
TIMEOUT_MARK = "JobTimeoutException"
SIGKILL_MARK = "waitpid returned 9"


def _ours(ctx: Context, queues: list[str]) -> bool:
    prefix = ctx.snapshot.target.queue_filter
    return prefix is None or any(q.startswith(prefix) for q in queues)


@rule("RQD609", "critical", "Workers of another bench take this bench's jobs (bench id collision)")
def foreign_workers(ctx: Context) -> Iterator[Hit]:
    if ctx.snapshot.target.queue_filter is None:
        return
    for wl in ctx.links.workers:
        p = wl.process
        bench = ctx.snapshot.bench_of(wl.host) if wl.host is not None else None  # its own host's bench
        if p is None or wl.host is None or bench is None or not _ours(ctx, wl.worker.queues):
            continue
        if ctx.snapshot.in_bench(p, wl.host) is not False:  # in it, or its cwd unknown: no verdict
            continue
        yield Hit(f"worker {wl.worker.name}", worker=wl.worker.name, pid=p.pid, host=wl.host, evidence=[
            f"it listens on {', '.join(wl.worker.queues)}: this bench's queues ({ctx.snapshot.target.queue_filter}*)",
            f"its process {process_ref(p, ctx.here)} runs in {p.cwd}, not in {bench}"],
            fix="Two benches on one Redis share a bench id, so each one's workers run the other's jobs (against "
                "the wrong sites and code). Give each bench its own bench_id in sites/common_site_config.json "
                "(or its own Redis), then restart both benches' workers.",
            commands=[redis_cli(ctx.snapshot.target, "SMEMBERS", f"{ctx.snapshot.target.key_prefix}:workers")],
            data={"cwd": p.cwd})


@rule("RQD610", "warning", "Fewer workers running than background_workers")
def too_few_workers(ctx: Context) -> Iterator[Hit]:
    health = ctx.snapshot.health
    if health is None or health.background_workers is None or ctx.snapshot.redis is None:
        return
    if any(e.probe == "processes" for e in ctx.snapshot.errors):
        return  # a worker not seen is no verdict
    live = Counter(",".join(wl.worker.queues) for wl in ctx.links.workers
                   if wl.location == "local" and wl.worker.death is None and _ours(ctx, wl.worker.queues))
    want = health.background_workers
    for queues, count in sorted(live.items()):
        if count >= want:
            continue
        yield Hit(f"workers of {queues}", evidence=[
            f"background_workers = {want} in sites/common_site_config.json: supervisor runs that many processes "
            "of each worker program", f"{count} live worker(s) on this host listen on {queues}"],
            fix="Some worker processes exited or never started: read the supervisor status and "
                "logs/worker.error.log, then restart the workers (or regenerate the config with `bench setup "
                "supervisor` when background_workers was changed).",
            commands=["sudo supervisorctl status", supervisor_restart_workers(ctx.snapshot.target)],
            data={"queues": queues, "running": count, "configured": want})


@rule("RQD611", "warning", "Worker hash without a Redis connection of its name")
def worker_without_connection(ctx: Context) -> Iterator[Hit]:
    health = ctx.snapshot.health
    if health is None or health.client_names is None:
        return
    names = set(health.client_names)
    workers = [wl.worker for wl in ctx.links.workers if wl.worker.key_type == "hash" and wl.worker.in_worker_set]
    if not any(w.name in names for w in workers):
        return  # no worker here names its connection: absence proves nothing
    for wl in ctx.links.workers:
        w = wl.worker
        if w not in workers or w.name in names or w.death is not None:
            continue
        evidence = [f"{w.key} is in {ctx.snapshot.target.key_prefix}:workers, state {w.state or '?'}",
                    "CLIENT LIST has no connection named after it (rq workers name their connection), while "
                    "other workers' connections are listed"]
        if wl.process is not None:
            evidence.append(f"its process {process_ref(wl.process, ctx.here)} still runs: it lost its Redis connection")
        yield Hit(f"worker {w.name}", worker=w.name, pid=wl.process.pid if wl.process else None,
                  host=wl.host if wl.process else None, evidence=evidence,
                  fix="A worker without a connection takes no job: its process died (RQD201) or hangs outside its "
                      "loop. Look at it with the command below, then restart it.",
                  commands=[rqdoctor_cli(ctx.snapshot.target, "workers")])


def _recent(ctx: Context) -> list[FailedJob]:
    health, redis = ctx.snapshot.health, ctx.snapshot.redis
    if health is None or redis is None:
        return []
    return [f for f in health.failed if f.ended_at is not None and redis.server_time - f.ended_at <= FAILED_WINDOW_S]


def top_methods(jobs: list[FailedJob], n: int = 5) -> list[tuple[str, int, str]]:
    """The most frequent methods with their count and the newest one's last error line."""
    counts = Counter(j.method or "?" for j in jobs)
    newest = {}
    for j in sorted(jobs, key=lambda j: j.ended_at or 0):
        newest[j.method or "?"] = j.error_tail[-1] if j.error_tail else ""
    return [(m, c, newest[m]) for m, c in counts.most_common(n)]


@rule("RQD612", "warning", "Failed jobs piling up")
def failed_growth(ctx: Context) -> Iterator[Hit]:
    recent = _recent(ctx)
    if len(recent) < FAILED_GROWTH or ctx.snapshot.health is None:
        return
    evidence = [f"{len(recent)} of the newest failed-registry entries read ended in the last hour "
                f"({ctx.snapshot.health.failed_total} in the failed registries)", "top failing methods:"]
    evidence += [f"{m}: {c} failure(s), last error: {line or '?'}" for m, c, line in top_methods(recent)]
    yield Hit("failed registries", evidence=evidence,
              fix="Fix the top method's error first (its traceback: `rq:job:<id>` exc_info, or the RQ Job list in "
                  "the desk). Failed jobs stay in the registry for a year unless removed.",
              data={"last_hour": len(recent), "total": ctx.snapshot.health.failed_total})


@rule("RQD613", "warning", "Jobs killed by RQ's timeout")
def timed_out(ctx: Context) -> Iterator[Hit]:
    jobs = [f for f in _recent(ctx) if any(TIMEOUT_MARK in line for line in f.error_tail)]
    for method, count, line in top_methods(jobs, n=20):
        yield Hit(f"method {method}", evidence=[f"{count} job(s) of it failed in the last hour with {TIMEOUT_MARK}",
                                                f"last error: {line}"],
                  fix="It runs longer than its queue's timeout: make it faster, split it, or enqueue it on the `long` "
                      "queue (or with a larger `timeout=`).", data={"method": method, "count": count})


@rule("RQD614", "warning", "Work-horses killed by SIGKILL (the OOM killer, RQ's hard kill or kill -9)")
def killed_horses(ctx: Context) -> Iterator[Hit]:
    jobs = [f for f in _recent(ctx) if any(SIGKILL_MARK in line for line in f.error_tail)]
    if not jobs:
        return
    health = ctx.snapshot.health
    ooms = {path: n for path, n in (health.oom_kills if health else {}).items() if n}
    evidence = [f"{len(jobs)} job(s) failed in the last hour with \"Work-horse terminated unexpectedly; "
                f"{SIGKILL_MARK}\": their horse got SIGKILL"]
    evidence += [f"{m}: {c} job(s)" for m, c, _ in top_methods(jobs)]
    evidence += [f"{path}: oom_kill {n}: the kernel's OOM killer killed processes in the workers' cgroup"
                 for path, n in sorted(ooms.items())]
    kernel = health.kernel_oom if health else []
    if kernel:
        evidence.append(f"the kernel log has {len(kernel)} OOM line(s) from the last hour, the newest: {kernel[-1]}")
    yield Hit("work-horses", evidence=evidence, severity="critical" if ooms or kernel else None,
              fix="Out of memory is the usual cause: read the kernel log (first command) for 'Killed process'. RQ "
                  "itself sends SIGKILL only to a horse past its timeout that ignored the timeout exception. Give "
                  "the host more memory, run fewer workers, or make the job use less.",
              commands=["dmesg -T | grep -i -e 'out of memory' -e 'killed process'"],
              data={"count": len(jobs), "oom_kills": ooms, "kernel_oom": kernel})


@rule("RQD615", "critical", "The bench's redis_queue is unreachable")
def redis_queue_unreachable(ctx: Context) -> Iterator[Hit]:
    target = ctx.snapshot.target
    if "redis_queue" not in target.redis_url_source:
        return
    for e in ctx.snapshot.errors:
        if e.probe == "redis" and e.kind in ("unreachable", "timeout"):
            yield Hit(f"redis {target.redis_url}", evidence=[f"redis_queue = {target.redis_url} "
                                                             f"({target.redis_url_source})", e.message],
                      fix="No job is enqueued or run while the queue Redis is down: start it (`bench start` in "
                          "development, its supervisor program or service in production) and check its log.",
                      commands=["sudo supervisorctl status", redis_cli(target, "PING")])
            return
