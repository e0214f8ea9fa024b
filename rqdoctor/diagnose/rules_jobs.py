"""RQD1xx: running jobs, judged from their stacks, CPU and timeouts."""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose import remedies
from rqdoctor.diagnose.activity import Activity, short_path
from rqdoctor.diagnose.advice import on_host, on_host_command, process_ref
from rqdoctor.diagnose.cleanup import expired_while_running
from rqdoctor.diagnose.context import Context, JobFacts, age
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.diagnose.history import FAR_MARGIN_S, FAR_RATIO, runs_far_longer, seconds
from rqdoctor.diagnose.rules_workers import BUSY_HEARTBEAT_LIMIT_S

NEAR_TIMEOUT_RATIO = 0.8
NETWORK_KINDS = {"http": "HTTP", "smtp": "SMTP", "imap": "IMAP", "socket": "network", "redis": "Redis"}
HARD_KILL_GRACE_S = 60
"""RQ's worker parent SIGKILLs its horse at timeout + 60 s."""


def _hit(facts: JobFacts, evidence: list[str], fix: str, stop: bool = True, **data: object) -> Hit:
    """A hit about one job; ``stop`` appends how to stop this run, with its commands."""
    job = facts.link.job
    runner = facts.link.runner
    commands: list[str] = []
    if stop:
        advice, commands = facts.stop_advice()
        fix = f"{fix} {advice}".strip()
    return Hit(f"job {job.job_id}", evidence=[*facts.identity(), *evidence, *facts.history()], fix=fix,
               commands=commands, job_id=job.job_id, pid=runner.pid if runner else None, worker=job.worker_name,
               data=dict(data), host=runner.key(facts.here).host if runner else None)


def _activity_line(activity: Activity | None) -> list[str]:
    if activity is None:
        return []
    line = f"doing: {activity.kind} — {activity.detail}"
    if activity.where is not None:
        line += f" (in your code at {short_path(activity.where.filename)}:{activity.where.line} {activity.where.name})"
    return [line]


def _progress_lines(activity: Activity) -> list[str]:
    """The progress verdict and the evidence it rests on."""
    return [f"progress: {activity.progress}", *activity.progress_evidence]


@rule("RQD101", "critical", "Job is running past its timeout")
def past_timeout(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.job_facts():
        timeout, running = facts.timeout_s, facts.running_for_s
        if timeout is None or timeout < 0 or running is None or running <= timeout:
            continue
        hit = _hit(facts, [f"running {running:.0f} s, timeout {timeout} s", *hard_kill_lines(ctx, facts),
                           *expired_while_running(ctx, facts.link), *_activity_line(facts.activity)],
                   "Make the blocking call time out (see the activity's finding), then stop this run.",
                   running_for_s=round(running, 1), timeout_s=timeout, hard_kill_at=hard_kill_at(facts))
        hit.remedy = remedies.for_job_runner(ctx.snapshot, facts.link, f"running {running:.0f} s past its "
                                             f"{timeout} s timeout")
        if hit.remedy is not None:
            hit.fix += " " + remedies.describe(hit.remedy)
        yield hit


def hard_kill_at(facts: JobFacts) -> float | None:
    """When RQ's worker parent SIGKILLs the horse: started_at + timeout + 60 s (None: no parent enforces it)."""
    job = facts.link.job
    if facts.link.runner_role in ("worker", "orphaned-horse") or job.started_at is None or facts.timeout_s is None:
        return None
    return job.started_at + facts.timeout_s + HARD_KILL_GRACE_S


def hard_kill_lines(ctx: Context, facts: JobFacts) -> list[str]:
    """Why RQ's hard kill at timeout + 60 s did not happen yet, and when (or whether) it will."""
    link, timeout, running = facts.link, facts.timeout_s or 0, facts.running_for_s or 0.0
    if link.runner_role == "worker":
        return ["it runs inside its worker process (SimpleWorker, or Frappe's NoFork pool worker): no parent "
                "enforces the hard kill at timeout + 60 s, so it never comes"]
    if link.runner_role == "orphaned-horse":
        return ["its worker is gone, so no parent enforces the hard kill at timeout + 60 s: it never comes"]
    lines = []
    runner = link.runner
    if runner is not None and runner.status == "stopped":
        lines.append("the process is stopped (state T): it runs no signal handler until it gets SIGCONT")
    heartbeat = age(ctx.now, link.worker.last_heartbeat) if link.worker is not None else None
    hung = heartbeat is not None and heartbeat > BUSY_HEARTBEAT_LIMIT_S
    due = running - timeout - HARD_KILL_GRACE_S
    if due > 0:
        lines.append(f"RQ's worker parent should have killed it {due:.0f} s ago (timeout + {HARD_KILL_GRACE_S} s)")
        if hung:
            lines.append(f"the worker's last heartbeat is {heartbeat:.0f} s old (it heartbeats every 30 s while "
                         "it monitors its horse): its monitor loop is hung, so the hard kill will not come")
        elif heartbeat is not None:
            lines.append(f"the worker heartbeats ({heartbeat:.0f} s ago) yet did not kill it: the timeout RQ "
                         "enforces is not the one shown (a custom worker class, or a timeout changed since)")
        return lines
    lines.append("SIGALRM (JobTimeoutException) did not stop it: Python runs the handler only between bytecodes, "
                 "so a blocking C call (socket read, lock, child wait) ignores it, or the code swallowed the exception")
    if hung:
        lines.append(f"RQ's parent would kill it in {-due:.0f} s, but the worker's last heartbeat is "
                     f"{heartbeat:.0f} s old: its monitor loop is hung, so the hard kill will likely not come")
    else:
        lines.append(f"RQ's worker parent kills it in {-due:.0f} s (at timeout + {HARD_KILL_GRACE_S} s)")
    return lines


@rule("RQD102", "warning", "Job is close to its timeout")
def near_timeout(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.job_facts():
        timeout, running = facts.timeout_s, facts.running_for_s
        if timeout is None or timeout <= 0 or running is None:
            continue
        if not NEAR_TIMEOUT_RATIO * timeout < running <= timeout:
            continue
        yield _hit(
            facts,
            [f"running {running:.0f} s of its {timeout} s timeout ({running / timeout:.0%})",
             *_activity_line(facts.activity)],
            "If it is progressing, let it finish and give this job a larger `timeout=` (or move it to the `long` "
            "queue, or a custom queue with its own timeout in common_site_config.json `workers`); chunk the work "
            "so each job stays well inside its timeout.",
            stop=False, running_for_s=round(running, 1), timeout_s=timeout,
        )


@rule("RQD103", "critical", "Network call without a timeout")
def network_without_timeout(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.stalled_jobs():
        a = facts.activity
        if a is None or a.kind not in NETWORK_KINDS:
            continue
        what = NETWORK_KINDS[a.kind]
        fixes = {
            "http": "pass `timeout=(connect, read)` to every requests/urllib3/urllib call (e.g. `timeout=(5, 60)`).",
            "smtp": "create SMTP connections with `timeout=` (Frappe: check the Email Account's server is reachable).",
            "imap": "create IMAP connections with `timeout=`.",
            "redis": "give the Redis client `socket_timeout=`.",
            "socket": "call `settimeout()` on the socket (or `socket.setdefaulttimeout()` for libraries that hide it).",
        }
        yield _hit(
            facts,
            [f"blocked reading from {a.peer or 'a network peer'} for the whole sample window",
             *_activity_line(a), *_progress_lines(a)],
            f"The {what} peer never answers and the call has no timeout, so it waits forever: {fixes[a.kind]}",
            peer=a.peer, kind=a.kind,
        )


@rule("RQD104", "warning", "Job is waiting on a child process")
def waiting_on_child(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.stalled_jobs():
        a = facts.activity
        if a is None or a.kind != "subprocess":
            continue
        child = next((p for p in facts.link.children if p.pid == a.child_pid), None)
        command = " ".join(child.cmdline) if child else "?"
        evidence = [f"waiting on child pid {a.child_pid}: `{command[:200]}`"]
        if child is not None and child.cpu_percent is not None:
            evidence.append(f"child CPU {child.cpu_percent:.0f} %, state {child.status}")
        fix = "Give the child a timeout (`subprocess.run(..., timeout=N)`) and kill it on expiry."
        if "wkhtmltopdf" in command:
            fix = ("wkhtmltopdf waits for CSS/images it fetches from the site URL and has no resource timeout: make "
                   "the site's `host_name` resolve and answer from this server, avoid external assets in print "
                   "formats. " + fix)
        yield _hit(facts, evidence, fix, child_pid=a.child_pid, child_cmdline=command)


@rule("RQD105", "critical", "Job is spinning in a CPU loop")
def cpu_loop(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.long_running_jobs():
        a = facts.activity
        if a is None or a.progress != "spinning":
            continue
        yield _hit(
            facts, [f"~{a.cpu_percent or 0:.0f} % CPU with the same code in every sample", *_activity_line(a),
                    *_progress_lines(a)],
            "Fix the loop's exit condition, or chunk the work (one `frappe.enqueue` per batch, commit per batch).",
        )


@rule("RQD106", "critical", "Job is waiting on a lock")
def lock_wait(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.stalled_jobs():
        a = facts.activity
        if a is None or not (a.kind == "lock" or (a.kind == "sleep" and a.polling)) or a.file_lock:  # RQD112
            continue
        if a.kind == "lock":
            fix = ("A thread lock that is never released (a deadlock between threads, or a lock held across "
                   "`fork()`): take locks in one global order and with `acquire(timeout=…)`.")
        else:
            fix = ("A poll loop waits for a lock key someone else holds (or left behind when a horse was killed): "
                   "find the holder; use `SET key token NX EX ttl` with a TTL longer than the job timeout, released "
                   "only by its owner, and give the wait a deadline.")
        yield _hit(facts, [*_activity_line(a), *_progress_lines(a)], fix)


@rule("RQD107", "critical", "Worker is busy but has no current job")
def busy_without_job(ctx: Context) -> Iterator[Hit]:
    gone = ctx.links.gone
    for link in ctx.links.workers:
        w = link.worker
        if w.state != "busy" or w.current_job or w.executions or link.location != "local" or link.process is None:
            continue
        if (w.version or "").startswith("3."):
            continue
        horse = link.horse if link.horse is not None and ctx.snapshot.key(link.horse) not in gone else None
        if link.horse is not None and horse is None:
            continue  # its horse exited during the scan: nothing left to judge
        runner = horse or link.process
        activity = ctx.activities.get(ctx.snapshot.key(runner))
        evidence = ["state busy, no current_job: the horse never reached prepare_job_execution",
                    f"worker process {process_ref(link.process, ctx.here)}"]
        if horse is not None:
            evidence.append(f"its work-horse {process_ref(horse, ctx.here)}, leading its own process group")
        fix = ("A lock inherited across fork() from a background thread (logging, Sentry, gRPC) deadlocks the "
               "horse before the job body runs. Avoid starting threads before the fork, or use a spawn-based "
               "worker.")
        if horse is not None:
            fix += (f" Kill the horse's process group ({process_ref(horse, ctx.here)}) to free the worker; the job is "
                    "still queued or started.")
        remedy = None
        if horse is not None:
            pre = next((j.job for j in ctx.links.jobs if j.runner is horse), None)
            remedy = remedies.for_busy_horse(ctx.snapshot, link.process, horse, w, pre,
                                             "busy worker with no current job: its horse never started the job")
            fix += " " + remedies.describe(remedy)
        yield Hit(f"worker {w.name}", evidence=[*evidence, *_activity_line(activity)], worker=w.name,
                  pid=runner.pid, host=ctx.snapshot.key(runner).host,
                  commands=[on_host_command(horse, ctx.here, f"kill -KILL -{horse.pgid or horse.pid}")]
                  if horse else [], fix=fix,
                  remedy=remedy)


@rule("RQD108", "warning", "SimpleWorker: the job blocks its worker")
def simple_worker_blocked(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.long_running_jobs():
        runner = facts.link.runner
        if facts.link.runner_role != "worker" or runner is None:
            continue
        yield _hit(
            facts,
            [f"the job runs inside the worker process itself ({process_ref(runner, ctx.here)}): no work-horse, no hard "
             "kill at timeout + 60 s, and the worker takes no other job meanwhile", *_activity_line(facts.activity)],
            "Use the forking Worker for jobs that may hang, or make the job's blocking calls time out. "
            "Stopping this run stops the worker itself.",
        )


@rule("RQD109", "warning", "No progress: the same stack in every sample, no CPU")
def no_progress(ctx: Context) -> Iterator[Hit]:
    covered = {"http", "smtp", "imap", "socket", "redis", "subprocess", "lock", "db_lock_wait"}
    for facts in ctx.stalled_jobs():
        a = facts.activity
        if a is None or a.kind in covered or (a.kind == "sleep" and a.polling):
            continue
        if a.kind == "sleep":
            what = f"sleeping {a.sleep_s:g} s in one sleep call" if a.sleep_s is not None else "sleeping in one call"
            fix = ("The job sleeps and does nothing else: if it should be doing work, find why it sleeps this long "
                   "(a retry back-off, a wait with no end) at the frame named above.")
        else:
            what = f"{a.samples} samples, identical stack, ~0 CPU" if a.samples > 1 else "one call, ~0 CPU"
            fix = "Look at the frame named above: a wait with no end. If the job should be doing work, stop it."
        yield _hit(facts, [what, *_activity_line(a), *_progress_lines(a)], fix)


@rule("RQD110", "warning", "Orphaned work-horse: its worker is gone")
def orphaned_horse(ctx: Context) -> Iterator[Hit]:
    for process in ctx.links.orphans:
        key = ctx.snapshot.key(process)
        if key in ctx.links.gone:
            continue  # it exited during the scan
        job = ctx.links.job_for(key)
        evidence = [f"{process_ref(process, ctx.here)} is an RQ work-horse with no live worker",
                    *ctx.links.orphan_evidence.get(key, [])]
        if job is not None:
            evidence += expired_while_running(ctx, job)
        remedy = None if key in ctx.links.unmatched else remedies.for_orphan(
            ctx.snapshot, ctx.links, process, "orphaned work-horse: its worker is gone")
        yield Hit(
            f"process {process.pid}{on_host(process, ctx.here)}",
            evidence=evidence,
            pid=process.pid, host=key.host, job_id=job.job.job_id if job else None,
            worker=job.job.worker_name if job else None,
            commands=[on_host_command(process, ctx.here, f"kill -TERM -{process.pgid or process.pid}")],
            fix="Nobody heartbeats or times out this job; when it finishes it may re-create a ghost worker hash "
                f"(RQD202). If it is stuck, end its process group ({process_ref(process, ctx.here)}), then check the "
                "job's status. " + (remedies.describe(remedy) if remedy else "rqdoctor offers no --kill for it: it "
                               "could not tie it to a job by title or start time, so check it is this job's horse "
                               "first."),
            remedy=remedy,
        )


@rule("RQD111", "warning", "Job runs far longer than its usual runs")
def far_longer_than_usual(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.job_facts():
        usual, running = facts.usual, facts.running_for_s
        if usual is None or running is None or not runs_far_longer(usual, running):
            continue
        yield _hit(
            facts,
            [f"past max({FAR_RATIO:g} x p95, p95 + {FAR_MARGIN_S:g} s) = {seconds(usual.far_past())} of its usual "
             "runs", *_activity_line(facts.activity)],
            "Slow or hung: this run is well outside what the same method took recently. Read what it is doing "
            "(the activity and stack above, and its other findings): if it waits on something that never answers, "
            "follow that finding; if it is working, its input is larger than usual or something it depends on is "
            "slower, so let it finish and look at why.",
            stop=False, running_for_s=round(running, 1), usual_p95_s=usual.p95_s, usual_runs=usual.runs,
        )


@rule("RQD113", "info", "Job is sleeping")
def sleeping(ctx: Context) -> Iterator[Hit]:
    for facts in ctx.long_running_jobs():
        a = facts.activity
        if a is None or a.progress != "sleeping":
            continue
        length = f" {a.sleep_s:g} s at a time" if a.sleep_s is not None else ""
        yield _hit(
            facts, [f"sleeping{length}: not a lock wait and not a hang by itself", *_activity_line(a),
                    *_progress_lines(a)],
            "Nothing to stop: a loop that sleeps between steps (or a sleep rqdoctor cannot prove is one long call) "
            "is not stuck. If the job should finish sooner, look at why it sleeps at the frame named above.",
            stop=False,
        )
