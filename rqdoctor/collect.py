"""Run the probes under one deadline and assemble the snapshot."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rqdoctor import __version__
from rqdoctor.config import Target
from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.link import link
from rqdoctor.errors import ProbeFailure, RqdoctorError
from rqdoctor.model import DatabaseState, ProbeError, Snapshot
from rqdoctor.redact import redact_text


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
    database: bool = False
    root_db: bool = True
    """Try the privileged database routes (:mod:`rqdoctor.dbroutes`) before the site accounts."""
    redis: bool = True


def collect(target: Target, options: CollectOptions) -> Snapshot:
    """Gather every requested fact; probe failures become ``snapshot.errors``, never exceptions."""
    deadline = Deadline(options.timeout)
    snapshot = Snapshot(host=socket.gethostname(), generated_at=time.time(), target=target.info(),
                        rqdoctor_version=__version__)
    database = None
    if options.database:
        database = Background(lambda: _database(target, options.root_db, deadline, snapshot.errors))
    if options.redis:
        _redis(target, deadline, snapshot)
    if options.processes:
        _guard(snapshot.errors, "processes", lambda: _processes(snapshot, options.stack_pids))
    if options.stacks:
        _guard(snapshot.errors, "stacks", lambda: _stacks(snapshot, options, deadline))
        _guard(snapshot.errors, "preflight", lambda: _preflight(snapshot, deadline))
    if database is not None:
        _guard(snapshot.errors, "database", lambda: _join_database(snapshot, database, deadline))
    return snapshot


class Background:
    """One probe in a daemon thread: neither Ctrl-C nor the end of the run waits for it."""

    def __init__(self, work: Callable[[], DatabaseState]) -> None:
        self._result: DatabaseState | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="rqdoctor-db", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], DatabaseState]) -> None:
        try:
            self._result = work()
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self, timeout: float) -> DatabaseState:
        """The probe's result, its exception, or TimeoutError when it is still running."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _redis(target: Target, deadline: Deadline, snapshot: Snapshot) -> None:
    from rqdoctor.probes.redis_rq import connect, read_rq_state

    def read() -> None:
        client = connect(target.redis_url, deadline.timeout())
        try:
            snapshot.redis = read_rq_state(client, target.queue_filter, snapshot.errors)
        finally:
            client.close()

    _guard(snapshot.errors, "redis", read)


def _processes(snapshot: Snapshot, extra_pids: list[int]) -> None:
    from rqdoctor.probes.processes import probe_processes

    workers = snapshot.redis.workers if snapshot.redis else []
    snapshot.processes = probe_processes(workers, snapshot.host, snapshot.errors, extra_pids=extra_pids)


def _stacks(snapshot: Snapshot, options: CollectOptions, deadline: Deadline) -> None:
    from rqdoctor.probes.processes import recheck_gone
    from rqdoctor.probes.stacks import probe_stacks

    pids = list(dict.fromkeys([*stack_targets(snapshot), *options.stack_pids]))
    if not pids:
        return
    stacks, errors = probe_stacks(pids, deadline, samples=options.samples, interval=options.interval,
                                  blocking=options.blocking, native=options.native, with_locals=options.with_locals)
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


def _database(target: Target, root_db: bool, deadline: Deadline, errors: list[ProbeError]) -> DatabaseState:
    from rqdoctor import dbroutes
    from rqdoctor.probes.database import probe_groups

    allow = not dbroutes.disabled(not root_db, target.env)
    return probe_groups(dbroutes.plan(target, allow), deadline, errors, dbroutes.scope(target))


def _join_database(snapshot: Snapshot, database: Background, deadline: Deadline) -> None:
    from rqdoctor.probes.database import client_processes

    snapshot.database = database.result(timeout=deadline.timeout() + 1.0)
    known = {p.pid for p in snapshot.processes}
    wanted = {s.client_pid for s in snapshot.database.sessions if s.client_pid and s.client_pid not in known}
    snapshot.processes.extend(client_processes(sorted(wanted)))


def _guard(errors: list[ProbeError], probe: str, work: Callable[[], None]) -> None:
    """Run one probe step; its failure becomes an error entry and the others go on."""
    try:
        work()
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
