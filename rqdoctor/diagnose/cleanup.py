"""When RQ's next registry cleanup will move an expired started entry to failed (pure).

Only ``StartedJobRegistry.cleanup()`` moves an entry whose score (heartbeat expiry) is past: a live worker
listening on the queue runs it at start and then every ``maintenance_interval`` (600 s), between jobs only,
and not while ``rq:clean_registries:<q>`` (SET NX EX 899; rq 1.15 never deletes it) is held. ``rq info``
runs it too. The worker's last clean time lives only in its memory, so the estimate is a window.
"""

from __future__ import annotations

from dataclasses import dataclass

from rqdoctor.diagnose.context import Context
from rqdoctor.diagnose.link import JobLink
from rqdoctor.model import QueueInfo

MAINTENANCE_INTERVAL_S = 600
"""rq's DEFAULT_MAINTENANCE_TASK_INTERVAL."""


@dataclass
class NextCleanup:
    """The window in which a cleanup of one queue can happen, and the evidence for it."""

    queue: str
    earliest_s: float | None
    """Seconds from now; None: never, as things stand (no live worker listens)."""
    latest_s: float | None
    """Seconds from now; None: not bounded (no idle listener, or none at all)."""
    lines: list[str]


def next_cleanup(ctx: Context, queue: str) -> NextCleanup:
    """The window of the next registry cleanup of ``queue``, from its listeners and its maintenance lock."""
    info = _queue(ctx, queue)
    lock = info.clean_lock_ttl if info is not None else None
    live = [wl.worker for wl in ctx.links.workers
            if queue in wl.worker.queues and wl.worker.death is None and wl.location not in ("dead", "not-found")]
    idle = [w for w in live if w.state == "idle"]
    wait = float(lock or 0)
    lock_line = (f"the maintenance lock rq:clean_registries:{queue} is held for {lock} s more: no worker cleans "
                 "this queue before then" if lock else "")
    if not live:
        line = (f"no live worker listens on {queue}: no cleanup will move it until one starts (it cleans at "
                "start) or someone runs `rq info`")
        return NextCleanup(queue, None, None, [line, *filter(None, [lock_line])])
    if not idle:
        line = (f"the {len(live)} worker(s) listening on {queue} are busy: one cleans only between jobs, at most "
                f"every {MAINTENANCE_INTERVAL_S} s")
        return NextCleanup(queue, wait, None, [line, *filter(None, [lock_line])])
    latest = wait + MAINTENANCE_INTERVAL_S
    line = (f"next registry cleanup of {queue}: within {latest:.0f} s ({len(idle)} idle worker(s) listen; each "
            f"cleans every {MAINTENANCE_INTERVAL_S} s" + (f", once the lock expires in {lock} s)" if lock else ")"))
    return NextCleanup(queue, wait, latest, [line])


def _queue(ctx: Context, name: str) -> QueueInfo | None:
    redis = ctx.snapshot.redis
    return next((q for q in redis.queues if q.name == name), None) if redis is not None else None


def expired_while_running(ctx: Context, jl: JobLink) -> list[str]:
    """For a job a live process still runs: its started entry expired, so the next cleanup fails it mid-run."""
    expires = jl.job.registry_expires_at
    if jl.runner is None or jl.gone or expires is None or expires >= ctx.now:
        return []
    return [f"its started-registry entry expired {ctx.now - expires:.0f} s ago (nobody heartbeats it): the next "
            "registry cleanup moves the job to failed while it may still run", *next_cleanup(ctx, jl.job.queue).lines]
