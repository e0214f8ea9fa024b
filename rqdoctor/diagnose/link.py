"""Join Redis workers and started jobs to the local processes that run them (pure, no I/O).

A Redis worker is matched to its pid on ``snapshot.host`` when that process is old enough to
have written the worker's ``birth``; its horse is the child whose process group is its own;
a job runs in that horse, in the worker itself (SimpleWorker), or in an orphaned horse whose
worker is gone. Works on a snapshot loaded from JSON on any machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rqdoctor.model import JobInfo, ProcessInfo, Snapshot, WorkerInfo

BIRTH_SLACK = 3.0
"""Seconds a worker's process may appear to start after its ``birth`` (clock ticks, boot-time rounding)."""
ORPHAN_WINDOW = 5.0
"""Max seconds between an orphaned horse's start and its job's ``started_at`` for a match by time."""
VANISHED = "vanished"
"""``ProcessInfo.status`` of a process that exited while the process probe read it."""
_PARTIAL_ERRORS = {"vanished", "permission", "truncated"}
"""Process-probe error kinds that still leave a usable process view."""
_FORKED = ("Forked", "Spawned")
"""Title actions of a worker that has started a work-horse."""
_TITLE = re.compile(r"^rq:worker:(?P<name>.+?): (?P<action>\w+)")


@dataclass
class WorkerLink:
    """A Redis worker and the local processes behind it."""

    worker: WorkerInfo
    process: ProcessInfo | None = None
    horse: ProcessInfo | None = None
    pool_parent: ProcessInfo | None = None
    location: str = "unknown"
    """``local`` (process found), ``remote`` (other host), ``dead`` (this host, no such process) or ``unknown``."""
    kind: str = "unknown"
    """``fork`` (has a horse), ``simple`` (runs its job in-process), ``pool`` (has a pool parent) or ``unknown``."""
    problems: list[str] = field(default_factory=list)
    """One line each, starting with a stable tag: ``pid reused:``, ``process missing:``, ``pid taken:``,
    ``death registered:``, ``horse missing:``, ``no pid:``."""


@dataclass
class JobLink:
    """A started job, its worker and the process that actually runs it."""

    job: JobInfo
    worker: WorkerInfo | None = None
    worker_process: ProcessInfo | None = None
    runner: ProcessInfo | None = None
    """The horse, the worker itself (SimpleWorker), or an orphaned horse."""
    runner_role: str | None = None
    """``horse``, ``worker``, ``orphaned-horse`` or None."""
    children: list[ProcessInfo] = field(default_factory=list)
    """Descendants of the runner (e.g. wkhtmltopdf, a shell), parents first."""
    location: str = "unknown"
    """``local``, ``remote`` or ``unknown``."""
    matched_by: str = ""
    """How it was matched: ``executions``, ``current_job``, ``worker_name``, ``queue`` (worker found);
    ``title``, ``started_at`` (orphaned horse found)."""
    pre_start: bool = False
    """A horse runs it but the job is still ``queued``: stuck before ``prepare_job_execution`` (rq 2.x+)."""


@dataclass
class Links:
    """Every worker and started job of a snapshot, joined to processes."""

    workers: list[WorkerLink] = field(default_factory=list)
    jobs: list[JobLink] = field(default_factory=list)
    orphans: list[ProcessInfo] = field(default_factory=list)
    """Horse-like processes whose worker is not alive (re-parented, or the worker's hash is gone)."""

    def job_for_pid(self, pid: int) -> JobLink | None:
        """The job whose runner is ``pid`` or one of the runner's descendants."""
        for jl in self.jobs:
            if jl.runner is not None and pid in {jl.runner.pid, *(c.pid for c in jl.children)}:
                return jl
        return None

    def worker_for_pid(self, pid: int) -> WorkerLink | None:
        """The worker whose process or horse is ``pid``."""
        for wl in self.workers:
            if pid in {p.pid for p in (wl.process, wl.horse) if p is not None}:
                return wl
        return None


def link(snapshot: Snapshot) -> Links:
    """Join the snapshot's Redis workers and started jobs to its processes."""
    tree = _Tree(snapshot.processes)
    blind = any(e.probe == "processes" and e.kind not in _PARTIAL_ERRORS for e in snapshot.errors)
    workers = snapshot.redis.workers if snapshot.redis else []
    jobs = snapshot.redis.jobs if snapshot.redis else []
    wlinks = [_link_worker(w, snapshot.host, tree, blind) for w in workers]
    _resolve_shared_pids(wlinks)
    for wl in wlinks:
        _attach_horse(wl, tree)
    links = Links(workers=wlinks, orphans=_orphans(wlinks, tree, snapshot.target.bench_path))
    links.jobs = _link_jobs(jobs, wlinks, links.orphans, snapshot.host)
    for jl in links.jobs:
        if jl.runner is not None:
            jl.children = list(tree.descendants(jl.runner.pid))
    return links


class _Tree:
    """Processes by pid and by parent."""

    def __init__(self, processes: list[ProcessInfo]) -> None:
        self.by_pid = {p.pid: p for p in processes}
        self.kids: dict[int, list[ProcessInfo]] = {}
        for p in sorted(processes, key=lambda p: p.pid):
            if p.ppid is not None and p.ppid != p.pid:
                self.kids.setdefault(p.ppid, []).append(p)

    def descendants(self, pid: int) -> Iterator[ProcessInfo]:
        seen = {pid}
        stack = list(reversed(self.kids.get(pid, [])))
        while stack:
            p = stack.pop()
            if p.pid in seen:
                continue
            seen.add(p.pid)
            yield p
            stack.extend(reversed(self.kids.get(p.pid, [])))


def parse_title(p: ProcessInfo) -> tuple[str, str] | None:
    """``(worker name, action)`` from an RQ process title (``rq:worker:<name>: Processing …``)."""
    m = _TITLE.match(" ".join(p.cmdline))
    return (m["name"], m["action"]) if m else None


def _is_group_leader(p: ProcessInfo) -> bool:
    return p.pgid == p.pid


def _link_worker(w: WorkerInfo, host: str, tree: _Tree, blind: bool) -> WorkerLink:
    wl = WorkerLink(worker=w)
    if not w.hostname or w.pid is None:
        wl.problems.append("no pid: the worker hash names no hostname or pid")
    elif w.hostname != host:
        wl.location = "remote"
    elif w.death is not None:
        wl.location = "dead"
        wl.problems.append("death registered: the worker recorded a clean exit")
    else:
        p = tree.by_pid.get(w.pid)
        if p is None or p.status == VANISHED:
            wl.location = "unknown" if blind else "dead"
            wl.problems.append(f"process missing: no process {w.pid} on {host}")
        elif p.create_time is not None and w.birth is not None and p.create_time > w.birth + BIRTH_SLACK:
            wl.location = "dead"
            late = p.create_time - w.birth
            wl.problems.append(f"pid reused: process {p.pid} started {late:.0f} s after the worker's birth")
        else:
            wl.process, wl.location = p, "local"
    return wl


def _resolve_shared_pids(wlinks: list[WorkerLink]) -> None:
    """Two live-looking hashes on one pid: the latest birth keeps the process."""
    by_pid: dict[int, list[WorkerLink]] = {}
    for wl in wlinks:
        if wl.process is not None:
            by_pid.setdefault(wl.process.pid, []).append(wl)
    for group in by_pid.values():
        group.sort(key=lambda wl: wl.worker.birth or 0.0, reverse=True)
        for wl in group[1:]:
            wl.problems.append(f"pid taken: process {wl.process.pid} belongs to worker {group[0].worker.name}")
            wl.process, wl.location = None, "dead"


def _attach_horse(wl: WorkerLink, tree: _Tree) -> None:
    """Find the horse and pool parent, and tell the worker's kind."""
    p = wl.process
    if p is None:
        return
    v1 = (wl.worker.version or "").startswith("1.")
    horses = [c for c in tree.kids.get(p.pid, []) if _is_group_leader(c) and (not v1 or c.sid in (None, c.pid))]
    horses.sort(key=lambda c: (c.status != VANISHED, c.worker_like, c.create_time or 0.0))
    wl.horse = horses[-1] if horses else None
    parent = tree.by_pid.get(p.ppid) if p.ppid is not None else None
    wl.pool_parent = parent if parent is not None and parent.worker_like else None
    own_title = parse_title(p)
    forked = own_title is not None and own_title[1] in _FORKED
    if forked and wl.horse is None and _current_jobs(wl.worker):
        wl.problems.append("horse missing: the worker's title says it forked, but no work-horse child was found")
    if wl.pool_parent is not None:
        wl.kind = "pool"
    elif wl.horse is not None or forked:
        wl.kind = "fork"
    elif _runs_in_process(wl):
        wl.kind = "simple"


def _runs_in_process(wl: WorkerLink) -> bool:
    """A busy worker with a current job, no horse, and no title saying it forked or idles runs the job itself."""
    if wl.process is None or wl.horse is not None or wl.worker.state != "busy" or not _current_jobs(wl.worker):
        return False
    own_title = parse_title(wl.process)
    return own_title is None or own_title[1] not in (*_FORKED, "Listening")


def _current_jobs(w: WorkerInfo) -> set[str]:
    """Job ids the worker hash says it runs now (``current_job``, or rq 3.0 ``executions``)."""
    ids = {e.rpartition(":")[0] for e in w.executions if ":" in e}
    return ids | ({w.current_job} if w.current_job else set())


def _orphans(wlinks: list[WorkerLink], tree: _Tree, bench_path: str | None) -> list[ProcessInfo]:
    """Worker-like process-group leaders that are neither a live worker, its pool parent nor its horse."""
    live = {wl.process.pid for wl in wlinks if wl.process is not None}
    taken = live | {wl.pool_parent.pid for wl in wlinks if wl.pool_parent is not None}
    prefix = bench_path.rstrip("/") + "/" if bench_path else None
    out = []
    for p in tree.by_pid.values():
        if not (p.worker_like and _is_group_leader(p)) or p.status == VANISHED or p.pid in taken or p.ppid in live:
            continue
        own_title = parse_title(p)
        if own_title and own_title[1] != "Processing":
            continue  # a worker's own title: Listening / Forked / Spawned
        if any(c.worker_like and _is_group_leader(c) for c in tree.kids.get(p.pid, [])):
            continue  # a worker (not in Redis) with its own horse
        if prefix and p.cwd and not (p.cwd + "/").startswith(prefix):
            continue  # another bench's process
        out.append(p)
    return sorted(out, key=lambda p: p.pid)


def _find_worker(job: JobInfo, wlinks: list[WorkerLink]) -> tuple[WorkerLink | None, str]:
    """The worker running the job now, else the one the job names; and how it was found."""
    tiers: list[tuple[str, Callable[[WorkerLink], bool]]] = [
        ("executions", lambda wl: any(e.rpartition(":")[0] == job.job_id for e in wl.worker.executions)),
        ("current_job", lambda wl: wl.worker.current_job == job.job_id),
        ("worker_name", lambda wl: wl.worker.name == job.worker_name),
    ]
    for how, test in tiers:
        found = [wl for wl in wlinks if test(wl)]
        if found:
            found.sort(key=lambda wl: (wl.process is not None, wl.worker.birth or 0.0))
            return found[-1], how
    if job.status == "queued" and not job.worker_name:
        idle_busy = [
            wl
            for wl in wlinks
            if wl.horse is not None and wl.worker.state == "busy" and not _current_jobs(wl.worker)
            and job.queue in wl.worker.queues
        ]
        if len(idle_busy) == 1:
            return idle_busy[0], "queue"
    return None, ""


def _link_jobs(jobs: list[JobInfo], wlinks: list[WorkerLink], orphans: list[ProcessInfo], host: str) -> list[JobLink]:
    out = []
    for job in jobs:
        wl, how = _find_worker(job, wlinks)
        jl = JobLink(job=job, matched_by=how)
        if wl is not None:
            jl.worker, jl.worker_process = wl.worker, wl.process
            if wl.worker.hostname:
                jl.location = "local" if wl.worker.hostname == host else "remote"
            if how != "worker_name" and wl.process is not None:
                if wl.horse is not None:
                    jl.runner, jl.runner_role = wl.horse, "horse"
                elif _runs_in_process(wl):
                    jl.runner, jl.runner_role = wl.process, "worker"
        jl.pre_start = jl.runner_role == "horse" and job.status == "queued"
        out.append(jl)
    _match_orphans(out, wlinks, orphans)
    return out


def _match_orphans(jlinks: list[JobLink], wlinks: list[WorkerLink], orphans: list[ProcessInfo]) -> None:
    """Give runner-less jobs of gone workers an orphaned horse: by title first, then by start time."""
    by_name = {wl.worker.name: wl for wl in wlinks}
    free = list(orphans)
    waiting = [
        jl
        for jl in jlinks
        if jl.runner is None and jl.job.worker_name and jl.location != "remote"
        and (by_name.get(jl.job.worker_name) is None or by_name[jl.job.worker_name].process is None)
    ]
    for how in ("title", "started_at"):
        for jl in waiting:
            if jl.runner is not None:
                continue
            candidates = [p for p in free if _orphan_fits(p, jl.job, how)]
            if not candidates:
                continue
            best = min(candidates, key=lambda p: abs((p.create_time or 0.0) - (jl.job.started_at or 0.0)))
            free.remove(best)
            jl.runner, jl.runner_role, jl.matched_by, jl.location = best, "orphaned-horse", how, "local"


def _orphan_fits(p: ProcessInfo, job: JobInfo, how: str) -> bool:
    own_title = parse_title(p)
    if how == "title":
        return own_title is not None and own_title[0] == job.worker_name
    if own_title is not None or p.create_time is None or job.started_at is None:
        return False
    return abs(p.create_time - job.started_at) <= ORPHAN_WINDOW
