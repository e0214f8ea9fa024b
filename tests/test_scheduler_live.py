"""``rqdoctor scheduler`` end to end: a temp bench, a `frappe schedule` process holding its lock the way Frappe
does (then killed), a temp MariaDB database with Frappe's scheduler tables, and real rq workers whose failed jobs
carry compressed ``exc_info``.

- site1 in maintenance mode, site2 paused (RQD601, RQD602), the scheduler's lock held: no RQD605, and the lock is
  still held by the fake scheduler after rqdoctor's probe; killed: RQD605 (lock free), and the lock is free after
  the probe (it never holds it);
- System Settings enable_scheduler = 0 (RQD603), then 1 with a daily job two days late whose scheduled-job id is a
  zombie hash (RQD606 naming the cause, RQD304), and Failed Scheduled Job Log rows (RQD607);
- real workers: five failures (RQD612, the error line read from zlib exc_info), a job past its timeout (RQD613), a
  horse SIGKILLed (RQD614), a worker hash with no connection of its name (RQD611) next to live named ones;
  every Redis command rqdoctor issues is a read (MONITOR, with no worker running).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness.bench import Bench
from tests.harness.services import DBInfo
from tests.harness.workers import Workers, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import SCN, enqueue_many, job_spec, run_cli, selected_flavours
from tests.test_workers_queues_cli import READ_COMMANDS, Monitor

pytestmark = [pytest.mark.integration, pytest.mark.cli]

FLAVOURS = [f for f in ("rq26", "rq30") if f in selected_flavours()] or ["rq115"]
SITE = "site1.local"
# What Frappe's start_scheduler does: filelock.FileLock(config/scheduler_process).acquire(blocking=False), which on
# Linux is os.open(O_RDWR | O_CREAT | O_TRUNC) then fcntl.flock(LOCK_EX | LOCK_NB); then it sleeps between ticks.
FAKE_SCHEDULER = """
import fcntl, os, sys, time
fd = os.open(os.path.join(os.path.dirname(os.getcwd()), "config", "scheduler_process"),
             os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("ready", flush=True)
time.sleep(600)
"""


def scheduler(bench: Bench, *extra: str) -> dict[str, Any]:
    run = run_cli("scheduler", "--bench", str(bench.root), "--format", "json", "--timeout", "30", *extra, timeout=90)
    assert run.code in (0, 1), run
    report = json.loads(run.stdout)
    assert report["command"] == "scheduler"
    return report


def of(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["code"] == code]


@pytest.fixture
def fake_scheduler(bench: Bench) -> Iterator[subprocess.Popen[str]]:
    """A process shown as `… frappe.utils.bench_helper frappe schedule`, cwd <bench>/sites, holding the lock."""
    (bench.root / "config").mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SCHEDULER, "-m", "frappe.utils.bench_helper", "frappe",
                             "schedule"], cwd=bench.sites_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def lock_is_free(path: Path) -> bool:
    """Whether a non-blocking exclusive flock on ``path`` succeeds now (released at once)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def site_config(bench: Bench, site: str, **keys: Any) -> None:
    path = bench.sites_path / site / "site_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **keys}))


def test_paused_site_maintenance_mode_and_the_scheduler_process_alive_then_killed(
        bench: Bench, fake_scheduler: subprocess.Popen[str]) -> None:
    site_config(bench, "site1.local", maintenance_mode=1)
    site_config(bench, "site2.local", pause_scheduler=True)
    lock = bench.root / "config" / "scheduler_process"
    report = scheduler(bench)
    view = report["scheduler"]
    assert view["lock"]["state"] == "held" and view["lock"]["held_by"] == [fake_scheduler.pid]
    assert [p["pid"] for p in view["processes"]] == [fake_scheduler.pid]
    assert [f["subject"] for f in of(report, "RQD601")] == ["site site1.local"]
    [paused] = of(report, "RQD602")
    assert paused["subject"] == "site site2.local"
    assert paused["evidence"][0] == f"pause_scheduler = true in {bench.sites_path / 'site2.local' / 'site_config.json'}"
    assert of(report, "RQD605") == []
    assert not lock_is_free(lock)  # the probe took nothing away from the scheduler
    # the sites' databases do not exist: an error entry each, no System Settings verdict
    assert of(report, "RQD603") == [] and [e for e in report["errors"] if e["probe"] == "frappe"]

    # WHEN the scheduler is killed
    os.kill(fake_scheduler.pid, signal.SIGKILL)
    fake_scheduler.wait(timeout=10)
    report = scheduler(bench)
    [dead] = of(report, "RQD605")
    assert dead["severity"] == "critical"
    assert dead["evidence"][0].startswith(f"{lock}: a non-blocking flock attempt succeeded (released at once)")
    assert report["scheduler"]["lock"]["state"] == "free" and report["scheduler"]["processes"] == []
    assert lock_is_free(lock)  # released at once: never held


def _sql(db: DBInfo, statements: str) -> None:
    subprocess.run(["mariadb", "-h", db.host, "-P", str(db.port), "-u", db.user, db.database, "-e", statements],
                   check=True, capture_output=True, timeout=30)


DAILY = "frappe.email.doctype.auto_email_report.auto_email_report.send_daily"
TABLES = f"""
    CREATE TABLE `tabSingles` (doctype VARCHAR(140), field VARCHAR(140), value TEXT);
    CREATE TABLE `tabScheduled Job Type` (name VARCHAR(140) PRIMARY KEY, method VARCHAR(140), frequency VARCHAR(140),
                                          cron_format VARCHAR(140), last_execution DATETIME(6), stopped INT);
    CREATE TABLE `tabScheduled Job Log` (name VARCHAR(140) PRIMARY KEY, scheduled_job_type VARCHAR(140),
                                         status VARCHAR(140), details LONGTEXT, creation DATETIME(6));
    CREATE TABLE `tabActivity Log` (name VARCHAR(140) PRIMARY KEY, creation DATETIME(6));
    INSERT INTO `tabSingles` VALUES ('System Settings', 'time_zone', 'UTC'),
                                    ('System Settings', 'enable_scheduler', '0');
    INSERT INTO `tabActivity Log` VALUES ('a1', UTC_TIMESTAMP() - INTERVAL 5 MINUTE);
    INSERT INTO `tabScheduled Job Type` VALUES
      ('auto_email_report.send_daily', '{DAILY}', 'Daily', NULL, UTC_TIMESTAMP() - INTERVAL 3 DAY, 0),
      ('every_ten', 'app.tasks.every_ten', 'Cron', '*/10 * * * *', UTC_TIMESTAMP() - INTERVAL 1 MINUTE, 0),
      ('old.stopped', 'app.tasks.old', 'Hourly', NULL, UTC_TIMESTAMP() - INTERVAL 9 DAY, 1);
    INSERT INTO `tabScheduled Job Log` VALUES
      ('f1', 'every_ten', 'Failed', 'Traceback (most recent call last):\\n  File "x.py"\\nValueError: bad row 7\\n',
       UTC_TIMESTAMP() - INTERVAL 20 MINUTE),
      ('f2', 'every_ten', 'Failed', 'Traceback\\nValueError: bad row 3', UTC_TIMESTAMP() - INTERVAL 2 HOUR),
      ('ok', 'every_ten', 'Complete', '', UTC_TIMESTAMP() - INTERVAL 10 MINUTE);
"""


@pytest.mark.mariadb
def test_system_settings_skipped_and_failing_scheduled_jobs(bench: Bench, mariadb: DBInfo, redis_client: redis.Redis,
                                                            fake_scheduler: subprocess.Popen[str]) -> None:
    site_config(bench, SITE, db_name=mariadb.database, db_user=mariadb.user, db_password=mariadb.password,
                db_host=mariadb.host, db_port=mariadb.port, db_type="mariadb")
    _sql(mariadb, TABLES)
    report = scheduler(bench)
    [disabled] = of(report, "RQD603")
    assert disabled["subject"] == f"site {SITE}"
    assert of(report, "RQD606") == []  # a disabled site runs nothing: RQD603 says why

    # WHEN the scheduler is enabled and the daily job's id is a zombie hash (queued in no queue)
    _sql(mariadb, "UPDATE `tabSingles` SET value = '1' WHERE field = 'enable_scheduler'")
    job_id = f"{SITE}::scheduled_job::{DAILY}"
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 2 * 86400))
    redis_client.hset(f"rq:job:{job_id}", mapping={"status": "queued", "origin": bench.queue("default"),
                                                   "created_at": old, "enqueued_at": old,
                                                   "description": "frappe.utils.background_jobs.execute_job()"})
    monitor = Monitor(bench.redis_url)  # no worker runs: every command it sees is rqdoctor's
    try:
        before = datetime.now(timezone.utc).replace(tzinfo=None)  # the site clock is UTC (System Settings)
        report = scheduler(bench)
        after = datetime.now(timezone.utc).replace(tzinfo=None)
        seen, end = -1, time.monotonic() + 15
        while len(monitor.events) != seen and time.monotonic() < end:  # until the monitor has read everything
            seen = len(monitor.events)
            time.sleep(1.0)
    finally:
        events = monitor.stop()
    names = {str(e["command"]).split()[0].lower() for e in events}
    assert "zrange" in names and not names - READ_COMMANDS - {"scan", "lrange", "zscore", "zrevrange"}, sorted(names)
    assert of(report, "RQD603") == []
    [skipped] = of(report, "RQD606")
    assert skipped["subject"] == f"scheduled job {SITE}/auto_email_report.send_daily"
    assert skipped["job_id"] == job_id and f"rq:job:{job_id} says queued" in skipped["evidence"][2]
    assert [f["job_id"] for f in of(report, "RQD304")] == [job_id]
    [failing] = of(report, "RQD607")
    assert failing["subject"] == f"scheduled job {SITE}/every_ten"
    assert failing["evidence"][1] == "its error: ValueError: bad row 7"
    types = {t["name"]: t for t in report["scheduler"]["job_types"]}
    every_ten = types["every_ten"]
    assert every_ten["cron"] == "*/10 * * * *" and every_ten["next_due"] > every_ten["last_execution"]
    # it ran a minute ago: due at the next ten-minute mark, late only if the run crossed that mark
    next_due = datetime.fromisoformat(every_ten["next_due"])
    assert next_due.minute % 10 == 0 and next_due.second == 0
    assert_late_between(every_ten, before, after)
    assert not [e for e in report["errors"] if e["probe"] == "frappe" and SITE in e["subject"]]  # site2 has no DB


def assert_late_between(job_type: dict[str, Any], before: datetime, after: datetime) -> None:
    """``late_s`` is how far the site clock, read between ``before`` and ``after``, was past ``next_due``."""
    next_due = datetime.fromisoformat(job_type["next_due"])
    late = [max((t - next_due).total_seconds(), 0.0) for t in (before, after)]
    assert late[0] - 1 <= job_type["late_s"] <= late[1] + 1, (job_type, before, after)


def wait_status(r: redis.Redis, job_id: str, status: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if r.hget(f"rq:job:{job_id}", "status") == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never became {status}: {r.hgetall(f'rq:job:{job_id}')}")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_failures_timeouts_sigkills_and_a_worker_without_its_connection(
        flavour: str, bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    worker = workers.frappe(bench, flavour, ("short", "default"))
    wait_for_worker_registered(redis_client, worker, timeout=60)
    specs = [job_spec(flavour, bench, "default", SCN + "boom", {"message": f"bad row {i}"}) for i in range(5)]
    specs.append(job_spec(flavour, bench, "default", SCN + "sleep_for", {"seconds": 60}, job_timeout=1))
    ids = enqueue_many(flavour, specs)
    for job_id in ids:
        wait_status(redis_client, job_id, "failed")
    [killed] = enqueue_many(flavour, [job_spec(flavour, bench, "short", SCN + "sleep_for", {"seconds": 120})])
    started = wait_for_job_started(redis_client, killed, worker, timeout=60)
    assert started.horse is not None
    os.kill(started.horse.pid, signal.SIGKILL)
    wait_status(redis_client, killed, "failed")
    # a worker hash in the worker set whose connection is gone (its process died without a word)
    redis_client.hset("rq:worker:ghost-of-old", mapping={"birth": "2026-12-01T10:00:00.000000Z", "state": "idle",
                                                         "queues": bench.queue("short"), "pid": "999999",
                                                         "hostname": "elsewhere", "last_heartbeat":
                                                         time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())})
    redis_client.sadd("rq:workers", "rq:worker:ghost-of-old")
    report = scheduler(bench)
    [growth] = of(report, "RQD612")
    assert growth["evidence"][0].startswith("7 of the newest failed-registry entries read ended in the last hour")
    methods = {m["method"]: m for m in report["scheduler"]["failed_methods"]}
    assert methods[SCN + "boom"]["count"] == 5
    assert methods[SCN + "boom"]["last_error"].startswith("RuntimeError: bad row")
    [timeout] = of(report, "RQD613")
    assert timeout["subject"] == f"method {SCN}sleep_for" and "JobTimeoutException" in timeout["evidence"][1]
    [sigkill] = of(report, "RQD614")
    assert "1 job(s) failed in the last hour" in sigkill["evidence"][0]
    assert [f["subject"] for f in of(report, "RQD611")] == ["worker ghost-of-old"]


CRON_CONFIG = """
from rq import cron
cron.register(print, queue_name="default", cron="*/5 * * * *", name="every-five")
"""


@pytest.mark.skipif("rq30" not in selected_flavours(), reason="rq cron is rq >= 2.4; tested with rq30")
def test_rq_cron_scheduler_read_raw_and_never_pruned(tmp_path: Path, make_bench: Any, redis_url: str,
                                                     redis_client: redis.Redis) -> None:
    from tests.harness.venvs import ensure_venv, venv_python

    config = tmp_path / "cron_config.py"
    config.write_text(CRON_CONFIG)
    rq_cli = venv_python(ensure_venv("rq30")).parent / "rq"
    proc = subprocess.Popen([str(rq_cli), "cron", "--url", redis_url, str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while not redis_client.zcard("rq:cron_schedulers") and time.monotonic() < end:
            time.sleep(0.2)
        [(live, _)] = redis_client.zrange("rq:cron_schedulers", 0, -1, withscores=True)
        # a scheduler that died 10 minutes ago without unregistering (its hash expired)
        redis_client.zadd("rq:cron_schedulers", {"vm:4242:deadbeef": time.time() - 600})
        report = scheduler(make_bench())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    crons = {c["name"]: c for c in report["scheduler"]["cron_schedulers"]}
    assert crons[live]["pid"] == proc.pid and crons[live]["jobs"][0]["cron"] == "*/5 * * * *"
    assert crons[live]["jobs"][0]["next_enqueue_time"]
    [silent] = of(report, "RQD608")
    assert silent["subject"] == "cron scheduler vm:4242:deadbeef"
    assert "has expired" in silent["evidence"][1]
    # read, never pruned (rq's CronScheduler.all() would have removed it)
    assert redis_client.zscore("rq:cron_schedulers", "vm:4242:deadbeef") is not None


def _psql(db: DBInfo, statements: str) -> None:
    subprocess.run(["psql", "-h", db.host, "-p", str(db.port), "-U", db.user, "-d", db.database, "-v",
                    "ON_ERROR_STOP=1", "-c", statements], check=True, capture_output=True, timeout=30)


def _pg_now(db: DBInfo) -> datetime:
    run = subprocess.run(["psql", "-h", db.host, "-p", str(db.port), "-U", db.user, "-d", db.database, "-Atc",
                          "SELECT LOCALTIMESTAMP"], check=True, capture_output=True, text=True, timeout=30)
    return datetime.fromisoformat(run.stdout.strip())


@pytest.mark.postgres
def test_system_settings_and_failing_jobs_on_postgres(make_bench: Any, postgres: DBInfo) -> None:
    bench = make_bench(sites=(SITE,), db_type="postgres")
    site_config(bench, SITE, db_name=postgres.database, db_user=postgres.user, db_password=postgres.password,
                db_host=postgres.host, db_port=postgres.port, db_type="postgres")
    _psql(postgres, """
        CREATE TABLE "tabSingles" (doctype VARCHAR(140), field VARCHAR(140), value TEXT);
        CREATE TABLE "tabScheduled Job Type" (name VARCHAR(140) PRIMARY KEY, method VARCHAR(140),
                                              frequency VARCHAR(140), cron_format VARCHAR(140),
                                              last_execution TIMESTAMP(6), stopped INT);
        CREATE TABLE "tabScheduled Job Log" (name VARCHAR(140) PRIMARY KEY, scheduled_job_type VARCHAR(140),
                                             status VARCHAR(140), details TEXT, creation TIMESTAMP(6));
        CREATE TABLE "tabActivity Log" (name VARCHAR(140) PRIMARY KEY, creation TIMESTAMP(6));
        INSERT INTO "tabSingles" VALUES ('System Settings', 'enable_scheduler', '0'),
                                        ('System Settings', 'dormant_days', '2');
        INSERT INTO "tabActivity Log" VALUES ('a1', LOCALTIMESTAMP - INTERVAL '3 days');
        INSERT INTO "tabScheduled Job Type" VALUES ('hourly', 'app.tasks.hourly', 'Hourly', NULL,
                                                    LOCALTIMESTAMP - INTERVAL '10 minutes', 0);
        INSERT INTO "tabScheduled Job Log" VALUES ('f1', 'hourly', 'Failed', E'Traceback\\nKeyError: ''item''',
                                                   LOCALTIMESTAMP - INTERVAL '5 minutes');
    """)
    before = _pg_now(postgres)  # no time_zone in System Settings: the site clock is the database's
    report = scheduler(bench)
    after = _pg_now(postgres)
    assert [f["subject"] for f in of(report, "RQD603")] == [f"site {SITE}"], report["errors"]
    [dormant] = of(report, "RQD604")
    assert "more than dormant_days = 2" in dormant["evidence"][0]
    [failing] = of(report, "RQD607")
    assert failing["evidence"][1] == "its error: KeyError: 'item'"
    [job_type] = report["scheduler"]["job_types"]
    assert job_type["cron"] == "0 * * * *" and datetime.fromisoformat(job_type["next_due"]).minute == 0
    assert_late_between(job_type, before, after)  # it ran ten minutes ago: late only past the hour mark
