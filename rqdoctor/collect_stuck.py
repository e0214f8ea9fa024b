"""The snapshot of ``rqdoctor stuck``: Redis and the processes (no stacks), then what only stuck reads.

No stack is sampled: every stuck verdict rests on Redis and the process table (a kill decision never
rests on py-spy being there). On top of :func:`rqdoctor.collect.collect`, under the same deadline: the
status of stopped processes read again a moment later, the job-hash scan (zombie hashes) and the
Frappe leftovers (document lock files, Scheduled Job Log rows in ``Start``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psutil

from rqdoctor.collect import CollectOptions, _guard, collect
from rqdoctor.config import Target
from rqdoctor.deadline import JOIN_GRACE_S, Background, Deadline
from rqdoctor.errors import ProbeFailure
from rqdoctor.jobids import site_of
from rqdoctor.model import JobScan, ProbeError, Snapshot
from rqdoctor.redact import redact_url

RECHECK_AFTER_S = 0.5
"""A process seen stopped (or a zombie) is read again this much later: py-spy --blocking pauses for
milliseconds, and a live worker reaps its exited horse at once."""


def collect_stuck(target: Target, timeout: float, database: bool = True, known_ids: Iterable[str] = (),
                  fresh: bool = False, then: Callable[[Snapshot], None] | None = None) -> Snapshot:
    """Everything ``stuck`` judges; ``known_ids``: job ids to look up directly besides the scan.

    ``fresh``: a new deadline of ``timeout`` seconds from now (a re-read after ``--kill``), not from the
    process start. The stuck facts, then ``then`` (more reads), are read while the processes' CPU window is
    open (see :func:`~rqdoctor.collect.collect`): none of them may read ``cpu_percent``.
    """
    def stuck_facts(snapshot: Snapshot) -> None:
        deadline = (Deadline(timeout) if fresh else Deadline.for_run(timeout)).for_probes()
        add_stuck_facts(target, snapshot, deadline, database, known_ids)
        if then is not None:
            then(snapshot)

    return collect(target, CollectOptions(timeout=timeout, since_process_start=not fresh), then=stuck_facts)


def add_stuck_facts(target: Target, snapshot: Snapshot, deadline: Deadline, database: bool = True,
                    known_ids: Iterable[str] = ()) -> None:
    """What only ``stuck`` reads, added to a snapshot of :func:`rqdoctor.collect.collect` (also used by
    ``scheduler`` and ``report``): stopped processes read again, the Frappe leftovers, the job-hash scan.

    Reads no ``cpu_percent`` or ``cpu_time``: it may run before the processes' CPU window closes."""
    _guard(snapshot.errors, "processes", lambda: recheck_stopped(snapshot, deadline))
    if target.bench is not None:
        from rqdoctor.probes.frappe_state import read_frappe

        def frappe() -> None:
            snapshot.frappe = read_frappe(target, deadline, snapshot.errors, database)
        _guard(snapshot.errors, "frappe", frappe)
    if snapshot.redis is not None:
        ids = list(known_ids) + scheduled_ids(snapshot)
        _guard(snapshot.errors, "jobscan", lambda: _scan(target, snapshot, deadline, ids))


def scheduled_ids(snapshot: Snapshot) -> list[str]:
    """Frappe's fixed ids of the enabled scheduled job types: ``<site>::scheduled_job::<method>`` (v14/v15)
    and ``<site>||scheduled_job||<method with : as |>`` (v16)."""
    if snapshot.frappe is None:
        return []
    return [job_id for site, methods in sorted(snapshot.frappe.scheduled_methods.items()) for m in methods
            for job_id in (f"{site}::scheduled_job::{m}", f"{site}||scheduled_job||{m.replace(':', '|')}")
            if site_of(job_id) == site]


def recheck_stopped(snapshot: Snapshot, deadline: Deadline) -> None:
    """Read the status of processes seen ``stopped`` or ``zombie`` again after :data:`RECHECK_AFTER_S`."""
    stopped = [p for p in snapshot.processes if p.status in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)]
    if not stopped or deadline.remaining() < RECHECK_AFTER_S:
        return
    time.sleep(RECHECK_AFTER_S)
    for p in stopped:
        try:
            proc = psutil.Process(p.pid)
            same = p.create_time is None or abs(proc.create_time() - p.create_time) < 1.0
            p.status_again = proc.status() if same else "vanished"
        except psutil.Error:
            p.status_again = "vanished"


def _scan(target: Target, snapshot: Snapshot, deadline: Deadline, ids: list[str]) -> None:
    from rqdoctor.probes.job_scan import scan_jobs
    from rqdoctor.probes.redis_rq import connect
    from rqdoctor.rqkeys import Keys

    def read() -> tuple[JobScan, list[ProbeError]]:
        errors: list[ProbeError] = []
        client = connect(target.redis_url, deadline.timeout())
        try:
            assert snapshot.redis is not None
            return scan_jobs(client, snapshot.redis, target.queue_filter, deadline, errors, ids,
                             keys=Keys(target.key_prefix)), errors
        finally:
            client.close()

    try:
        scan, errors = Background(read, "rqdoctor-jobscan").result(deadline.remaining() + JOIN_GRACE_S)
    except TimeoutError:
        raise ProbeFailure("jobscan", "timeout", f"Redis at {redact_url(target.redis_url)}: the job-hash scan did not "
                           "finish within the deadline: no zombie-hash verdict", "raise --timeout") from None
    assert snapshot.redis is not None
    snapshot.redis.job_scan = scan
    snapshot.errors.extend(errors)
