"""Run the probes under one deadline and assemble the snapshot."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from rqdoctor import __version__, progress
from rqdoctor.config import Target
from rqdoctor.deadline import JOIN_GRACE_S, Background, Deadline
from rqdoctor.diagnose.link import link
from rqdoctor.errors import ProbeFailure, RqdoctorError
from rqdoctor.model import DatabaseState, ProbeError, RedisState, Snapshot
from rqdoctor.redact import redact_text, redact_url

if TYPE_CHECKING:
    import redis

    from rqdoctor.probes.processes import CpuWindow, EarlyCpu

T = TypeVar("T")
EARLY_WAIT_S = 0.25
"""The most the start of a run waits for the early CPU baselines (10 ms on a host of a few hundred processes)."""


@dataclass
class CollectOptions:
    """What to gather, and how long it may take in total."""

    timeout: float = 10.0
    processes: bool = True
    stacks: bool = False
    stack_pids: list[int] = field(default_factory=list)
    """Sample these pids too (``rqdoctor stack PID``)."""
    samples: int = 5
    interval: float = 0.25
    blocking: bool = False
    native: bool = False
    with_locals: bool = False
    adaptive: bool = True
    """One dump of every process first; the window only where some thread ran (see ``probe_stacks``)."""
    database: bool = False
    root_db: bool = True
    """Try the privileged database routes (:mod:`rqdoctor.dbroutes`) before the site accounts."""
    redis: bool = True
    cpu_window: float | None = 0.2
    """Seconds (at least) over which the processes' CPU percent is measured; None: not measured (a command that
    shows none). The window stays open while the later probes run (:func:`collect`)."""
    since_process_start: bool = True
    """Count ``timeout`` from the process start; False: from the call (``demo``, whose set-up comes first)."""


def open_cpu_window_early(options: CollectOptions) -> EarlyCpu | None:
    """Prime the worker-like processes' CPU times before the bench and Redis are read
    (:func:`~rqdoctor.probes.processes.prime_early`); None when the run measures no CPU, or when the scan fails
    or takes over :data:`EARLY_WAIT_S` (it runs in a daemon thread, abandoned then)."""
    if not options.processes or options.cpu_window is None:
        return None
    from rqdoctor.probes.processes import prime_early

    try:
        return Background(prime_early, "rqdoctor-cpu-early").result(EARLY_WAIT_S)
    except Exception:  # a /proc read stuck on a hung process, or any failure: the process probe primes them all
        return None


def collect(target: Target, options: CollectOptions, then: Callable[[Snapshot], None] | None = None,
            early: EarlyCpu | None = None) -> Snapshot:
    """Gather every requested fact by the deadline; probe failures become ``snapshot.errors``, never exceptions.

    The deadline counts from the process start (:meth:`Deadline.for_run`); the probes stop
    :data:`~rqdoctor.deadline.REPORT_RESERVE_S` before it, leaving that for the report. Redis and
    the databases are read in daemon threads, so a peer that answers a byte a second is abandoned
    at the deadline, with an error entry saying so, while the rest of the report goes on.

    The processes' CPU window (``options.cpu_window``) opens with the process probe (or before the bench was
    read, for the processes ``early`` primed: :func:`open_cpu_window_early`) and closes last, after the stacks,
    the databases and ``then`` (more reads of the caller's: ``stuck``'s, ``scheduler``'s), waiting only for what
    remains of it: until then ``cpu_percent`` and ``cpu_time`` are None, and the process probe's errors are not
    yet in ``snapshot.errors``; nothing before may read them.
    """
    run = Deadline.for_run(options.timeout) if options.since_process_start else Deadline(options.timeout)
    deadline = run.for_probes()
    snapshot = Snapshot(host=socket.gethostname(), generated_at=time.time(), target=target.info(),
                        rqdoctor_version=__version__)
    window: CpuWindow | None = None
    try:
        with progress.status() as show:
            window = _collect(target, options, deadline, snapshot, show, early)
        if then is not None:
            then(snapshot)
    finally:
        if window is not None:
            _guard(snapshot.errors, "processes", lambda: _close_cpu_window(snapshot, window, deadline))
    return snapshot


def _collect(target: Target, options: CollectOptions, deadline: Deadline, snapshot: Snapshot,
             show: progress.Show, early: EarlyCpu | None) -> CpuWindow | None:
    """Every probe of :func:`collect`; the processes' CPU window is left open."""
    window = None
    database = None
    if options.database:
        database = Background(lambda: _database(target, options.root_db, deadline), "rqdoctor-db")
    if options.redis:
        show("reading Redis…")
        _guard(snapshot.errors, "redis", lambda: _redis(target, deadline, snapshot))
    if options.processes:
        show("reading the processes…")
        window = _guard(snapshot.errors, "processes", lambda: _processes(snapshot, options, deadline, early))
    if options.stacks:
        _guard(snapshot.errors, "stacks", lambda: _stacks(snapshot, options, deadline, show))
        _guard(snapshot.errors, "preflight", lambda: _preflight(snapshot, deadline))
    if database is not None:
        show("reading the databases…")
        _guard(snapshot.errors, "database", lambda: _join_database(snapshot, database, deadline))
    return window


def _redis(target: Target, deadline: Deadline, snapshot: Snapshot) -> None:
    """Read Redis in a daemon thread; a server that has not answered completely by the deadline is abandoned."""
    from rqdoctor.probes.prefix_probe import other_prefixes
    from rqdoctor.probes.redis_rq import connect, read_rq_state
    from rqdoctor.rqkeys import Keys

    def read() -> tuple[RedisState, list[ProbeError]]:
        errors: list[ProbeError] = []
        client = connect(target.redis_url, deadline.timeout())
        try:
            _settle_prefix(client, target, snapshot)
            state = read_rq_state(client, target.queue_filter, errors, Keys(target.key_prefix))
            if not state.workers:
                others = other_prefixes(client, target.key_prefix)
                if others and _prefix_of_titled(client, target, snapshot, others):
                    errors.clear()
                    state = read_rq_state(client, target.queue_filter, errors, Keys(target.key_prefix))
                    others = [] if state.workers else other_prefixes(client, target.key_prefix)
                state.other_prefixes = others
            return state, errors
        finally:
            client.close()

    try:
        snapshot.redis, errors = Background(read, "rqdoctor-redis").result(deadline.remaining() + JOIN_GRACE_S)
    except TimeoutError:
        raise ProbeFailure("redis", "timeout", f"Redis at {redact_url(target.redis_url)}: no complete reply within the "
                           f"{deadline.seconds:g} s deadline", "the server accepts connections but answers too "
                           "slowly or not at all: is it overloaded or hung? Raise --timeout to wait longer") from None
    snapshot.errors.extend(errors)


def _settle_prefix(client: redis.Redis, target: Target, snapshot: Snapshot) -> None:
    """Of several discovered key prefixes, the one this Redis has workers under (recorded in the snapshot)."""
    from rqdoctor.probes.prefix_probe import choose_prefix

    if len(target.key_prefix_candidates) < 2:
        return  # final (--key-prefix, env RQ_KEY_PREFIX) or nothing to choose from
    chosen = choose_prefix(client, target.key_prefix_candidates)
    if chosen is not None and chosen != target.key_prefix:
        target.key_prefix_source += f"; this Redis has workers under {chosen!r}, none under {target.key_prefix!r}"
        target.key_prefix = chosen
    elif chosen is not None:
        target.key_prefix_source += "; confirmed by this Redis"
    snapshot.target.key_prefix, snapshot.target.key_prefix_source = target.key_prefix, target.key_prefix_source


def _prefix_of_titled(client: redis.Redis, target: Target, snapshot: Snapshot, others: list[str]) -> bool:
    """With no worker under a discovered prefix: adopt the other prefix whose workers set lists a local worker
    known only by its title (setproctitle blanked its environment). True when adopted."""
    from rqdoctor.probes.prefix_probe import prefix_listing

    if not target.key_prefix_candidates or not target.key_prefix_titled:
        return False
    listing = prefix_listing(client, others, target.key_prefix_titled)
    if listing is None:
        return False
    target.key_prefix = listing[0]
    target.key_prefix_source = (f"{listing[0]}:workers of this Redis lists local worker {listing[1]} (known by "
                                "its process title; the title overwrote its environment)")
    snapshot.target.key_prefix, snapshot.target.key_prefix_source = target.key_prefix, target.key_prefix_source
    return True


def _processes(snapshot: Snapshot, options: CollectOptions, deadline: Deadline, early: EarlyCpu | None) -> CpuWindow:
    """The local processes, in a daemon thread abandoned at the deadline (a busy host has thousands); their CPU
    window is left open (:func:`_close_cpu_window`)."""
    from rqdoctor.probes.processes import start_processes

    workers = snapshot.redis.workers if snapshot.redis else []

    def read() -> CpuWindow:
        return start_processes(workers, snapshot.host, options.cpu_window, options.stack_pids, early)

    try:
        window = Background(read, "rqdoctor-processes").result(deadline.remaining() + JOIN_GRACE_S)
    except TimeoutError:
        raise ProbeFailure("processes", "timeout", f"local processes not all read within the {deadline.seconds:g} s "
                           "deadline: no process is tied to a worker or a database session",
                           "raise --timeout (a busy host, or Redis answered late)") from None
    snapshot.processes = list(window.infos)
    return window


def _close_cpu_window(snapshot: Snapshot, window: CpuWindow, deadline: Deadline) -> None:
    """Close the processes' CPU window, in a daemon thread: sleep what remains of it (not past the deadline), read
    each process's CPU times; then fill the infos in and add the process probe's errors (also when abandoned)."""
    readings = None
    try:
        readings = Background(lambda: window.read(deadline.remaining()), "rqdoctor-cpu").result(
            deadline.remaining() + JOIN_GRACE_S)
    except TimeoutError:
        raise ProbeFailure("processes", "timeout", f"the processes' CPU use not read within the {deadline.seconds:g} "
                           "s deadline: no CPU percent is shown", "raise --timeout") from None
    finally:
        gone = {int(e.subject) for e in snapshot.errors if e.probe == "stacks" and e.kind == "vanished"
                and e.subject.isdigit()}
        window.finish(readings, snapshot.errors, gone)


def _stacks(snapshot: Snapshot, options: CollectOptions, deadline: Deadline, show: progress.Show) -> None:
    from rqdoctor.probes.processes import recheck_gone
    from rqdoctor.probes.stacks import probe_stacks

    pids = list(dict.fromkeys([*stack_targets(snapshot), *options.stack_pids]))
    if not pids:
        return
    show(f"sampling the stacks of {len(pids)} process{'es' if len(pids) > 1 else ''}…")
    stacks, errors = probe_stacks(pids, deadline, samples=options.samples, interval=options.interval,
                                  blocking=options.blocking, native=options.native, with_locals=options.with_locals,
                                  adaptive=options.adaptive)
    snapshot.stacks = stacks
    snapshot.errors.extend(errors)
    known = {e.subject for e in snapshot.errors if e.kind == "vanished"}
    recheck_gone(snapshot.processes, [p for p in pids if str(p) not in known], snapshot.errors)


def _preflight(snapshot: Snapshot, deadline: Deadline) -> None:
    from rqdoctor.preflight import failed_local_checks

    snapshot.preflight = failed_local_checks(snapshot.stacks, deadline)


def stack_targets(snapshot: Snapshot) -> list[int]:
    """Pids worth a stack: every live local process running a job, busy workers with no job, orphaned horses.

    Only processes whose identity link confirmed (never a pid a worker hash merely claims); nothing without Redis.
    """
    links = link(snapshot)
    pids = [j.runner.pid for j in links.jobs if j.runner is not None and not j.gone]
    pids += [w.process.pid for w in links.workers
             if w.process is not None and w.worker.state == "busy" and w.horse is None]
    pids += [p.pid for p in links.orphans]
    return list(dict.fromkeys(pids))


def _database(target: Target, root_db: bool, deadline: Deadline) -> tuple[DatabaseState, list[ProbeError]]:
    from rqdoctor import dbroutes
    from rqdoctor.probes.database import probe_groups

    errors: list[ProbeError] = []
    allow = not dbroutes.disabled(not root_db, target.env)
    return probe_groups(dbroutes.plan(target, allow), deadline, errors, dbroutes.scope(target)), errors


def _join_database(snapshot: Snapshot, database: Background[tuple[DatabaseState, list[ProbeError]]],
                   deadline: Deadline) -> None:
    from rqdoctor.merge import match_remote_clients
    from rqdoctor.probes.database import client_processes

    snapshot.database, errors = database.result(deadline.remaining() + JOIN_GRACE_S)
    snapshot.errors.extend(errors)
    # A container with its own network: its sockets are in no table of this host's; each of its processes'
    # connections was read from its own namespace (/proc/<pid>/net/tcp), and names the client address the
    # server reports.
    match_remote_clients(snapshot.database.sessions,
                         [p for p in snapshot.processes if p.identity is not None and p.identity.foreign_ns])
    known = {p.pid for p in snapshot.processes}
    wanted = {s.client_pid for s in snapshot.database.sessions if s.client_pid and s.client_pid not in known}
    snapshot.processes.extend(client_processes(sorted(wanted)))


def _guard(errors: list[ProbeError], probe: str, work: Callable[[], T]) -> T | None:
    """Run one probe step and return what it returns; its failure becomes an error entry (None returned) and the
    others go on."""
    try:
        return work()
    except ProbeFailure as exc:
        errors.append(ProbeError(exc.probe, exc.kind, exc.message, exc.hint))
    except RqdoctorError as exc:
        errors.append(ProbeError(probe, "error", exc.message, exc.hint))
    except TimeoutError:
        errors.append(ProbeError(probe, "timeout", f"{probe} probe did not finish within the deadline",
                                 "raise --timeout"))
    except Exception as exc:
        errors.append(ProbeError(probe, "internal", redact_text(f"{probe} probe failed: {type(exc).__name__}: {exc}"),
                                 "please report this as a bug with the command line used"))
    return None
