"""Carry out one planned step: re-verify, act, verify the effect; every signal and Redis change is audited.

Re-verification before every signal: the process is alive with the recorded start time, on this
host, not init/rqdoctor/its parent, not a registered worker (unless ``stop_worker`` with
``--kill-worker``), still the child of its recorded worker (a horse) or of none (an orphan), leads
its process group (a horse); and in Redis, read just now, the job is still ``started`` and still its
worker's current job (a horse or in-process job) or still in the started registry (an orphan). Redis
that cannot be read refuses the signal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from rqdoctor.actions import redis_moves
from rqdoctor.actions.audit import AuditLog
from rqdoctor.actions.identity import Verdict, verify_target, wait_gone
from rqdoctor.actions.plan import Step
from rqdoctor.actions.signals import STOP_COMMAND_WAIT_S, Sent, escalate
from rqdoctor.diagnose.findings import Remedy
from rqdoctor.rqkeys import Keys

OUTCOME_WAIT_S = 10.0
"""How long a live worker gets to record its dead horse's job as failed or stopped."""
POLL_S = 0.1
ENDED_OK = ("failed", "stopped")


FROZEN = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def frozen_reason(worker_pid: int | None) -> str:
    """Why the worker loop cannot answer RQ's stop command now (``''``: it may).

    A stopped worker would handle the command only once resumed, after rqdoctor's signals ended the
    horse: rq (1.15 to 3.0) then runs ``kill_horse`` with its horse pid already reset to 0, and
    ``os.killpg(os.getpgid(0))`` kills the worker's own process group. So no command is sent to it.
    """
    try:
        status = psutil.Process(worker_pid).status() if worker_pid else None
    except psutil.Error:
        return ""
    if status in FROZEN:
        return f"its worker (pid {worker_pid}) is {status}: it cannot answer, and would act on the command late"
    return ""


@dataclass
class Result:
    """What became of one step: ``done``, ``nothing`` (already so), ``refused`` or ``failed``."""

    step: Step
    result: str
    detail: str
    log: list[dict[str, Any]] = field(default_factory=list)
    """The audit lines written for it."""


@dataclass
class Actor:
    """The context every step is carried out in."""

    client: redis.Redis
    audit: AuditLog
    host: str
    kill_worker: bool
    requeue: bool
    grace_s: float
    versions: dict[str, str]
    """Worker name -> rq version (from the snapshot), to pick the stop command."""
    user: str = ""
    keys: Keys = field(default_factory=Keys)
    """RQ's key names under the snapshot's key prefix."""

    def run(self, step: Step) -> Result:
        """Carry out ``step`` (refused ones are only audited)."""
        result = Result(step, "refused", step.refused or "")
        if step.refused:
            self._log(result, "none", "refused", step.refused)
            return result
        handler: Callable[[Result], None] = getattr(self, f"_{step.action}")
        try:
            handler(result)
        except redis.RedisError as exc:
            self._finish(result, "failed", f"Redis failed mid-way ({type(exc).__name__}: {exc}): run again to "
                         "see what is left")
        return result

    # --- audit ------------------------------------------------------------------------

    def _log(self, result: Result, change: str, outcome: str, detail: str) -> None:
        r = result.step.remedy
        line = self.audit.write({
            "action": r.action, "finding": result.step.code, "subject": result.step.subject,
            "target": {"pid": r.pid, "pgid": r.pgid, "create_time": r.create_time, "host": r.host,
                       "worker": r.worker, "job_id": r.job_id, "execution_id": r.execution_id,
                       "queue": r.queue, "member": r.member},
            "evidence": r.reason, "change": change, "result": outcome, "detail": detail,
        })
        result.log.append(line)

    def _finish(self, result: Result, outcome: str, detail: str) -> None:
        result.result, result.detail = outcome, detail

    def _sent(self, result: Result) -> Callable[[Sent], None]:
        return lambda s: self._log(result, f"{s.signal} to {s.target}", s.result, s.detail)

    # --- checks -----------------------------------------------------------------------

    def _verify(self, remedy: Remedy) -> Verdict:
        """Process identity and the job's state in Redis, read now."""
        try:
            # worker hashes name a container's workers by its hostname and their pids in its namespace
            in_container = remedy.pid_ns is not None and bool(remedy.container_name)
            pids = redis_moves.worker_pids(self.client, remedy.container_name if in_container else self.host,
                                           k=self.keys)
            verdict = verify_target(remedy, self.host, pids, self.kill_worker)
            if not verdict.ok or not remedy.job_id:
                return verdict
            state = redis_moves.job_state(self.client, remedy, k=self.keys)
        except redis.RedisError as exc:
            return Verdict(False, f"Redis cannot be read ({type(exc).__name__}): cannot re-verify the job")
        if state.status != "started":
            return Verdict(False, f"job {remedy.job_id} is now {state.status or 'gone'} while its process still runs")
        if remedy.action == "stop_orphan":
            return verdict if state.in_started else Verdict(False, "its entry left the started registry")
        if not state.current:
            return Verdict(False, f"worker {remedy.worker} no longer runs job {remedy.job_id}")
        hash_pid = remedy.ns_pid if remedy.pid_ns is not None else remedy.pid
        if remedy.action == "stop_worker" and state.worker_pid not in (None, hash_pid):
            return Verdict(False, f"worker {remedy.worker} is now pid {state.worker_pid}, not {remedy.pid}")
        return verdict

    def _await_outcome(self, remedy: Remedy) -> redis_moves.JobState:
        end = time.monotonic() + OUTCOME_WAIT_S
        while True:
            state = redis_moves.job_state(self.client, remedy, k=self.keys)
            if state.status in ENDED_OK or time.monotonic() >= end:
                return state
            time.sleep(POLL_S)

    # --- the actions ------------------------------------------------------------------

    def _stop_horse(self, result: Result) -> None:
        r = result.step.remedy
        assert r.pid is not None and r.create_time is not None
        first = self._verify(r)
        if not first.ok:
            self._after_gone(result, first) if first.gone else self._refuse(result, first.reason)
            return
        frozen = frozen_reason(r.parent_pid)
        receivers = 0
        if frozen:
            self._log(result, "none (RQ's stop command skipped)", "skipped", frozen)
        else:
            receivers = redis_moves.publish_stop(self.client, r, self.versions.get(r.worker or ""), k=self.keys)
            self._log(result, f"PUBLISH rq:pubsub:{r.worker} stop command", "sent" if receivers else "unheard",
                      f"{receivers} subscriber(s) received it")
        if not (receivers and wait_gone(r.pid, r.create_time, STOP_COMMAND_WAIT_S)):
            ended = escalate(r.pid, r.create_time, True, self.grace_s, lambda: self._verify(r), self._sent(result))
            if ended != "gone":
                self._finish(result, ended, "the work-horse was not stopped (see the signals above)")
                return
        self._check_outcome(result)

    def _after_gone(self, result: Result, verdict: Verdict) -> None:
        """The process or job ended before anything was sent: say how the job ended."""
        r = result.step.remedy
        state = redis_moves.job_state(self.client, r, k=self.keys) if r.job_id else None
        if state is None or state.status in ENDED_OK:
            ended = f"job {state.status}, " if state else ""
            self._finish(result, "nothing", f"already ended: {ended}{verdict.reason}")
            self._log(result, "none (verification)", "nothing", result.detail)
        else:
            self._refuse(result, verdict.reason)

    def _refuse(self, result: Result, reason: str) -> None:
        self._log(result, "none", "refused", reason)
        self._finish(result, "refused", reason)

    def _check_outcome(self, result: Result) -> None:
        r = result.step.remedy
        if not r.job_id:
            self._finish(result, "done", "the work-horse is gone (no job id was known to verify its outcome)")
            self._log(result, "none (verification)", "done", result.detail)
            return
        state = self._await_outcome(r)
        if state.status == "stopped" or (state.status == "failed" and state.in_failed):
            where = "in rq:failed:" + (r.queue or "?") if state.in_failed else "stopped"
            self._finish(result, "done", f"job {r.job_id} ended {state.status} ({where}) and its horse is gone")
        else:
            self._finish(result, "failed", f"the horse is gone but job {r.job_id} is still "
                         f"{state.status or 'gone'} after {OUTCOME_WAIT_S:g} s: its worker did not record it")
        self._log(result, "none (verification)", result.result, result.detail)

    def _stop_orphan(self, result: Result) -> None:
        self._stop_then_move(result, group=True)

    def _stop_worker(self, result: Result) -> None:
        self._stop_then_move(result, group=False)

    def _stop_then_move(self, result: Result, group: bool) -> None:
        r = result.step.remedy
        assert r.pid is not None and r.create_time is not None
        first = self._verify(r)
        if not first.ok and not first.gone:
            self._refuse(result, first.reason)
            return
        if first.ok:
            ended = escalate(r.pid, r.create_time, group, self.grace_s, lambda: self._verify(r), self._sent(result))
            if ended != "gone":
                self._finish(result, ended, "the process was not stopped (see the signals above)")
                return
        if not r.job_id:
            outcome = "done" if first.ok else "nothing"
            self._finish(result, outcome, "the process is gone (no job was matched to it)" if first.ok
                         else f"nothing sent: {first.reason}")
            self._log(result, "none (verification)", outcome, result.detail)
            return
        state = redis_moves.job_state(self.client, r, k=self.keys)
        if state.status in ENDED_OK:
            self._finish(result, "done", f"the process is gone; job {r.job_id} ended {state.status}")
            self._log(result, "none (verification)", "done", result.detail)
            return
        self._move(result, f"{r.reason}; its process (pid {r.pid}) was stopped by rqdoctor")

    def _fail_started(self, result: Result) -> None:
        r = result.step.remedy
        state = redis_moves.job_state(self.client, r, k=self.keys)
        alive = (redis_moves.worker_alive(self.client, r.worker, self.host, k=self.keys)
                 if state.current and r.worker else "")
        if alive:
            self._refuse(result, f"worker {r.worker} names job {r.job_id} as its current job and {alive}")
            return
        self._move(result, r.reason)

    def _move(self, result: Result, reason: str) -> None:
        r = result.step.remedy
        if r.job_id and not (r.queue and r.member):
            found = redis_moves.find_started(self.client, r.job_id, k=self.keys)
            if found:
                r.queue, r.member = found
                r.execution_id = r.member[len(r.job_id) + 1:] or None
        if not (r.job_id and r.queue and r.member):
            status = redis_moves.job_state(self.client, r, k=self.keys).status if r.job_id else ""
            self._refuse(result, f"job {r.job_id} has no started-registry entry to move (status "
                         f"{status or 'gone'})" if r.job_id else "no job id")
            return
        outcome = redis_moves.move_started(self.client, r, reason, self.requeue, self.user, k=self.keys)
        self._apply(result, outcome)

    def _clear_job_hash(self, result: Result) -> None:
        r = result.step.remedy
        self._apply(result, redis_moves.fail_zombie(self.client, r, r.reason, self.user, k=self.keys))

    def _prune_worker(self, result: Result) -> None:
        self._apply(result, redis_moves.prune_worker(self.client, result.step.remedy, self.host, k=self.keys))

    def _apply(self, result: Result, outcome: redis_moves.Outcome) -> None:
        self._log(result, "; ".join(outcome.changes) or "none", outcome.result, outcome.detail)
        self._finish(result, outcome.result, outcome.detail)
