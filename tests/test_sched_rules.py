"""RQD601-RQD615 (scheduler and bench) on the recorded Frappe 15.54.1 bench, its health part written by hand the
way the probes write it (a fire and a near miss each), and the scheduler arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest

from rqdoctor.diagnose.schedule import due, site_now
from rqdoctor.model import (
    ConfigFlag,
    CronSchedulerInfo,
    FailedJob,
    FileLock,
    HealthState,
    JobHash,
    JobScan,
    ProbeError,
    ProcessInfo,
    ScheduledJobTypeRow,
    SchedulerLock,
    SiteScheduler,
    Snapshot,
)
from tests.test_catalogue import LONG_WORKER, SHORT_WORKER, findings, now, only, process, recorded, worker

pytestmark = pytest.mark.unit

SITE = "diag.localhost"
BENCH = "/home/frappe/frappe-bench"
LOCK = f"{BENCH}/config/scheduler_process"
SCHEDULE = ProcessInfo(pid=18600, cmdline=[f"{BENCH}/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe",
                                           "schedule"], cwd=f"{BENCH}/sites")
HELD = SchedulerLock(LOCK, "held", "/proc/locks names its holder", [FileLock(18600, "FLOCK", "WRITE")])
FREE = SchedulerLock(LOCK, "free", "a non-blocking flock attempt succeeded (released at once): no process holds it")


def site(**kw: object) -> SiteScheduler:
    """The recorded site, its database read: scheduler enabled, UTC, active a minute ago."""
    base: dict[str, object] = {"db_read": True, "enable_scheduler": True, "time_zone": "UTC",
                               "last_activity": "2026-11-29 13:22:00", "db_now": "2026-11-29 13:23:26"}
    return SiteScheduler(SITE, **{**base, **kw})  # type: ignore[arg-type]


def bench(*sites: SiteScheduler, lock: SchedulerLock = HELD, running: bool = True, **kw: object) -> Snapshot:
    """The recorded bench with a scheduler whose lock and process are as given."""
    snapshot = recorded()
    snapshot.health = HealthState(lock=lock, processes=[SCHEDULE] if running else [], processes_read=True,
                                  sites=list(sites or (site(),)), **kw)  # type: ignore[arg-type]
    return snapshot


def codes(snapshot: Snapshot) -> set[str]:
    from rqdoctor.diagnose.run import diagnose

    return {f.code for f in diagnose(snapshot).findings if f.code.startswith("RQD6")}


def test_the_healthy_scheduler_has_no_rqd6_finding() -> None:
    assert codes(bench()) == set()
    assert codes(recorded()) == set()  # nothing read: nothing concluded


# --- RQD601-RQD604: inactive sites -----------------------------------------------------------------


def test_rqd601_fires_maintenance_mode_in_the_site_config() -> None:
    flag = ConfigFlag("maintenance_mode", "1", f"{BENCH}/sites/{SITE}/site_config.json", True)
    finding = only(bench(site(flags=[flag])), "RQD601")
    assert (finding.severity, finding.subject) == ("warning", f"site {SITE}")
    assert finding.evidence[0] == f"maintenance_mode = 1 in {BENCH}/sites/{SITE}/site_config.json"
    assert finding.commands == [f"cd {BENCH} && bench --site {SITE} set-maintenance-mode off"]


def test_rqd601_near_miss_maintenance_mode_zero() -> None:
    flag = ConfigFlag("maintenance_mode", "0", f"{BENCH}/sites/{SITE}/site_config.json", False)
    assert findings(bench(site(flags=[flag])), "RQD601") == []


def test_rqd602_fires_pause_scheduler_true() -> None:
    flag = ConfigFlag("pause_scheduler", "true", f"{BENCH}/sites/common_site_config.json", True)
    finding = only(bench(site(flags=[flag])), "RQD602")
    assert finding.evidence[0] == f"pause_scheduler = true in {BENCH}/sites/common_site_config.json"
    assert finding.commands == [f"cd {BENCH} && bench --site {SITE} scheduler resume"]


def test_rqd602_near_miss_pause_scheduler_false() -> None:
    flag = ConfigFlag("pause_scheduler", "false", f"{BENCH}/sites/{SITE}/site_config.json", False)
    assert findings(bench(site(flags=[flag])), "RQD602") == []


def test_rqd603_fires_enable_scheduler_zero() -> None:
    finding = only(bench(site(enable_scheduler=False)), "RQD603")
    assert finding.evidence[0] == "System Settings enable_scheduler = 0 (tabSingles)"
    assert finding.commands == [f"cd {BENCH} && bench --site {SITE} scheduler enable"]


def test_rqd603_near_miss_database_not_read() -> None:
    # the same value, but the site's database could not be read: no verdict
    assert findings(bench(site(enable_scheduler=False, db_read=False)), "RQD603") == []


def test_rqd604_fires_no_activity_for_five_days() -> None:
    finding = only(bench(site(last_activity="2026-11-24 13:00:00")), "RQD604")
    assert finding.severity == "info"
    assert "more than dormant_days = 4 (Frappe's default)" in finding.evidence[0]


def test_rqd604_near_miss_three_days_quiet() -> None:
    assert findings(bench(site(last_activity="2026-11-26 14:00:00")), "RQD604") == []


# --- RQD605: the scheduler process ----------------------------------------------------------------


def test_rqd605_fires_lock_free_and_no_schedule_process() -> None:
    finding = only(bench(lock=FREE, running=False), "RQD605")
    assert (finding.severity, finding.subject) == ("critical", f"scheduler of {BENCH}")
    assert finding.evidence[0] == f"{LOCK}: {FREE.detail}"
    assert finding.evidence[2] == f"site(s) whose scheduler would run: {SITE}"
    assert finding.commands[0] == "sudo supervisorctl start frappe-bench-workers:frappe-bench-frappe-schedule"


def test_rqd605_near_miss_lock_held() -> None:
    assert findings(bench(lock=HELD, running=False), "RQD605") == []


def test_rqd605_near_miss_lock_not_readable() -> None:
    assert findings(bench(lock=SchedulerLock(LOCK, "unreadable", "cannot open"), running=False), "RQD605") == []


def _ran(ago_s: float, frequency: str = "All") -> SiteScheduler:
    """The site, one job type of which started ``ago_s`` seconds before the snapshot (site clock)."""
    started = site_now(site(), recorded().generated_at) - dt.timedelta(seconds=ago_s)  # type: ignore[operator]
    return site(job_types=[ScheduledJobTypeRow("email_queue.flush", "frappe.email.queue.flush", frequency, None,
                                               f"{started:%Y-%m-%d %H:%M:%S}")])


def test_rqd605_near_miss_a_scheduled_job_started_lately_so_a_scheduler_runs_elsewhere() -> None:
    # a worker-only host or container of a bench whose scheduler runs on another one: no lock, no process here
    missing = SchedulerLock(LOCK, "missing", "no such file")
    snapshot = bench(_ran(180), lock=missing, running=False)
    assert findings(snapshot, "RQD605") == []
    from rqdoctor.diagnose.run import diagnose
    from rqdoctor.render.scheduler import process_blocks, scheduler_view

    view = scheduler_view(diagnose(snapshot))
    assert view["recent_run"] == {"site": SITE, "job_type": "email_queue.flush", "age_s": 180}
    [items] = process_blocks(view)
    assert "a scheduler runs, elsewhere (another host or container)" in str(items)


def test_rqd605_fires_when_the_newest_run_is_older_than_three_intervals() -> None:
    # scheduler_interval 240 s: the All types start every 4 min while a scheduler runs; 13 min is too long
    finding = only(bench(_ran(13 * 60), lock=FREE, running=False), "RQD605")
    assert finding.severity == "critical"


# --- RQD606: skipped scheduled jobs ---------------------------------------------------------------

DAILY = "frappe.email.doctype.auto_email_report.auto_email_report.send_daily"


def daily(last: str) -> SiteScheduler:
    return site(job_types=[ScheduledJobTypeRow("auto_email_report.send_daily", DAILY, "Daily", None, last)])


def test_rqd606_fires_daily_job_not_run_for_two_days_with_its_stuck_id_as_the_cause() -> None:
    snapshot = bench(daily("2026-11-27 00:00:05"))
    assert snapshot.redis is not None
    stuck_id = f"{SITE}::scheduled_job::{DAILY}"
    snapshot.redis.job_scan = JobScan(complete=True, jobs=[JobHash(stuck_id, "queued", "home-frappe-frappe-bench:"
                                                                   "default", checked=True, direct=True)])
    finding = only(snapshot, "RQD606")
    assert finding.subject == f"scheduled job {SITE}/auto_email_report.send_daily"
    assert finding.evidence[0].startswith("Scheduled Job Type auto_email_report.send_daily (Daily, cron `0 0 * * *`) "
                                          "last ran 2026-11-27 00:00:05; it was due 2026-11-28 00:00:00, ")
    assert f"rq:job:{stuck_id} says queued" in finding.evidence[2] and "Skipped queueing" in finding.evidence[2]
    assert finding.job_id == stuck_id


def test_rqd606_near_miss_ran_at_midnight() -> None:
    assert findings(bench(daily("2026-11-29 00:00:04")), "RQD606") == []


def test_rqd606_near_miss_scheduler_not_running() -> None:
    # every job is late when no scheduler runs: RQD605 says so, RQD606 stays silent
    snapshot = bench(daily("2026-11-27 00:00:05"), lock=FREE, running=False)
    assert findings(snapshot, "RQD606") == [] and len(findings(snapshot, "RQD605")) == 1


def test_next_due_of_a_cron_entry_and_of_all() -> None:
    health = HealthState(all_interval_s=240)
    now = dt.datetime(2026, 11, 29, 13, 23, 26)
    cron = due(ScheduledJobTypeRow("x", "m", "Cron", "15 18 * * *", "2026-11-29 10:00:00"), health, now)
    assert cron is not None and cron.next_due == dt.datetime(2026, 11, 29, 18, 15) and cron.late_s == 0
    every = due(ScheduledJobTypeRow("y", "m", "All", None, "2026-11-29 13:20:00"), health, now)
    assert every is not None and every.cron == "*/4 * * * *" and every.next_due == dt.datetime(2026, 11, 29, 13, 24)


def test_site_clock_in_its_time_zone() -> None:
    ist = site(time_zone="Asia/Kolkata")
    assert site_now(ist, 1795958606.0) == dt.datetime(2026, 11, 29, 18, 53, 26)


# --- RQD607-RQD608 ----------------------------------------------------------------------------------


def test_rqd607_fires_failed_log_rows_with_their_error() -> None:
    from rqdoctor.model import JobLogFailures

    failing = site(failures=[JobLogFailures("auto_repeat.make_auto_repeat_entry", 3, "2026-11-29 13:00:00",
                                            "frappe.exceptions.ValidationError: Invalid date")])
    finding = only(bench(failing), "RQD607")
    assert finding.subject == f"scheduled job {SITE}/auto_repeat.make_auto_repeat_entry"
    assert finding.evidence[1] == "its error: frappe.exceptions.ValidationError: Invalid date"


def test_rqd607_near_miss_no_failed_row() -> None:
    assert findings(bench(site(failures=[])), "RQD607") == []


def cron_scheduler(silent_s: float) -> Snapshot:
    snapshot = bench()
    assert snapshot.health is not None
    snapshot.health.cron_read = True
    jobs = [{"func_name": "app.tasks.cleanup", "cron": "0 * * * *"}]
    snapshot.health.cron_schedulers = [CronSchedulerInfo("vm:4242:ab12", now(snapshot) - silent_s, True, "vm", 4242,
                                                         jobs=jobs)]
    return snapshot


def test_rqd608_fires_cron_scheduler_silent_for_300_s() -> None:
    finding = only(cron_scheduler(300), "RQD608")
    assert finding.evidence[0] == ("rq:cron_schedulers scores vm:4242:ab12 300 s ago, more than rq's 120 s TTL "
                                   "(pid 4242 on vm)")
    assert finding.evidence[2] == "it scheduled 1 cron job(s): app.tasks.cleanup"


def test_rqd608_near_miss_heartbeat_60_s_ago() -> None:
    assert findings(cron_scheduler(60), "RQD608") == []


# --- RQD609-RQD615: bench ---------------------------------------------------------------------------


def test_rqd609_fires_worker_running_in_another_bench() -> None:
    snapshot = bench()
    process(snapshot, 18619).cwd = "/home/frappe/other-bench/sites"
    finding = only(snapshot, "RQD609")
    assert (finding.severity, finding.subject) == ("critical", f"worker {SHORT_WORKER}")
    assert finding.evidence[1].endswith("runs in /home/frappe/other-bench/sites, not in /home/frappe/frappe-bench")


def test_rqd609_near_miss_cwd_not_readable() -> None:
    snapshot = bench()
    process(snapshot, 18619).cwd = None
    assert findings(snapshot, "RQD609") == []


def test_rqd610_fires_one_worker_of_two_configured() -> None:
    # supervisor runs background_workers processes of each program: one each of the short and the long one
    found = findings(bench(background_workers=2), "RQD610")
    q = "home-frappe-frappe-bench:"
    assert [f.subject for f in found] == [f"workers of {q}long,{q}default,{q}short", f"workers of {q}short,{q}default"]
    assert found[1].evidence[1] == f"1 live worker(s) on this host listen on {q}short,{q}default"


def test_rqd610_near_miss_one_configured() -> None:
    assert findings(bench(background_workers=1), "RQD610") == []


def test_rqd610_near_miss_process_table_unreadable() -> None:
    snapshot = bench(background_workers=2)
    snapshot.errors.append(ProbeError("processes", "error", "the process table could not be read"))
    assert findings(snapshot, "RQD610") == []


def test_rqd611_fires_worker_without_its_named_connection() -> None:
    finding = only(bench(client_names=[LONG_WORKER, "rqdoctor"]), "RQD611")
    assert (finding.subject, finding.pid) == (f"worker {SHORT_WORKER}", 18619)
    assert "it lost its Redis connection" in finding.evidence[2]


def test_rqd611_near_miss_no_worker_names_its_connection() -> None:
    # rq versions that do not name their connection: absence proves nothing
    assert findings(bench(client_names=["rqdoctor"]), "RQD611") == []


def failed(n: int, error: str, ago: float = 60) -> Snapshot:
    snapshot = bench()
    assert snapshot.health is not None
    snapshot.health.failed_read, snapshot.health.failed_total = True, n + 10
    snapshot.health.failed = [FailedJob(f"{SITE}::f{i}", "home-frappe-frappe-bench:default", "app.tasks.sync",
                                        now(snapshot) - ago, error_tail=["Traceback", error]) for i in range(n)]
    return snapshot


def test_rqd612_fires_five_failures_in_the_last_hour() -> None:
    finding = only(failed(5, "ValueError: bad row"), "RQD612")
    assert finding.evidence[0] == ("5 of the newest failed-registry entries read ended in the last hour (15 in the "
                                   "failed registries)")
    assert finding.evidence[2] == "app.tasks.sync: 5 failure(s), last error: ValueError: bad row"


def test_rqd612_near_miss_four_failures() -> None:
    assert findings(failed(4, "ValueError: bad row"), "RQD612") == []


def test_rqd612_near_miss_five_failures_two_hours_ago() -> None:
    assert findings(failed(5, "ValueError: bad row", ago=7200), "RQD612") == []


TIMEOUT = "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (300 seconds)"
KILLED = "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); "


def test_rqd613_fires_job_timeout_exception() -> None:
    finding = only(failed(1, TIMEOUT), "RQD613")
    assert finding.subject == "method app.tasks.sync" and finding.evidence[1] == f"last error: {TIMEOUT}"


def test_rqd613_near_miss_other_error() -> None:
    assert findings(failed(1, "ValueError: timeout must be positive"), "RQD613") == []


def test_rqd614_fires_sigkill_with_an_oom_kill_in_the_cgroup() -> None:
    snapshot = failed(2, KILLED)
    assert snapshot.health is not None
    snapshot.health.oom_kills = {"/sys/fs/cgroup/system.slice/supervisor.service/memory.events": 3}
    finding = only(snapshot, "RQD614")
    assert finding.severity == "critical"  # raised: the kernel counted OOM kills
    assert finding.evidence[-1].startswith("/sys/fs/cgroup/system.slice/supervisor.service/memory.events: oom_kill 3")


def test_rqd614_fires_sigkill_with_the_kernel_logs_oom_line() -> None:
    snapshot = failed(1, KILLED)
    assert snapshot.health is not None
    snapshot.health.kernel_log_read = True
    snapshot.health.kernel_oom = ["Out of memory: Killed process 19302 (python) total-vm:2048000kB"]
    finding = only(snapshot, "RQD614")
    assert finding.severity == "critical"
    assert finding.evidence[-1] == ("the kernel log has 1 OOM line(s) from the last hour, the newest: Out of memory: "
                                    "Killed process 19302 (python) total-vm:2048000kB")


def test_rqd614_fires_sigkill_without_oom_evidence_as_a_warning() -> None:
    assert only(failed(1, KILLED), "RQD614").severity == "warning"


def test_rqd614_near_miss_waitpid_returned_15() -> None:
    assert findings(failed(1, "Work-horse terminated unexpectedly; waitpid returned 15 (signal 15); "), "RQD614") == []


def unreachable(source: str) -> Snapshot:
    snapshot = bench()
    snapshot.redis = None
    snapshot.target.redis_url_source = source
    snapshot.errors.append(ProbeError("redis", "unreachable", "Redis at redis://127.0.0.1:11000: cannot connect "
                                      "(Connection refused)"))
    return snapshot


def test_rqd615_fires_redis_queue_refused() -> None:
    finding = only(unreachable(f"{BENCH}/sites/common_site_config.json redis_queue"), "RQD615")
    assert (finding.severity, finding.subject) == ("critical", "redis redis://127.0.0.1:11000")
    assert finding.commands[1] == "redis-cli -h 127.0.0.1 -p 11000 PING"


def test_rqd615_near_miss_url_given_on_the_command_line() -> None:
    # a URL typed by hand is not the bench's configured redis_queue
    assert findings(unreachable("--redis-url"), "RQD615") == []


def test_idle_worker_of_the_recorded_bench_is_still_counted_live() -> None:
    # RQD610 counts live local workers, busy or idle
    snapshot = bench(background_workers=1)
    worker(snapshot, SHORT_WORKER).state = "idle"
    assert findings(snapshot, "RQD610") == []
