"""Join Redis workers and started jobs to the local processes that run them (pure, no I/O).

Identity before any claim: a Redis worker is matched to the process its hash names (its pid on
``snapshot.host``, or its namespace pid in a container of this host whose hostname it names:
:mod:`rqdoctor.diagnose.identity`) only when that process is alive (not a zombie), is an RQ worker by
its argv or title, and is old enough to have written the worker's ``birth``; otherwise the worker is
``dead`` (no such process, or it exited) or ``not-found`` (the pid is held by something else). Its horse
is the child whose process group is its own; a job runs in that horse, in the worker itself (SimpleWorker), or in an
orphaned horse: a horse-like process whose parent is not a live worker, that belongs to the
diagnosed bench or Redis. Works on a snapshot loaded from JSON on any machine.

Processes are named by :class:`~rqdoctor.model.ProcKey` (host, pid), never by a bare pid: a snapshot merged
from several hosts holds each host's processes, and a worker, its horse and its orphans are on one host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rqdoctor.diagnose.identity import Hosts
from rqdoctor.endpoints import redis_host_port
from rqdoctor.model import JobInfo, ProcessInfo, ProcKey, Snapshot, WorkerInfo

BIRTH_SLACK = 3.0
"""Seconds a worker's process may appear to start after its ``birth`` (clock ticks, boot-time rounding)."""
ORPHAN_WINDOW = 5.0
"""Max seconds between an orphaned horse's start and its job's ``started_at`` for a match by time."""
LOADED_WINDOW = 60.0
"""Max seconds an untitled orphan may start before its job's start (``started_at`` is set in the horse, late on
a loaded host) and still count as possibly running it: outside :data:`ORPHAN_WINDOW` it is weaker evidence."""
VANISHED = "vanished"
"""``ProcessInfo.status`` of a process that exited while rqdoctor read or sampled it."""
ZOMBIE = "zombie"
"""psutil status of a process that exited and was not reaped by its parent."""
GONE = frozenset({VANISHED, ZOMBIE})
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
    """``local`` (its live worker process found), ``remote`` (other host), ``dead`` (this host: no such
    process, it exited, a newer worker holds its pid, or it recorded its death), ``not-found`` (this host:
    the pid is held by a process that is not this worker) or ``unknown``."""
    kind: str = "unknown"
    """``fork`` (has a horse), ``simple`` (runs its job in-process), ``pool`` (has a pool parent) or ``unknown``."""
    problems: list[str] = field(default_factory=list)
    """One line each, starting with a stable tag: ``pid reused:``, ``not a worker:``, ``zombie:``,
    ``process missing:``, ``pid taken:``, ``death registered:``, ``horse missing:``, ``no pid:``."""
    claimed: ProcessInfo | None = None
    """The local process holding the hash's pid when it is not this worker: an unrelated or newer process,
    a zombie, or a newer worker (``pid taken``)."""
    forking: bool = False
    """A live child runs the worker's own argv: a fork (a horse not yet its own process group), so the job
    does not run in the worker even when no horse is found."""
    container: str | None = None
    """The container (UTS hostname of a foreign PID namespace on this host) the hash was resolved in; its
    processes are still named by host pid."""
    on_this_host: bool = False
    """Its hostname is this host's or a container's on it (:func:`rqdoctor.diagnose.identity.resolve`); merged
    from several hosts: one of the collected hosts (:attr:`host`)."""
    host: str | None = None
    """The collected host it is on (None: remote, or no hostname)."""


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
    gone: bool = False
    """Its runner exited while rqdoctor read or sampled it (vanished, or a zombie): no verdict, no advice."""


@dataclass
class Links:
    """Every worker and started job of a snapshot, joined to processes."""

    workers: list[WorkerLink] = field(default_factory=list)
    jobs: list[JobLink] = field(default_factory=list)
    orphans: list[ProcessInfo] = field(default_factory=list)
    """Orphaned work-horses of the diagnosed bench or Redis: their parent is not a live worker."""
    orphan_evidence: dict[ProcKey, list[str]] = field(default_factory=dict)
    """Per orphan: why it is an orphan and why it is ours (one line each)."""
    gone: set[ProcKey] = field(default_factory=set)
    """Processes that exited while rqdoctor read or sampled them (:func:`gone_pids`): no verdict, no advice."""
    unmatched: set[ProcKey] = field(default_factory=set)
    """Untitled orphans of the bench or Redis matched to no job while a gone worker's started job has no runner:
    weaker evidence (no title, start time outside :data:`ORPHAN_WINDOW`), yet one might be running that job."""

    host: str = ""
    """The snapshot's host: that of a process whose identity names none."""

    def key(self, p: ProcessInfo) -> ProcKey:
        """The host and pid of a process of the snapshot."""
        return p.key(self.host)

    def local(self, pid: int) -> ProcKey:
        """Process ``pid`` of the snapshot's own host."""
        return ProcKey(self.host, pid)

    def job_for(self, key: ProcKey) -> JobLink | None:
        """The job whose runner is that process or one of the runner's descendants."""
        for jl in self.jobs:
            if jl.runner is not None and key in {self.key(p) for p in (jl.runner, *jl.children)}:
                return jl
        return None

    def worker_for(self, key: ProcKey) -> WorkerLink | None:
        """The worker whose process or horse is that process."""
        for wl in self.workers:
            if key in {self.key(p) for p in (wl.process, wl.horse) if p is not None}:
                return wl
        return None


def link(snapshot: Snapshot) -> Links:
    """Join the snapshot's Redis workers and started jobs to its processes (nothing without Redis)."""
    if snapshot.redis is None:
        return Links(gone=gone_pids(snapshot), host=snapshot.host)
    tree = _Tree(snapshot.processes, snapshot.host)
    hosts = Hosts(snapshot)
    blind = {h for h in hosts.processes if _blind(snapshot, h)}
    wlinks = [_link_worker(w, snapshot, hosts, blind) for w in snapshot.redis.workers]
    _resolve_shared_pids(wlinks, tree)
    for wl in wlinks:
        _attach_horse(wl, tree)
    # Only orphans tied to this bench or Redis may be matched to its jobs: another bench's orphan that started at
    # the same moment (one OOM kill or restart took both benches' workers) would otherwise take this job's match.
    found = [(p, _ties(snapshot, p, tree)) for p in _orphan_candidates(wlinks, tree)]
    ties = {tree.key(p): lines for p, lines in found if lines is not None}
    candidates = [p for p, lines in found if lines is not None]
    links = Links(workers=wlinks, gone=gone_pids(snapshot), host=snapshot.host)
    links.jobs = _link_jobs(snapshot.redis.jobs, wlinks, candidates, tree)
    links.orphans, links.orphan_evidence = _ours(candidates, ties, tree, links)
    orphans = {tree.key(p) for p in links.orphans}
    for jl in links.jobs:
        if jl.runner_role == "orphaned-horse" and jl.runner is not None and tree.key(jl.runner) not in orphans:
            jl.runner, jl.runner_role, jl.matched_by = None, None, ""  # not an orphan of ours after all
            host = jl.worker.hostname if jl.worker else None
            jl.location = "unknown" if not host else "local" if hosts.host_of(host) else "remote"
        if jl.runner is not None:
            jl.children = list(tree.descendants(jl.runner))
            jl.gone = tree.key(jl.runner) in links.gone
    return links


def _blind(snapshot: Snapshot, host: str) -> bool:
    """The process probe of ``host`` failed: a missing process there proves nothing."""
    return any(e.probe == "processes" and e.kind not in _PARTIAL_ERRORS and (e.host or snapshot.host) == host
               for e in snapshot.errors)


def alive(p: ProcessInfo) -> bool:
    """Not exited: neither vanished while read nor a zombie."""
    return p.status not in GONE


def gone_pids(snapshot: Snapshot) -> set[ProcKey]:
    """Processes that exited while rqdoctor read or sampled them (vanished status or error, zombie)."""
    keys = {snapshot.key(p) for p in snapshot.processes if not alive(p)}
    keys |= {ProcKey(s.host or snapshot.host, s.pid) for s in snapshot.stacks
             if s.error is not None and s.error.kind == VANISHED}
    for e in snapshot.errors:
        if e.kind == VANISHED and e.subject:
            digits = e.subject.removeprefix("pid ").strip()
            if digits.isdigit():
                keys.add(ProcKey(e.host or snapshot.host, int(digits)))
    return keys


class _Tree:
    """Processes by (host, pid) and by parent."""

    def __init__(self, processes: list[ProcessInfo], host: str) -> None:
        self.host = host
        self.by_key = {self.key(p): p for p in processes}
        self.kids: dict[ProcKey, list[ProcessInfo]] = {}
        for p in sorted(processes, key=lambda p: self.key(p)):
            if p.ppid is not None and p.ppid != p.pid:
                self.kids.setdefault(ProcKey(self.key(p).host, p.ppid), []).append(p)

    def key(self, p: ProcessInfo) -> ProcKey:
        return p.key(self.host)

    def parent(self, p: ProcessInfo) -> ProcessInfo | None:
        return self.by_key.get(ProcKey(self.key(p).host, p.ppid)) if p.ppid is not None else None

    def children(self, p: ProcessInfo) -> list[ProcessInfo]:
        return self.kids.get(self.key(p), [])

    def descendants(self, root: ProcessInfo) -> Iterator[ProcessInfo]:
        seen = {self.key(root)}
        stack = list(reversed(self.children(root)))
        while stack:
            p = stack.pop()
            if self.key(p) in seen:
                continue
            seen.add(self.key(p))
            yield p
            stack.extend(reversed(self.children(p)))


def parse_title(p: ProcessInfo) -> tuple[str, str] | None:
    """``(worker name, action)`` from an RQ process title (``rq:worker:<name>: Processing …``)."""
    m = _TITLE.match(" ".join(p.cmdline))
    return (m["name"], m["action"]) if m else None


def _is_group_leader(p: ProcessInfo) -> bool:
    return p.pgid == p.pid


def _link_worker(w: WorkerInfo, snapshot: Snapshot, hosts: Hosts, blind: set[str]) -> WorkerLink:
    wl = WorkerLink(worker=w)
    found = hosts.resolve(w.hostname, w.pid)
    wl.container, wl.on_this_host, wl.host = found.container, found.local, found.host
    if not w.hostname or w.pid is None:
        wl.problems.append("no pid: the worker hash names no hostname or pid")
    elif not found.local:
        wl.location = "remote"
    elif w.death is not None:
        wl.location = "dead"
        wl.problems.append("death registered: the worker recorded a clean exit")
    else:
        where = f"container {found.container} on {found.host}" if found.container else str(found.host)
        _identify(wl, found.process, where, found.host in blind)
    return wl


def _identify(wl: WorkerLink, p: ProcessInfo | None, host: str, blind: bool) -> None:
    """Accept ``p`` as the worker only if it is a live RQ worker that started before the hash's birth."""
    w = wl.worker
    if p is None or p.status == VANISHED:
        wl.location = "unknown" if blind else "dead"
        wl.problems.append(f"process missing: no process {w.pid} in {host}" if wl.container
                           else f"process missing: no process {w.pid} on {host}")
    elif p.status == ZOMBIE:
        wl.location, wl.claimed = "dead", p
        wl.problems.append(f"zombie: process {p.pid} has exited; its parent {p.ppid} has not reaped it")
    elif p.create_time is not None and w.birth is not None and p.create_time > w.birth + BIRTH_SLACK:
        wl.location, wl.claimed = "not-found", p
        late = p.create_time - w.birth
        wl.problems.append(f"pid reused: process {p.pid} started {late:.0f} s after the worker's birth")
    elif not p.worker_like:
        wl.location, wl.claimed = "not-found", p
        wl.problems.append(f"not a worker: process {p.pid} runs `{' '.join(p.cmdline)[:120] or '?'}`, "
                           "which is not an RQ worker by its command line or title")
    else:
        wl.process, wl.location = p, "local"


def _resolve_shared_pids(wlinks: list[WorkerLink], tree: _Tree) -> None:
    """Two live-looking hashes on one process: the latest birth keeps it."""
    by_process: dict[ProcKey, list[WorkerLink]] = {}
    for wl in wlinks:
        if wl.process is not None:
            by_process.setdefault(tree.key(wl.process), []).append(wl)
    for group in by_process.values():
        group.sort(key=lambda wl: wl.worker.birth or 0.0, reverse=True)
        for wl in group[1:]:
            wl.problems.append(f"pid taken: process {wl.process.pid} belongs to worker {group[0].worker.name}")
            wl.claimed, wl.process, wl.location = wl.process, None, "dead"


def _attach_horse(wl: WorkerLink, tree: _Tree) -> None:
    """Find the horse and pool parent, and tell the worker's kind."""
    p = wl.process
    if p is None:
        return
    v1 = (wl.worker.version or "").startswith("1.")
    horses = [c for c in tree.children(p) if _is_group_leader(c) and (not v1 or c.sid in (None, c.pid))]
    horses.sort(key=lambda c: (alive(c), c.worker_like, c.create_time or 0.0))
    wl.horse = horses[-1] if horses else None
    parent = tree.parent(p)
    # A pool forks its workers, so they share its PID namespace (a container's parent, e.g. `unshare`, is none).
    wl.pool_parent = parent if parent is not None and parent.worker_like and _same_pid_ns(parent, p) else None
    own_title = parse_title(p)
    forked = own_title is not None and own_title[1] in _FORKED
    # A fork caught before it made itself a process group still runs the worker's argv: a horse, not a job
    # of a SimpleWorker (whose children are the job's own programs).
    # (An idle worker's worker-like child is its scheduler; a busy one's could be too: then no verdict at all.)
    wl.forking = bool(_current_jobs(wl.worker)) and any(c.worker_like and alive(c) for c in tree.children(p))
    if forked and wl.horse is None and _current_jobs(wl.worker):
        wl.problems.append("horse missing: the worker's title says it forked, but no work-horse child was found")
    if wl.pool_parent is not None:
        wl.kind = "pool"
    elif wl.horse is not None or forked or wl.forking:
        wl.kind = "fork"
    elif _runs_in_process(wl):
        wl.kind = "simple"


def _same_pid_ns(a: ProcessInfo, b: ProcessInfo) -> bool:
    """Both in one PID namespace (assumed when either identity is unknown)."""
    return a.identity is None or b.identity is None or a.identity.pid_ns == b.identity.pid_ns


def _runs_in_process(wl: WorkerLink) -> bool:
    """A busy worker with a current job, no horse, and no title saying it forked or idles runs the job itself."""
    if wl.process is None or wl.horse is not None or wl.forking or wl.worker.state != "busy" \
            or not _current_jobs(wl.worker):
        return False
    own_title = parse_title(wl.process)
    return own_title is None or own_title[1] not in (*_FORKED, "Listening")


def _current_jobs(w: WorkerInfo) -> set[str]:
    """Job ids the worker hash says it runs now (``current_job``, or rq 3.0 ``executions``)."""
    ids = {e.rpartition(":")[0] for e in w.executions if ":" in e}
    return ids | ({w.current_job} if w.current_job else set())


def _orphan_candidates(wlinks: list[WorkerLink], tree: _Tree) -> list[ProcessInfo]:
    """Live worker-like group leaders whose parent is not a live worker: re-parented (ppid 1, a subreaper).

    Excluded: live workers, pool parents, anybody's horse (a child of a live worker-like process, even one
    Redis does not list: another Redis's worker), a worker's own title (Listening / Forked / Spawned) and
    an unregistered worker with a horse of its own.
    """
    taken = {tree.key(wl.process) for wl in wlinks if wl.process is not None}
    taken |= {tree.key(wl.pool_parent) for wl in wlinks if wl.pool_parent is not None}
    out = []
    for p in tree.by_key.values():
        if not (p.worker_like and _is_group_leader(p)) or not alive(p) or tree.key(p) in taken:
            continue
        parent = tree.parent(p)
        if parent is not None and parent.worker_like and alive(parent):
            continue  # the horse of a live worker (of this Redis or another)
        own_title = parse_title(p)
        if own_title and own_title[1] != "Processing":
            continue  # a worker's own title: Listening / Forked / Spawned
        if any(c.worker_like and _is_group_leader(c) for c in tree.children(p)):
            continue  # a worker (not in Redis) with its own horse
        out.append(p)
    return sorted(out, key=tree.key)


def _ties(snapshot: Snapshot, p: ProcessInfo, tree: _Tree) -> list[str] | None:
    """What ties an orphan candidate to the diagnosed bench or Redis (None: nothing, it is another's).

    A titled horse (``Processing``) is tied only when its title names a worker this Redis knows (a worker hash,
    or the worker of a started job): a title naming another worker is another Redis's horse, or a SimpleWorker
    of another Redis running its job in-process, whatever its cwd. An untitled one (Frappe v15 has no
    setproctitle: worker and horse share one command line) must be in the bench or connected to the target Redis.
    """
    redis = snapshot.redis
    assert redis is not None
    own_title = parse_title(p)
    lines = []
    if own_title is not None:
        if own_title[0] not in {w.name for w in redis.workers} | {j.worker_name for j in redis.jobs if j.worker_name}:
            return None  # a worker this Redis does not know: another Redis's (or a SimpleWorker's own title)
        lines.append(f"its title names worker {own_title[0]} of this Redis")
    host = tree.key(p).host
    bench = (snapshot.bench_of(host) or "").rstrip("/")  # its own host's bench
    if bench and p.cwd and ((p.cwd + "/").startswith(bench + "/") or snapshot.in_bench(p, host)):
        lines.append(f"its working directory {p.cwd} is in the bench {bench}")
    if own_title is None:
        endpoint = _redis_endpoint(snapshot.target.redis_url)
        peer = next((c.raddr for c in p.connections if endpoint and _same_endpoint(c.raddr, endpoint)), None)
        if peer:
            lines.append(f"it is connected to the diagnosed Redis at {peer}")
    return lines or None


def _ours(candidates: list[ProcessInfo], ties: dict[ProcKey, list[str]], tree: _Tree,
          links: Links) -> tuple[list[ProcessInfo], dict[ProcKey, list[str]]]:
    """The candidates (each tied to the bench or Redis: :func:`_ties`) that are its orphaned horses, with the
    evidence: a titled one always; an untitled one when it was matched to a started job of this Redis whose
    worker is not alive here, or might be running one (it is then ``links.unmatched``)."""
    matched = {tree.key(jl.runner): jl for jl in links.jobs if jl.runner_role == "orphaned-horse" and jl.runner}
    waiting = _waiting(links.jobs, links.workers)
    out, evidence = [], {}
    for p in candidates:
        lines = list(ties[tree.key(p)])
        jl = matched.get(tree.key(p))
        if parse_title(p) is None and jl is None:
            could = [w for w in waiting if _could_run(p, w.job) and _same_host(tree, p, w)]
            if not could:
                continue
            links.unmatched.add(tree.key(p))
            lines.append(_unmatched_line(p, could))
        parent = tree.parent(p)
        if p.ppid == 1:
            why = "its parent is pid 1 (re-parented: the worker that forked it is gone)"
        elif parent is None:
            why = f"its parent {p.ppid} is not an RQ worker (it adopted it, as a subreaper does: the worker is gone)"
        else:
            why = f"its parent {p.ppid} (`{' '.join(parent.cmdline)[:80]}`) is not a live RQ worker"
        if jl is not None:
            how = "its title" if jl.matched_by == "title" else "its start time (the job's started_at)"
            lines.append(f"runs job {jl.job.job_id} of worker {jl.job.worker_name} (matched by {how})")
        out.append(p)
        evidence[tree.key(p)] = [why, *lines]
    return out, evidence


def _unmatched_line(p: ProcessInfo, waiting: list[JobLink]) -> str:
    """Why an untitled orphan matched to no job may still run one (the nearest waiting job by start time)."""
    jl = min(waiting, key=lambda j: _start_gap(p, j.job))
    gap = _start_gap(p, jl.job)
    when = f"it started {gap:.0f} s from" if gap != float("inf") else "its start cannot be compared with"
    return (f"weaker evidence: no title and not matched by start time ({when} the start of job {jl.job.job_id} of "
            f"gone worker {jl.job.worker_name}, window {ORPHAN_WINDOW:g} s; late on a loaded host), so it might be "
            "running that job")


def _redis_endpoint(url: str) -> tuple[set[str], int] | None:
    """Equivalent hosts and the port of a ``redis://`` / ``rediss://`` URL (None for a unix socket)."""
    found = redis_host_port(url)
    if found is None:
        return None
    host, port = found
    if host == "localhost" or _is_loopback(host):
        return {"127.0.0.1", "::1", "localhost"}, port
    return {host}, port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_endpoint(raddr: str, endpoint: tuple[set[str], int]) -> bool:
    """``ip:port`` / ``[ip]:port`` equals the endpoint (any loopback address counts as localhost)."""
    host, _, port = raddr.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) != endpoint[1]:
        return False
    return host in endpoint[0] or ("127.0.0.1" in endpoint[0] and _is_loopback(host))


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


def _link_jobs(jobs: list[JobInfo], wlinks: list[WorkerLink], orphans: list[ProcessInfo],
               tree: _Tree) -> list[JobLink]:
    out = []
    for job in jobs:
        wl, how = _find_worker(job, wlinks)
        jl = JobLink(job=job, matched_by=how)
        if wl is not None:
            jl.worker, jl.worker_process = wl.worker, wl.process
            if wl.worker.hostname:
                jl.location = "local" if wl.on_this_host else "remote"
            if how != "worker_name" and wl.process is not None:
                if wl.horse is not None:
                    jl.runner, jl.runner_role = wl.horse, "horse"
                elif _runs_in_process(wl):
                    jl.runner, jl.runner_role = wl.process, "worker"
        jl.pre_start = jl.runner_role == "horse" and job.status == "queued"
        out.append(jl)
    _match_orphans(out, wlinks, orphans, tree)
    return out


def _waiting(jlinks: list[JobLink], wlinks: list[WorkerLink]) -> list[JobLink]:
    """Runner-less jobs of workers not alive here (gone, or no hash left) and not on another host."""
    by_name = {wl.worker.name: wl for wl in wlinks}
    return [
        jl
        for jl in jlinks
        if jl.runner is None and jl.job.worker_name and jl.location != "remote"
        and (by_name.get(jl.job.worker_name) is None or by_name[jl.job.worker_name].process is None)
    ]


def _match_orphans(jlinks: list[JobLink], wlinks: list[WorkerLink], orphans: list[ProcessInfo],
                   tree: _Tree) -> None:
    """Give runner-less jobs of gone workers an orphaned horse: by title first, then by start time."""
    free = list(orphans)
    waiting = _waiting(jlinks, wlinks)
    for how in ("title", "started_at"):
        for jl in waiting:
            if jl.runner is not None:
                continue
            candidates = [p for p in free if _orphan_fits(p, jl.job, how) and _same_host(tree, p, jl)]
            if not candidates:
                continue
            best = min(candidates, key=lambda p: _start_gap(p, jl.job))
            free.remove(best)
            jl.runner, jl.runner_role, jl.matched_by, jl.location = best, "orphaned-horse", how, "local"


def _same_host(tree: _Tree, p: ProcessInfo, jl: JobLink) -> bool:
    """The orphan may run the job: its host is the one the job's worker hash names (any, when that is unknown)."""
    want = jl.worker.hostname if jl.worker else None
    if not want or want == tree.key(p).host:
        return True
    ident = p.identity
    return ident is not None and ident.foreign_ns and ident.uts_hostname == want


def _orphan_fits(p: ProcessInfo, job: JobInfo, how: str) -> bool:
    own_title = parse_title(p)
    if how == "title":
        return own_title is not None and own_title[0] == job.worker_name
    return own_title is None and _start_gap(p, job) <= ORPHAN_WINDOW


def _could_run(p: ProcessInfo, job: JobInfo) -> bool:
    """An untitled horse that started at most :data:`LOADED_WINDOW` before its job (and no later than the match
    window after it) might be running it, though not matched by start time."""
    anchors = [t for t in (job.started_at, job.execution_created_at) if t is not None]
    if p.create_time is None or not anchors:
        return True  # no start to compare: it cannot be ruled out
    return max(anchors) - LOADED_WINDOW <= p.create_time <= max(anchors) + ORPHAN_WINDOW


def _start_gap(p: ProcessInfo, job: JobInfo) -> float:
    """Seconds between a horse's start and its job's: ``started_at`` (set in the horse once it runs the job,
    late on a loaded host) or, rq >= 2, the execution's ``created_at`` (written just before the fork)."""
    anchors = [t for t in (job.started_at, job.execution_created_at) if t is not None]
    if p.create_time is None or not anchors:
        return float("inf")
    return min(abs(p.create_time - t) for t in anchors)
