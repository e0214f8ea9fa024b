"""What every rule reads: the snapshot, the job/process join and the stack activities."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from rqdoctor.diagnose.activity import Activity
from rqdoctor.diagnose.advice import on_host, on_host_command, process_ref
from rqdoctor.diagnose.dbjoin import LockGraph
from rqdoctor.diagnose.history import UsualDuration, compare_line, usual_durations
from rqdoctor.diagnose.link import JobLink, Links
from rqdoctor.model import ProcKey, Snapshot, WorkerInfo

DEFAULT_MIN_AGE_S = 10.0
"""Jobs younger than this are never called stalled (a short wait is normal)."""


def age(now: float, then: float | None) -> float | None:
    """Seconds from ``then`` to ``now``, or None."""
    return None if then is None else max(0.0, now - then)


@dataclass
class JobFacts:
    """One running job with what the rules need about it."""

    link: JobLink
    activity: Activity | None
    running_for_s: float | None
    timeout_s: int | None
    usual: UsualDuration | None = None
    """Recent finished runs of the same method, when there are any."""
    here: str | None = None
    """The host named without it (``Snapshot.own_host``): a process of another one is named with its host."""

    def identity(self) -> list[str]:
        """Evidence lines naming the job and its process."""
        job, runner = self.link.job, self.link.runner
        lines = [f"{job.method or job.description or '?'} on site {job.site or '?'}, queue {job.queue}"]
        if runner is not None:
            ident = runner.identity
            where = f" in {ident.label().removeprefix(f'pid {runner.pid} (').removesuffix(')')}" \
                if ident is not None and ident.foreign_ns else ""
            lines.append(f"pid {runner.pid} ({self.link.runner_role}){where}{on_host(runner, self.here)} of worker "
                         f"{job.worker_name or '?'}")
        return lines

    def history(self) -> list[str]:
        """The evidence line comparing this run with the method's recent runs (none without history)."""
        return [] if self.usual is None else [compare_line(self.usual, self.running_for_s)]

    def stop_advice(self) -> tuple[str, list[str]]:
        """How to stop this run by hand today, and the exact commands (printed, never executed)."""
        runner = self.link.runner
        if runner is None:
            return "Its process is not on this host; stop it where it runs.", []
        if self.link.gone:
            return f"Its process {runner.pid} exited during the scan: run rqdoctor again to see the job's state.", []
        group = runner.pgid or runner.pid
        if self.link.runner_role == "orphaned-horse":
            return (f"Its worker is gone: end the orphaned horse's process group, after checking that "
                    f"{process_ref(runner, self.here)} still runs this job; the job stays 'started' until a "
                    "registry cleanup fails it (AbandonedJobError).",
                    [on_host_command(runner, self.here, f"kill -TERM -{group}")])
        if self.link.runner_role == "worker":
            return (f"Stop the worker itself ({process_ref(runner, self.here)}): TERM twice (warm, then cold "
                    "shutdown); supervisor restarts it, and the job is failed by the next registry cleanup.",
                    [on_host_command(runner, self.here, f"kill -TERM {runner.pid}")])
        return (f"Kill the horse's process group, after checking that {process_ref(runner, self.here)} still runs this "
                "job; the worker then fails the job with 'waitpid returned 9' and takes the next one.",
                [on_host_command(runner, self.here, f"kill -KILL -{group}")])


@dataclass
class Context:
    """Inputs of the rules (no I/O happens past this point)."""

    snapshot: Snapshot
    links: Links
    activities: dict[ProcKey, Activity] = field(default_factory=dict)
    """Activity of each sampled pid."""
    min_age_s: float = DEFAULT_MIN_AGE_S
    graph: LockGraph = field(default_factory=LockGraph)
    """Database sessions, their roles and lock waits."""
    older_than_s: float | None = None
    """``stuck --older-than``: running jobs older than this are stuck too (None: not asked)."""

    @property
    def now(self) -> float:
        """The moment the snapshot describes (Redis server time when known)."""
        if self.snapshot.redis is not None:
            return self.snapshot.redis.server_time
        return self.snapshot.generated_at

    @cached_property
    def usual(self) -> dict[str, UsualDuration]:
        """Method -> statistics of its recent runs (empty when Redis could not be read)."""
        return usual_durations(self.snapshot.redis.history) if self.snapshot.redis else {}

    def redis_workers(self) -> list[WorkerInfo]:
        """Workers read from Redis (empty when Redis could not be read)."""
        return self.snapshot.redis.workers if self.snapshot.redis else []

    @property
    def here(self) -> str:
        """The host whose processes are named without it; empty when merged from several hosts (each is named)."""
        return self.snapshot.own_host

    def job_facts(self, include_gone: bool = False) -> list[JobFacts]:
        """Every started job with its activity, age and effective timeout.

        A job whose process exited during the scan (``JobLink.gone``) gets no verdict: it is left out unless
        ``include_gone`` (the job views), and then has no activity.
        """
        facts = []
        for link in self.links.jobs:
            if link.gone and not include_gone:
                continue
            job = link.job
            activity = self.activities.get(self.snapshot.key(link.runner)) if link.runner and not link.gone else None
            timeout = job.timeout
            if timeout is None:
                timeout = self.snapshot.target.queue_timeouts.get(job.queue.rsplit(":", 1)[-1])
            usual = self.usual.get(job.method) if job.method else None
            facts.append(JobFacts(link, activity, age(self.now, job.started_at), timeout, usual, self.here))
        return facts

    def long_running_jobs(self) -> list[JobFacts]:
        """Jobs running for at least ``min_age_s``."""
        return [f for f in self.job_facts() if f.running_for_s is not None and f.running_for_s >= self.min_age_s]

    def stalled_jobs(self) -> list[JobFacts]:
        """Long-running jobs whose stack did not move and which used no CPU."""
        return [f for f in self.long_running_jobs() if f.activity is not None and f.activity.progress == "blocked"]
