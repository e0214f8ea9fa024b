"""The snapshot of ``rqdoctor scheduler`` (and ``report``): what ``stuck`` reads, plus scheduler and bench health.

On top of :func:`rqdoctor.collect_stuck.collect_stuck` (Redis, processes, the job-hash scan of the scheduled-job
ids, Scheduled Job Log rows in ``Start``, document lock files), under the same deadline: the scheduler's lock
file and process, each site's scheduler keys and System Settings, rq's cron schedulers, the named Redis
connections, the newest failed jobs' errors and the workers' cgroup OOM kills.
"""

from __future__ import annotations

from collections.abc import Callable

from rqdoctor.collect import _guard
from rqdoctor.collect_stuck import add_stuck_facts, collect_stuck
from rqdoctor.config import Target
from rqdoctor.deadline import JOIN_GRACE_S, Background, Deadline
from rqdoctor.model import HealthState, ProbeError, Snapshot
from rqdoctor.redact import redact_url


def collect_health(target: Target, timeout: float) -> Snapshot:
    """Everything ``scheduler`` judges (the health read while the processes' CPU window is open)."""
    def health_facts(snapshot: Snapshot) -> None:
        deadline = Deadline.for_run(timeout).for_probes()
        snapshot.health = health = HealthState()
        add_health(target, snapshot, health, deadline)

    return collect_stuck(target, timeout, then=health_facts)


def add_health(target: Target, snapshot: Snapshot, health: HealthState, deadline: Deadline,
               database: bool = True) -> None:
    """Fill ``health`` (each part guarded: a failure is an error entry; ``database``: read the sites' System
    Settings and Scheduled Job rows too). Reads no ``cpu_percent`` or ``cpu_time``."""
    if target.bench is not None:
        _guard(snapshot.errors, "scheduler", lambda: _bench(target, snapshot, health, deadline, database))
    if snapshot.redis is not None:
        _guard(snapshot.errors, "health", lambda: _redis(target, snapshot, health, deadline))
    from rqdoctor.probes.rq_health import oom_kills, read_kernel_oom

    _guard(snapshot.errors, "health", lambda: health.oom_kills.update(oom_kills(snapshot.processes)))
    _guard(snapshot.errors, "health", lambda: read_kernel_oom(health))


def _bench(target: Target, snapshot: Snapshot, health: HealthState, deadline: Deadline, database: bool) -> None:
    from rqdoctor.probes.frappe_state import read_scheduler_sites
    from rqdoctor.probes.scheduler import common_numbers, probe_lock, schedule_processes, site_flags

    assert target.bench is not None
    health.lock = probe_lock(target.bench)
    numbers = common_numbers(target.bench)
    health.tick_s = numbers.get("scheduler_tick_interval", health.tick_s)
    health.all_interval_s = numbers.get("scheduler_interval", health.all_interval_s)
    health.background_workers = numbers.get("background_workers")
    health.processes = schedule_processes(target.bench, snapshot.errors)
    health.processes_read = True
    health.sites = [site_flags(target.bench, s.name, snapshot.errors) for s in target.sites]
    if database:
        read_scheduler_sites(target, deadline, snapshot.errors, {s.site: s for s in health.sites})


def _redis(target: Target, snapshot: Snapshot, health: HealthState, deadline: Deadline) -> None:
    from rqdoctor.probes.redis_rq import connect
    from rqdoctor.probes.rq_health import read_redis_health
    from rqdoctor.rqkeys import Keys

    def read() -> list[ProbeError]:
        errors: list[ProbeError] = []
        client = connect(target.redis_url, deadline.timeout())
        try:
            assert snapshot.redis is not None
            read_redis_health(client, snapshot.redis, health, errors, Keys(target.key_prefix))
            return errors
        finally:
            client.close()

    try:
        snapshot.errors.extend(Background(read, "rqdoctor-health").result(deadline.remaining() + JOIN_GRACE_S))
    except TimeoutError:
        snapshot.errors.append(ProbeError("health", "timeout", f"Redis at {redact_url(target.redis_url)}: the cron "
                                          "scheduler, client and failed-job reads did not finish within the deadline",
                                          "raise --timeout"))


def report_facts(timeout: float, database: bool = True) -> Callable[[Target, Snapshot], None]:
    """``report`` and ``collect``: what ``stuck`` and ``scheduler`` read besides, to add to the snapshot under the
    run's deadline while the CPU window is open (``then`` of :func:`~rqdoctor.collect.collect`; ``database``
    False: ``--no-db``, no site database is read)."""
    def add(target: Target, snapshot: Snapshot) -> None:
        deadline = Deadline.for_run(timeout).for_probes()
        add_stuck_facts(target, snapshot, deadline, database)
        snapshot.health = health = HealthState()
        add_health(target, snapshot, health, deadline, database)
    return add
