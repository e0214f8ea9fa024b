"""Remedies as data (pure): what ``stuck --kill`` may do about a finding, with the identity to re-verify.

Each builder takes the join (:mod:`rqdoctor.diagnose.link`) and returns a :class:`Remedy` carrying the
full identity of its target as the snapshot saw it: host, pid, process group, start time, the parent
worker it must still be a child of, the job, its execution and the started-registry member exactly as
stored. :func:`describe` renders the one sentence of fix prose that says what ``--kill`` would do.
"""

from __future__ import annotations

from rqdoctor.diagnose.findings import Finding, Remedy
from rqdoctor.diagnose.link import JobLink, Links
from rqdoctor.model import JobInfo, ProcessInfo, Snapshot, WorkerInfo


def member(job: JobInfo) -> str | None:
    """The started-registry member as stored (``job_id`` or ``job_id:execution_id``); None when not in it."""
    if job.registry_expires_at is None:
        return None
    return f"{job.job_id}:{job.execution_id}" if job.execution_id else job.job_id


def _job_fields(job: JobInfo | None) -> dict[str, str | None]:
    if job is None:
        return {}
    return {"job_id": job.job_id, "execution_id": job.execution_id, "queue": job.queue or None,
            "member": member(job)}


def _process_fields(host: str, p: ProcessInfo) -> dict[str, object]:
    """Host pid identity, plus the namespace identity of a process in a container (re-verified too)."""
    fields: dict[str, object] = {"host": p.key(host).host, "pid": p.pid, "pgid": p.pgid, "create_time": p.create_time}
    ident = p.identity
    if ident is not None and ident.foreign_ns:
        fields.update(ns_pid=ident.ns_pid, pid_ns=ident.pid_ns, container_id=ident.container_id,
                      container_name=ident.container_name)
    return fields


def for_job_runner(snapshot: Snapshot, jl: JobLink, reason: str) -> Remedy | None:
    """Stop the process running a job: its horse, its worker (SimpleWorker/NoFork) or an orphaned horse.

    None when no live local process was matched to the job (nothing this host can stop).
    """
    runner = jl.runner
    if runner is None or jl.gone or jl.location != "local":
        return None
    fields = {**_process_fields(snapshot.host, runner), **_job_fields(jl.job),
              "worker": jl.worker.name if jl.worker else jl.job.worker_name}
    if jl.runner_role == "horse" and jl.worker_process is not None:
        return Remedy("stop_horse", reason, parent_pid=jl.worker_process.pid,
                      parent_create_time=jl.worker_process.create_time, expected="failed", **fields)  # type: ignore[arg-type]
    if jl.runner_role == "worker":
        return Remedy("stop_worker", reason, expected="failed", needs="--kill-worker", **fields)  # type: ignore[arg-type]
    if jl.runner_role == "orphaned-horse":
        return Remedy("stop_orphan", reason, expected="failed", **fields)  # type: ignore[arg-type]
    return None


def for_orphan(snapshot: Snapshot, links: Links, p: ProcessInfo, reason: str) -> Remedy:
    """End an orphaned horse's group; its job (when matched) is then failed from its started entry."""
    jl = links.job_for(links.key(p))
    job = jl.job if jl is not None else None
    return Remedy("stop_orphan", reason, worker=job.worker_name if job else None, expected="failed",
                  **_process_fields(snapshot.host, p), **_job_fields(job))  # type: ignore[arg-type]


def for_busy_horse(snapshot: Snapshot, worker_process: ProcessInfo, horse: ProcessInfo, worker: WorkerInfo,
                   job: JobInfo | None, reason: str) -> Remedy:
    """Kill a horse stuck before its job started (busy worker, no current job); the worker fails the job."""
    return Remedy("stop_horse", reason, parent_pid=worker_process.pid, parent_create_time=worker_process.create_time,
                  worker=worker.name, expected="failed", **_process_fields(snapshot.host, horse),
                  **_job_fields(job))  # type: ignore[arg-type]


def unrun_blocker(snapshot: Snapshot, links: Links, jl: JobLink) -> str | None:
    """Why a started entry with no runner cannot be failed from here, or None when it can.

    It can only when its worker is known to be on this host and dead (its pid missing or a zombie, or it
    recorded its death: positive evidence that no worker loop runs it; a pid held by another process is
    not, the worker may live in a container sharing the hostname), the process table was read, and no
    orphaned horse of this Redis is left unmatched (which might be running it).
    """
    if jl.runner is not None:
        return "a process runs it"
    w = jl.worker
    if w is None:
        return ("its worker hash is gone, so the host that ran it is unknown: rqdoctor cannot check that no "
                "process runs it")
    wl = next((x for x in links.workers if x.worker is w), None)
    if wl is not None and wl.container:
        return (f"its worker ran in container {wl.container} on this host, and only that container's worker "
                "processes were read: check in the container that no process runs it")
    if w.hostname != snapshot.host:
        return f"its worker ran on host {w.hostname or '?'}, not here: check there that no process runs it"
    if wl is not None and wl.location == "not-found":
        return (f"pid {w.pid} here is another process, so the worker may run in a container sharing this "
                "hostname: check there")
    if wl is None or wl.location != "dead":
        return "its worker is not known to be dead"
    if any(e.probe == "processes" and e.kind not in ("vanished", "permission", "truncated") for e in snapshot.errors):
        return "the process table could not be read"
    matched = {links.key(j.runner) for j in links.jobs if j.runner is not None}
    loose = [p for p in links.orphans if links.key(p) not in matched and links.key(p) not in links.gone]
    if loose:
        return (f"an orphaned horse pid {loose[0].pid} of this bench or Redis is not matched to any job and "
                "might be running it")
    return None


def fail_started(snapshot: Snapshot, jl: JobLink, reason: str) -> Remedy:
    """Move a started entry no process runs to failed (``--requeue``: back to its queue)."""
    w = jl.worker
    return Remedy("fail_started", reason, host=snapshot.host, worker=w.name if w else jl.job.worker_name,
                  parent_pid=None, expected="failed", **_job_fields(jl.job))  # type: ignore[arg-type]


def prune_worker(w: WorkerInfo, reason: str) -> Remedy:
    """Remove a ghost worker hash and its worker-set member."""
    return Remedy("prune_worker", reason, worker=w.name, member=w.key, expected="absent", needs="--prune-ghosts")


def clear_job_hash(job_id: str, queue: str | None, reason: str) -> Remedy:
    """Mark a zombie job hash (queued/started in no queue, registry or process) failed."""
    return Remedy("clear_job_hash", reason, job_id=job_id, queue=queue, expected="failed")


def describe(remedy: Remedy) -> str:
    """One sentence of fix prose rendered from the remedy: what ``rqdoctor stuck --kill`` would do."""
    needs = f" {remedy.needs}" if remedy.needs else ""
    group = remedy.pgid or remedy.pid
    what = {
        "stop_horse": f"sends RQ's stop command, then TERM, then KILL to process group {group}, after checking "
                      f"that pid {remedy.pid} still has the same start time and is still a child of worker pid "
                      f"{remedy.parent_pid}",
        "stop_orphan": f"sends TERM, then KILL, to process group {group} after checking pid {remedy.pid}'s start "
                       "time, then moves its started entry to failed",
        "stop_worker": f"stops worker process {remedy.pid} itself (TERM, then KILL), after checking its start time",
        "fail_started": f"moves started entry {remedy.member or remedy.job_id} of queue {remedy.queue} to failed "
                        "(with --requeue: back to its queue), after checking again that no process runs it",
        "prune_worker": f"deletes the ghost hash {remedy.member} and its rq:workers member, after checking again "
                        "that it has no pid, no birth, no TTL and no Redis connection",
        "clear_job_hash": f"marks job {remedy.job_id} failed, after checking again that no queue, registry or "
                          "process holds it",
    }.get(remedy.action)
    if what is None:
        return ""
    after = {"failed": "the job ends failed", "absent": "the key is gone"}.get(remedy.expected, "")
    return f"`rqdoctor stuck --kill{needs}` {what}" + (f"; {after}." if after else ".")


def distinct(findings: list[Finding]) -> list[tuple[Remedy, list[Finding]]]:
    """Each distinct remedy once, with the findings that carry it (a stopped horse past its timeout is both
    RQD101 and RQD302, with one target), in the findings' order."""
    out: dict[tuple[object, ...], tuple[Remedy, list[Finding]]] = {}
    for f in findings:
        r = f.remedy
        if r is None:
            continue
        key = (r.action, r.host, r.pid, r.create_time, r.worker if r.action == "prune_worker" else None,
               r.job_id, r.member)
        out.setdefault(key, (r, []))[1].append(f)
    return list(out.values())
