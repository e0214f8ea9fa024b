"""``rqdoctor stack PID|JOB_ID``: the ``hangs`` view for one process or one job."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from rqdoctor.commands.common import exit_code, require_redis, snapshot_for
from rqdoctor.commands.hangs import Blocking, Interval, Locals, MinAge, Native, NoDb, Samples, collect_options, render
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    DbUrl,
    Format,
    FormatOpt,
    FromFile,
    KeyPrefix,
    NoRootDb,
    Output,
    RedisUrl,
    Timeout,
)
from rqdoctor.diagnose.context import DEFAULT_MIN_AGE_S
from rqdoctor.diagnose.link import ZOMBIE
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import ProcKey, Snapshot
from rqdoctor.views import activity_dict, job_rows, threads_of

Subject = Annotated[str, typer.Argument(
    help="A process id (HOST:PID for one host of a merged --from), or an RQ job id (as stored in Redis).")]
HOST_PID = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<pid>[0-9]+)$")


def what_it_is(diagnosis: Diagnosis, key: ProcKey) -> list[str]:
    """Plain statements of what a process that runs no job is: its command line, Python or not, any claim on it."""
    snapshot = diagnosis.context.snapshot
    pid = key.pid
    process, stacks = snapshot.process(key), snapshot.stacks_of(key)
    command = " ".join(process.cmdline) if process and process.cmdline else "?"
    if process is not None and process.status == ZOMBIE:
        return [f"pid {pid} is a zombie: it has exited, and its parent {process.ppid} has not reaped it; "
                "it runs nothing (no Python, no RQ job)"]
    if key in diagnosis.links.gone:
        return [f"pid {pid} exited during the scan (it ran `{command[:200]}`): nothing left to diagnose"]
    lines = [f"pid {pid} runs `{command[:200]}`"]
    worker = diagnosis.links.worker_for(key)
    if worker is not None:
        role = "work-horse" if worker.horse is not None and snapshot.key(worker.horse) == key else "process"
        lines.append(f"it is the {role} of RQ worker {worker.worker.name}, and runs no started job now")
    elif stacks is not None and stacks.error is not None and stacks.error.kind == "unsupported":
        lines.append("it runs no Python (py-spy finds no interpreter), so no RQ job either")
    else:
        lines.append("it is not an RQ worker or work-horse of the diagnosed Redis, and runs no RQ job")
    for wl in diagnosis.links.workers:
        if wl.claimed is not None and snapshot.key(wl.claimed) == key:
            lines.append(f"worker {wl.worker.name}'s hash names pid {pid} on this host, but this process is not "
                         f"that worker ({wl.problems[0] if wl.problems else 'identity not confirmed'})")
    return lines


def process_row(diagnosis: Diagnosis, key: ProcKey) -> dict[str, Any]:
    """A ``hangs`` row for a process that runs no job (a worker parent, any process)."""
    snapshot = diagnosis.context.snapshot
    pid = key.pid
    process = snapshot.process(key)
    worker = diagnosis.links.worker_for(key)
    return {
        "job_id": f"pid {pid}", "queue": "-", "site": None,
        "method": " ".join(process.cmdline)[:80] if process else None,
        "status": process.status if process else None, "running_for_s": None, "timeout_s": None,
        "worker": worker.worker.name if worker else None, "host": key.host, "location": "local",
        "pid": pid, "process_host": key.host, "runner_role": "worker" if worker else "process",
        "gone": key in diagnosis.links.gone, "notes": what_it_is(diagnosis, key),
        "cpu_percent": process.cpu_percent if process else None, "rss_bytes": process.rss if process else None,
        "activity": activity_dict(diagnosis.activities.get(key)), "blocker": None,
        "children": [{"pid": c.pid, "cmdline": c.cmdline, "cpu_percent": c.cpu_percent, "status": c.status}
                     for c in snapshot.processes if c.ppid == pid and snapshot.key(c).host == key.host],
        "threads": threads_of(diagnosis, key), "findings": [],
    }


def process_key(snapshot: Snapshot, pid: int, host: str | None) -> ProcKey:
    """The process ``pid`` (on ``host`` when given) names: this host's; in a merged snapshot, the one host that
    has that pid (several: the user must say which, ``HOST:PID``)."""
    hosts = [h.name for h in snapshot.hosts] or [snapshot.host]
    if host is not None:
        if host not in hosts:
            raise RqdoctorError(f"no host {host!r} in this snapshot (its hosts: {', '.join(hosts)})",
                                "give PID alone for this host, or HOST:PID with a host of the merged --from files")
        return ProcKey(host, pid)
    if not snapshot.hosts:
        return ProcKey(snapshot.host, pid)
    having = sorted({k.host for k in (snapshot.key(p) for p in snapshot.processes) if k.pid == pid}
                    | {s.host for s in snapshot.stacks if s.pid == pid and s.host})
    if len(having) > 1:
        raise RqdoctorError(f"pid {pid} is on several hosts: {', '.join(having)}",
                            f"say which: `rqdoctor stack {having[0]}:{pid} --from …`")
    return ProcKey(having[0] if having else snapshot.host, pid)


def command(subject: Subject, redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False,
            timeout: Timeout = 15.0, fmt: FormatOpt = Format.text, output: Output = None,
            from_file: FromFile = None, samples: Samples = 5, interval: Interval = 0.25, blocking: Blocking = False,
            native: Native = False, with_locals: Locals = False, min_age: MinAge = DEFAULT_MIN_AGE_S,
            db_url: DbUrl = None, no_db: NoDb = False,
            no_root_db: NoRootDb = False, key_prefix: KeyPrefix = None) -> None:
    """Show one process or one job: its live stack, what it waits on, and the fix."""
    options = collect_options(timeout, samples, interval, blocking, native, with_locals, not no_db)
    options.root_db = not no_root_db
    named = HOST_PID.match(subject)
    pid = int(subject) if subject.isdigit() else int(named["pid"]) if named else None
    if pid is not None and from_file is None:
        options.stack_pids = [pid]
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url, key_prefix=key_prefix)
    fatal = require_redis(snapshot, fmt)
    diagnosis = diagnose(snapshot, min_age_s=min_age)
    job_matches = [r for r in job_rows(diagnosis) if r["job_id"] == subject]
    key = None if pid is None or job_matches else process_key(snapshot, pid, named["host"] if named else None)
    rows = job_matches or [r for r in job_rows(diagnosis)
                           if key is not None and r["pid"] == key.pid and r["process_host"] == key.host]
    essential: tuple[str, ...] = ("redis", "stacks")
    if fatal is not None and key is None:
        raise fatal  # a job id cannot be looked up without Redis
    if not rows and key is not None:
        unread = any(e.probe == "processes" and e.kind == "timeout" for e in snapshot.errors)  # cut off: unknown
        stacks = snapshot.stacks_of(key)
        if not unread and snapshot.process(key) is None and not (stacks and stacks.samples):
            where = key.host if snapshot.hosts else f"this host ({snapshot.host})"
            raise RqdoctorError(f"no process {key.pid} on {where}",
                                "list running jobs and their pids with `rqdoctor hangs`")
        rows = [process_row(diagnosis, key)]
        if stacks is not None and stacks.error is not None and stacks.error.kind == "unsupported":
            essential = ("redis",)  # not Python: having no stack is the answer, not a failure
    if not rows:
        raise RqdoctorError(f"no running job {subject!r} in {snapshot.target.redis_url}",
                            "job ids are as stored in Redis (Frappe v15: site::id); `rqdoctor hangs` lists them")
    codes = {c for r in rows for c in r["findings"]}
    row = rows[0]
    diagnosis.findings = [f for f in diagnosis.findings
                          if f.code in codes and (f.job_id == row["job_id"] or (
                              f.pid == row["pid"] and f.host in (None, row["process_host"])))]
    render("stack", snapshot, diagnosis, rows, fmt, output, verbose=True, fatal=fatal)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=essential))
