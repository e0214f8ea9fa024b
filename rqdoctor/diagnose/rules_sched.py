"""RQD601-RQD608: the Frappe scheduler (``rqdoctor scheduler``): inactive sites, its process, skipped and failing
scheduled jobs, rq's cron schedulers.

Each verdict rests on what was read: a config key as written, a System Settings value, the flock attempt on
``config/scheduler_process``, Scheduled Job Type and Log rows. A site whose database was not read gets no DB verdict.
"""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose.advice import bench_cli, redis_cli
from rqdoctor.diagnose.context import Context
from rqdoctor.diagnose.findings import Hit, rule
from rqdoctor.diagnose.schedule import due, parse, site_now, skip_limit_s
from rqdoctor.model import HealthState, JobHash, SiteScheduler, Snapshot

DEFAULT_DORMANT_DAYS = 4
CRON_SCHEDULER_TTL_S = 120
"""rq's ``DEFAULT_CRON_SCHEDULER_TTL``: a cron scheduler heartbeats well within it."""
SCHED_CODES = frozenset({"RQD6", "RQD304", "RQD305", "RQD306", "RQD501"})
"""What ``rqdoctor scheduler`` reports: RQD6xx, plus the stuck scheduled-job ids, document locks, Start rows
and queues without a worker."""


def _health(ctx: Context) -> HealthState | None:
    return ctx.snapshot.health


def _flag(site: SiteScheduler, key: str) -> str | None:
    flag = next((f for f in site.flags if f.key == key and f.active), None)
    return f"{key} = {flag.value} in {flag.source}" if flag else None


@rule("RQD601", "warning", "Site in maintenance mode: the scheduler skips it")
def maintenance_mode(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    for site in health.sites if health else []:
        line = _flag(site, "maintenance_mode")
        if line is None:
            continue
        yield Hit(f"site {site.site}", evidence=[line, "Frappe's scheduler skips a site in maintenance mode "
                                                 "(is_scheduler_inactive): no scheduled job of it is enqueued"],
                  fix="Maintenance mode is meant for migrations. If none runs, turn it off (the command below).",
                  commands=[bench_cli(ctx.snapshot.target, "--site", site.site, "set-maintenance-mode", "off")],
                  data={"site": site.site})


@rule("RQD602", "warning", "Scheduler paused or disabled in the site config")
def paused_in_config(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    for site in health.sites if health else []:
        lines = [line for key in ("pause_scheduler", "disable_scheduler") if (line := _flag(site, key))]
        if not lines:
            continue
        commands = []
        if _flag(site, "pause_scheduler"):
            commands.append(bench_cli(ctx.snapshot.target, "--site", site.site, "scheduler", "resume"))
        if _flag(site, "disable_scheduler"):
            commands.append(bench_cli(ctx.snapshot.target, "--site", site.site, "set-config", "-p",
                                      "disable_scheduler", "0"))
        yield Hit(f"site {site.site}", evidence=[*lines, "Frappe's scheduler skips the site while either is true: no "
                                                 "scheduled job of it is enqueued"],
                  fix="Someone paused the scheduler (`bench scheduler pause`) or disabled it in the config. Resume it "
                      "(the commands below) unless that was meant.", commands=commands, data={"site": site.site})


@rule("RQD603", "warning", "Scheduler disabled in System Settings")
def disabled_in_settings(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    for site in health.sites if health else []:
        if not site.db_read or site.enable_scheduler is not False:
            continue
        yield Hit(f"site {site.site}", evidence=["System Settings enable_scheduler = 0 (tabSingles)",
                                                 "Frappe's scheduler skips a site whose scheduler is disabled"],
                  fix="Enable it (the command below; the same as ticking 'Enable Scheduler' in System Settings).",
                  commands=[bench_cli(ctx.snapshot.target, "--site", site.site, "scheduler", "enable")],
                  data={"site": site.site})


def dormant_for_s(site: SiteScheduler, snapshot: Snapshot) -> float | None:
    """Seconds since the site's last Activity Log row, when known."""
    now, last = site_now(site, snapshot.generated_at), parse(site.last_activity)
    return (now - last).total_seconds() if now is not None and last is not None else None


@rule("RQD604", "info", "Site is dormant: its scheduled jobs run only once a day")
def dormant_site(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    for site in health.sites if health else []:
        quiet = dormant_for_s(site, ctx.snapshot) if site.db_read else None
        days = site.dormant_days or DEFAULT_DORMANT_DAYS
        if quiet is None or quiet < days * 86400:
            continue
        yield Hit(f"site {site.site}", evidence=[
            f"the last Activity Log row was written {site.last_activity} ({quiet / 86400:.1f} days ago), more than "
            f"dormant_days = {days}" + ("" if site.dormant_days else " (Frappe's default)"),
            "Frappe v15 then enqueues scheduled jobs only once a day (v16 does so only on Frappe Cloud)"],
            fix="Expected on a site nobody uses. If its jobs must run on time, raise 'Run Jobs only Daily if Inactive "
                "For (Days)' in System Settings.", data={"site": site.site, "quiet_s": round(quiet)})


@rule("RQD605", "critical", "No scheduler process: nothing holds config/scheduler_process")
def no_scheduler_process(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    if health is None or health.lock is None or not health.processes_read or health.lock.state not in ("free",
                                                                                                        "missing"):
        return
    if health.processes:
        return  # a `frappe schedule` process runs (or may: its cwd was unreadable)
    if recent_run(ctx.snapshot, health) is not None:
        return  # scheduled jobs started lately: a scheduler enqueues them, elsewhere (another host or container)
    evidence = [f"{health.lock.path}: {health.lock.detail}",
                "no `frappe schedule` process runs in this bench (the process table was read)"]
    active = [s.site for s in health.sites if not any(f.active for f in s.flags) and s.enable_scheduler is not False]
    if active:
        evidence.append(f"site(s) whose scheduler would run: {', '.join(active[:5])}")
    yield Hit(f"scheduler of {ctx.snapshot.target.bench_path}", evidence=evidence,
              fix="No scheduled job of any site is enqueued while no scheduler runs. Start it: restart the bench's "
                  "supervisor program (first command) or `bench start` in development; then read "
                  "logs/scheduler.log and the system log for why it stopped (killed, out of memory).",
              commands=[f"sudo supervisorctl start {_program(ctx)}", "dmesg | grep -i -e oom -e killed"],
              data={"lock": health.lock.path, "state": health.lock.state})


RECENT_RUN_INTERVALS = 3
"""A scheduled job that started within this many ``scheduler_interval`` (the ``All`` frequency's period) shows a
scheduler at work."""


def recent_run(snapshot: Snapshot, health: HealthState) -> tuple[str, str, float] | None:
    """The newest run of a scheduled job, ``(site, job type, seconds ago)``, when one started within
    :data:`RECENT_RUN_INTERVALS` scheduler intervals (site clock; ``last_execution`` is set when a run starts)."""
    newest: tuple[str, str, float] | None = None
    for site in health.sites:
        now = site_now(site, snapshot.generated_at) if site.db_read else None
        for row in site.job_types if now is not None else ():
            last = parse(row.last_execution)
            if now is None or last is None:
                continue
            age = (now - last).total_seconds()
            if -60 <= age <= RECENT_RUN_INTERVALS * health.all_interval_s and (newest is None or age < newest[2]):
                newest = (site.site, row.name, max(age, 0.0))
    return newest


def _program(ctx: Context) -> str:
    bench = (ctx.snapshot.target.bench_path or "frappe-bench").rstrip("/").rsplit("/", 1)[-1]
    return f"{bench}-workers:{bench}-frappe-schedule"


def stuck_scheduled_id(ctx: Context, site: str, method: str) -> JobHash | None:
    """The scheduled-job hash of ``method`` on ``site`` that says queued or started, when the scan read one."""
    redis = ctx.snapshot.redis
    if redis is None or redis.job_scan is None:
        return None
    ids = {f"{site}::scheduled_job::{method}", f"{site}||scheduled_job||{method.replace(':', '|')}"}
    return next((j for j in redis.job_scan.jobs if j.job_id in ids and j.status in ("queued", "started")), None)


def _scheduler_runs(health: HealthState) -> bool:
    return health.lock is not None and health.lock.state == "held"


@rule("RQD606", "warning", "Scheduled job skipped: not run since an earlier due time")
def skipped_job(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    if health is None or not _scheduler_runs(health):
        return  # only a running scheduler can skip (RQD605 says when none runs)
    limit = skip_limit_s(health)
    for site in health.sites:
        now = site_now(site, ctx.snapshot.generated_at)
        if (not site.db_read or now is None or any(f.active for f in site.flags) or site.enable_scheduler is not True
                or (dormant_for_s(site, ctx.snapshot) or 0) >= (site.dormant_days or DEFAULT_DORMANT_DAYS) * 86400):
            continue  # inactive or dormant: RQD601-RQD604 say why nothing runs
        for row in site.job_types:
            when = None if row.stopped else due(row, health, now)
            if when is None or when.last is None or when.late_s <= limit:
                continue
            evidence = [f"Scheduled Job Type {row.name} ({row.frequency}, cron `{when.cron}`) last ran "
                        f"{when.last:%Y-%m-%d %H:%M:%S}; it was due {when.next_due:%Y-%m-%d %H:%M:%S}, "
                        f"{when.late_s:.0f} s ago (site clock), more than {limit} s ({limit // health.tick_s} "
                        "scheduler ticks)", f"the scheduler runs ({health.lock.detail if health.lock else ''})"]
            stuck = stuck_scheduled_id(ctx, site.site, row.method)
            fix = ("The scheduler enqueues a type only when its job id is not queued or started. Read "
                   "logs/scheduler.log for \"Skipped queueing\" lines.")
            commands = []
            if stuck is not None:
                evidence.append(f"the cause: rq:job:{stuck.job_id} says {stuck.status} (queue {stuck.origin or '?'}); "
                                f"the scheduler skips every run while it does (\"Skipped queueing {row.method} "
                                f"because it was found in queue for {site.site}\")")
                fix = ("Its job id is stuck: see RQD304 (zombie hash) or RQD501 (a queue nobody listens to) for it; "
                       "once it is gone the scheduler enqueues the type again.")
                key = f"{ctx.snapshot.target.key_prefix}:job:{stuck.job_id}"
                commands = [redis_cli(ctx.snapshot.target, "HGET", key, "status")]
            yield Hit(f"scheduled job {site.site}/{row.name}", evidence=evidence, fix=fix, commands=commands,
                      job_id=stuck.job_id if stuck else None,
                      data={"site": site.site, "method": row.method, "cron": when.cron,
                            "next_due": when.next_due.isoformat(sep=" "), "late_s": round(when.late_s)})


@rule("RQD607", "warning", "Scheduled job failing: Failed rows in its Scheduled Job Log")
def failing_job(ctx: Context) -> Iterator[Hit]:
    health = _health(ctx)
    for site in health.sites if health else []:
        for failure in site.failures if site.db_read else []:
            evidence = [f"{failure.failed} Failed row(s) of {failure.scheduled_job_type} in the last day (by the "
                        f"database clock), the newest at {failure.last_failed}"]
            if failure.last_line:
                evidence.append(f"its error: {failure.last_line}")
            yield Hit(f"scheduled job {site.site}/{failure.scheduled_job_type}", evidence=evidence,
                      fix="Open the newest Scheduled Job Log of this type (its Details hold the traceback) and fix "
                          "the cause; the next run shows whether it is gone.",
                      data={"site": site.site, "scheduled_job_type": failure.scheduled_job_type,
                            "failed": failure.failed})


@rule("RQD608", "warning", "rq cron scheduler silent: no heartbeat within its TTL")
def stale_cron_scheduler(ctx: Context) -> Iterator[Hit]:
    health, redis = _health(ctx), ctx.snapshot.redis
    if health is None or redis is None or not health.cron_read:
        return
    for cron in health.cron_schedulers:
        silent = redis.server_time - cron.last_heartbeat if cron.last_heartbeat is not None else None
        if silent is None or silent <= CRON_SCHEDULER_TTL_S:
            continue
        where = f"pid {cron.pid} on {cron.hostname}" if cron.pid and cron.hostname else "its host and pid unknown"
        zset = f"{ctx.snapshot.target.key_prefix}:cron_schedulers"
        evidence = [f"{zset} scores {cron.name} {silent:.0f} s ago, more than rq's "
                    f"{CRON_SCHEDULER_TTL_S} s TTL ({where})",
                    "its hash rq:cron_scheduler:" + cron.name + (" still exists" if cron.hash_exists else
                                                                " has expired")]
        if cron.jobs:
            evidence.append(f"it scheduled {len(cron.jobs)} cron job(s): " + ", ".join(
                j.get("func_name", "?") for j in cron.jobs[:5]))
        yield Hit(f"cron scheduler {cron.name}", evidence=evidence,
                  fix="The `rq cron` process died or hangs: no cron job it owns is enqueued. Restart it; rq drops "
                      "the stale entry itself on the next `CronScheduler.all()`.",
                  commands=[redis_cli(ctx.snapshot.target, "ZRANGE",
                                      f"{ctx.snapshot.target.key_prefix}:cron_schedulers", "0", "-1", "WITHSCORES")],
                  data={"name": cron.name, "silent_s": round(silent)})
