"""From the findings' remedies to an ordered, deduplicated list of steps (pure: no I/O, nothing read from text).

Signals come first (a stopped horse's job must land in failed before registries are tidied), then
the Redis moves, then ghost workers. A step whose remedy needs a flag that was not given, or that
cannot be re-verified at all (no pid and start time, another host, init or rqdoctor itself), is
kept in the plan as refused, with the reason, so the user sees it and the exit code says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rqdoctor.actions.identity import static_refusal
from rqdoctor.diagnose.findings import REMEDY_ACTIONS, Finding, Remedy

ACTION_ORDER = ("stop_horse", "stop_worker", "stop_orphan", "fail_started", "clear_job_hash", "prune_worker")
assert set(ACTION_ORDER) == set(REMEDY_ACTIONS)
SIGNAL_ACTIONS = frozenset({"stop_horse", "stop_worker", "stop_orphan"})
REQUIRED_FLAGS = {"stop_worker": "--kill-worker", "prune_worker": "--prune-ghosts"}
"""Flags an action always needs beyond ``--kill``, whatever its remedy says."""


@dataclass
class Step:
    """One thing to do, from one or more findings."""

    remedy: Remedy
    code: str
    subject: str
    refused: str | None = None
    """Why it will not be done (set at planning or, later, by re-verification)."""
    also: list[str] = field(default_factory=list)
    """Codes of other findings this step covers."""

    @property
    def action(self) -> str:
        return self.remedy.action


def build_plan(findings: list[Finding], flags: set[str], host: str) -> list[Step]:
    """Steps for every finding whose remedy is an action (others are advice only), in :data:`ACTION_ORDER`.

    ``flags`` are the options given beyond ``--kill`` (``--kill-worker``, ``--prune-ghosts``, ``--requeue``).
    """
    steps: dict[tuple[object, ...], Step] = {}
    for finding in findings:
        remedy = finding.remedy
        if remedy is None or remedy.action not in REMEDY_ACTIONS:
            continue
        key = step_key(remedy)
        if key in steps:
            steps[key].also.append(finding.code)
            continue
        steps[key] = Step(remedy, finding.code, finding.subject, refused=_refusal(remedy, flags, host))
    ordered = sorted(steps.values(), key=lambda s: ACTION_ORDER.index(s.action))
    return _drop_covered(ordered)


def step_key(remedy: Remedy) -> tuple[object, ...]:
    """What makes two remedies the same step (the same process, job entry or worker)."""
    if remedy.action == "prune_worker":
        return (remedy.action, remedy.worker)
    if remedy.action in SIGNAL_ACTIONS:
        return (remedy.action, remedy.host, remedy.pid, remedy.create_time)
    return (remedy.action, remedy.job_id, remedy.member)


def _refusal(remedy: Remedy, flags: set[str], host: str) -> str | None:
    for needed in (REQUIRED_FLAGS.get(remedy.action), remedy.needs):
        if needed and needed not in flags:
            return f"needs {needed}"
    if remedy.action in SIGNAL_ACTIONS:
        return static_refusal(remedy, host)
    if remedy.action == "fail_started" and not (remedy.job_id and remedy.queue and remedy.member):
        return "no job id, queue and started-registry member to move"
    if remedy.action == "clear_job_hash" and not remedy.job_id:
        return "no job id"
    if remedy.action == "prune_worker" and not remedy.worker:
        return "no worker name"
    return None


def _drop_covered(steps: list[Step]) -> list[Step]:
    """A job handled by a signal step needs no separate Redis step (the signal step verifies or moves it)."""
    handled = {s.remedy.job_id for s in steps if s.action in SIGNAL_ACTIONS and s.remedy.job_id and not s.refused}
    kept = []
    for step in steps:
        if step.action in ("fail_started", "clear_job_hash") and step.remedy.job_id in handled:
            owner = next(s for s in steps if s.action in SIGNAL_ACTIONS and s.remedy.job_id == step.remedy.job_id)
            owner.also.append(step.code)
            continue
        kept.append(step)
    return kept


def where(r: Remedy) -> str:
    """`` (container NAME (ID) pid N)`` for a process in a container, else empty."""
    if r.ns_pid is None and r.pid_ns is None:
        return ""
    short = f" ({r.container_id[:12]})" if r.container_id else ""
    return f" (container {r.container_name or '?'}{short} pid {r.ns_pid})"


def describe(step: Step, grace_s: float, requeue: bool) -> str:
    """One line: what will be done to what (``pid`` is the host pid; a container's name, id and pid follow it)."""
    r = step.remedy
    job = f" running job {r.job_id}" if r.job_id else ""
    if step.action == "stop_horse":
        return (f"stop work-horse pid {r.pid}{where(r)} of worker {r.worker}{job}: RQ's stop command, then SIGTERM "
                f"to its process group, SIGKILL after {grace_s:g} s; the job must end failed or stopped")
    if step.action == "stop_worker":
        return (f"stop worker pid {r.pid}{where(r)} ({r.worker}), which runs{job} itself: SIGTERM, "
                f"SIGKILL after {grace_s:g} s; then its started entry is moved to failed")
    if step.action == "stop_orphan":
        return (f"stop orphaned work-horse pid {r.pid}{where(r)}{job}: SIGTERM to its process group, "
                f"SIGKILL after {grace_s:g} s; then its started entry is moved to "
                f"{'its queue' if requeue else 'failed'}")
    if step.action == "fail_started":
        return (f"move job {r.job_id} from the started registry of {r.queue} to "
                f"{'its queue (requeue)' if requeue else 'failed'} (no process runs it)")
    if step.action == "clear_job_hash":
        return f"mark zombie job {r.job_id} failed (in no queue, registry or process), so its schedule runs again"
    return f"remove ghost worker hash {r.worker} (no process, no Redis connection)"
