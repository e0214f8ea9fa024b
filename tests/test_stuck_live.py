"""``rqdoctor stuck`` end to end on real rq workers, real Redis, a temp bench and a temp MariaDB database.

- a worker SIGKILLed under its running job: its orphaned horse (RQD110, ``stop_orphan``); the horse killed
  too: the worker is gone with a started entry no process runs (RQD201, ``fail_started``);
- a Frappe scheduled-job hash that says queued in no queue (RQD304, critical), next to a job legitimately
  queued (no finding);
- a horse stopped with SIGSTOP (RQD302), resumed afterwards;
- a stale document lock file in the bench (RQD305), a young one left alone, and a site database that cannot
  be reached (a "Could not see" entry, no RQD306);
- Scheduled Job Log rows in a MariaDB database made for the test: an old ``Start`` row (RQD306), a
  ``Complete`` one left alone; the enabled type's scheduled-job id is looked up directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import suppress
from typing import Any

import psutil
import pytest
import redis

from rqdoctor.diagnose.frappe_docs import lock_name
from tests.harness.bench import Bench
from tests.harness.services import DBInfo
from tests.harness.workers import Workers, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import SCN, enqueue_many, job_spec, run_cli, selected_flavours
from tests.test_workers_queues_cli import READ_COMMANDS, Monitor

pytestmark = [pytest.mark.integration]

FLAVOUR = next((f for f in ("rq115", "rq26", "rq30") if f in selected_flavours()), "rq115")
SITE = "site1.local"


def stuck(bench: Bench, *extra: str) -> dict[str, Any]:
    run = run_cli("stuck", "--bench", str(bench.root), "--format", "json", "--timeout", "30", *extra, timeout=90)
    assert run.code in (0, 1), run
    report = json.loads(run.stdout)  # must be valid JSON
    assert report["command"] == "stuck"
    return report


def of(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["code"] == code]


def started_job(bench: Bench, workers: Workers, redis_client: redis.Redis, seconds: float = 120) -> tuple[Any, str]:
    worker = workers.frappe(bench, FLAVOUR, ("short",))
    wait_for_worker_registered(redis_client, worker, timeout=60)
    [job_id] = enqueue_many(FLAVOUR, [job_spec(FLAVOUR, bench, "short", SCN + "sleep_for", {"seconds": seconds})])
    started = wait_for_job_started(redis_client, job_id, worker, timeout=60)
    assert started.horse is not None
    return started, job_id


@pytest.mark.slow
def test_orphaned_horse_then_worker_gone_with_a_started_entry(bench: Bench, workers: Workers,
                                                              redis_client: redis.Redis) -> None:
    started, job_id = started_job(bench, workers, redis_client)
    horse = started.horse.pid
    os.kill(started.worker_pid, signal.SIGKILL)  # the worker only: its horse runs on, re-parented
    with suppress(psutil.Error):
        psutil.Process(started.worker_pid).wait(10)
    try:
        report = stuck(bench)
        [orphan] = of(report, "RQD110")
        remedy = orphan["remedy"]
        assert (remedy["action"], remedy["pid"], remedy["job_id"], remedy["parent_pid"]) == (
            "stop_orphan", horse, job_id, None), orphan
        assert remedy["create_time"] == pytest.approx(psutil.Process(horse).create_time(), abs=1.0)
        assert remedy["member"] and remedy["member"].split(":")[0] in job_id
    finally:
        os.killpg(horse, signal.SIGKILL)  # the horse we started, by its group
    with suppress(psutil.Error):
        psutil.Process(horse).wait(10)
    report = stuck(bench)
    assert of(report, "RQD110") == []
    dead = [f for f in of(report, "RQD201") + of(report, "RQD503") if f["remedy"]]
    assert [(f["remedy"]["action"], f["remedy"]["job_id"]) for f in dead] == [("fail_started", job_id)], \
        report["findings"]


def test_zombie_scheduled_job_hash_next_to_a_legitimately_queued_job(bench: Bench, redis_client: redis.Redis) -> None:
    queue = bench.queue("default")
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 3600))
    zombie = f"{SITE}::scheduled_job::erpnext.tasks.daily"
    legit = f"{SITE}::scheduled_job::erpnext.tasks.hourly"
    for job_id in (zombie, legit):
        redis_client.hset(f"rq:job:{job_id}", mapping={
            "status": "queued", "origin": queue, "created_at": old, "enqueued_at": old,
            "description": "frappe.utils.background_jobs.execute_job(method='frappe.core.doctype."
                           "scheduled_job_type.scheduled_job_type.run_scheduled_job', site='site1.local')"})
    redis_client.rpush(f"rq:queue:{queue}", legit)
    redis_client.sadd("rq:queues", f"rq:queue:{queue}")
    monitor = Monitor(bench.redis_url)  # no worker runs: every command it sees is rqdoctor's
    try:
        report = stuck(bench)
        seen, end = -1, time.monotonic() + 15
        while len(monitor.events) != seen and time.monotonic() < end:  # until the monitor has read everything
            seen = len(monitor.events)
            time.sleep(1.0)
    finally:
        events = monitor.stop()
    names = {str(e["command"]).split()[0].lower() for e in events}
    assert "scan" in names and not names - READ_COMMANDS - {"scan", "lrange", "zscore"}, sorted(names)
    [finding] = of(report, "RQD304")
    assert finding["subject"] == f"job {zombie}" and finding["severity"] == "critical"
    assert any("blocks the scheduled job erpnext.tasks.daily on site site1.local" in e for e in finding["evidence"])
    assert finding["remedy"]["action"] == "clear_job_hash" and finding["remedy"]["queue"] == queue
    scan = report["snapshot"]["redis"]["job_scan"]
    assert scan["complete"] and {j["job_id"]: j["held_by"] for j in scan["jobs"]} == {zombie: [], legit: ["queue"]}


@pytest.mark.slow
def test_stopped_horse(bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    started, job_id = started_job(bench, workers, redis_client)
    horse = started.horse.pid
    os.kill(horse, signal.SIGSTOP)
    try:
        report = stuck(bench)
    finally:
        os.kill(horse, signal.SIGCONT)
    [finding] = of(report, "RQD302")
    assert finding["pid"] == horse and finding["job_id"] == job_id
    assert finding["commands"] == [f"kill -CONT {horse}"]
    assert finding["remedy"]["action"] == "stop_horse" and finding["remedy"]["parent_pid"] == started.worker_pid
    # resumed: no longer stuck
    assert of(stuck(bench), "RQD302") == []


def test_stale_document_lock_in_the_bench(bench: Bench) -> None:
    locks = bench.sites_path / SITE / "locks"
    locks.mkdir()
    stale = locks / f"{lock_name('Sales Invoice', 'SINV-0001')}.lock"
    young = locks / f"{lock_name('Sales Invoice', 'SINV-0002')}.lock"
    leftover = locks / "bench_migrate.lock"  # a filelock file: stays on disk after release, never stale
    for path in (stale, young, leftover):
        path.write_text("")
    hours_ago = time.time() - 7200
    for path in (stale, leftover):
        os.utime(path, (hours_ago, hours_ago))
    report = stuck(bench)
    [finding] = of(report, "RQD305")
    assert finding["commands"] == [f"rm -- {stale}"]
    assert len(report["snapshot"]["frappe"]["locks"]) == 3
    # the sites' databases do not exist: an error entry each, no verdict
    assert [e for e in report["errors"] if e["probe"] == "frappe" and SITE in e["subject"]]
    assert of(report, "RQD306") == []


def _sql(db: DBInfo, statements: str) -> None:
    subprocess.run(["mariadb", "-h", db.host, "-P", str(db.port), "-u", db.user, db.database, "-e", statements],
                   check=True, capture_output=True, timeout=30)


@pytest.mark.mariadb
def test_scheduled_job_log_rows_left_in_start(make_bench: Any, mariadb: DBInfo) -> None:
    bench = make_bench(sites=(SITE,))
    config = {"db_name": mariadb.database, "db_user": mariadb.user, "db_password": mariadb.password,
              "db_host": mariadb.host, "db_port": mariadb.port, "db_type": "mariadb"}
    (bench.sites_path / SITE / "site_config.json").write_text(json.dumps(config))
    _sql(mariadb, """
        CREATE TABLE `tabScheduled Job Type` (name VARCHAR(140) PRIMARY KEY, method VARCHAR(140), stopped INT);
        CREATE TABLE `tabScheduled Job Log` (name VARCHAR(140) PRIMARY KEY, scheduled_job_type VARCHAR(140),
                                             status VARCHAR(140), creation DATETIME(6));
        CREATE TABLE `tabSingles` (doctype VARCHAR(140), field VARCHAR(140), value TEXT);
        INSERT INTO `tabSingles` VALUES ('System Settings', 'time_zone', 'Asia/Kolkata');
        INSERT INTO `tabScheduled Job Type` VALUES ('tasks.daily', 'erpnext.tasks.daily', 0);
        INSERT INTO `tabScheduled Job Log` VALUES
          ('left1', 'tasks.daily', 'Start', UTC_TIMESTAMP() + INTERVAL 330 MINUTE - INTERVAL 3 HOUR),
          ('done1', 'tasks.daily', 'Complete', UTC_TIMESTAMP() + INTERVAL 330 MINUTE - INTERVAL 3 HOUR),
          ('young', 'tasks.daily', 'Start', UTC_TIMESTAMP() + INTERVAL 330 MINUTE - INTERVAL 1 MINUTE);
    """)
    report = stuck(bench)
    [finding] = of(report, "RQD306")
    assert finding["subject"] == f"scheduled job log {SITE}/left1"
    frappe = report["snapshot"]["frappe"]
    assert frappe["job_log_sites"] == [SITE] and frappe["scheduled_methods"] == {SITE: ["erpnext.tasks.daily"]}
    rows = {r["name"]: r for r in frappe["job_log_rows"]}
    assert sorted(rows) == ["left1", "young"]
    # creation is written in the site's time zone (IST here): read in it, the ages are right whatever the DB's zone
    assert rows["left1"]["time_zone"] == "Asia/Kolkata"
    assert rows["left1"]["age_s"] == pytest.approx(3 * 3600, abs=120)
    assert rows["young"]["age_s"] == pytest.approx(60, abs=120)
    assert not [e for e in report["errors"] if e["probe"] == "frappe"]


def _psql(db: DBInfo, statements: str) -> None:
    subprocess.run(["psql", "-h", db.host, "-p", str(db.port), "-U", db.user, "-d", db.database, "-v",
                    "ON_ERROR_STOP=1", "-c", statements], check=True, capture_output=True, timeout=30)


@pytest.mark.postgres
def test_scheduled_job_log_rows_left_in_start_on_postgres(make_bench: Any, postgres: DBInfo) -> None:
    bench = make_bench(sites=(SITE,), db_type="postgres")
    config = {"db_name": postgres.database, "db_user": postgres.user, "db_password": postgres.password,
              "db_host": postgres.host, "db_port": postgres.port, "db_type": "postgres"}
    (bench.sites_path / SITE / "site_config.json").write_text(json.dumps(config))
    _psql(postgres, """
        CREATE TABLE "tabScheduled Job Type" (name VARCHAR(140) PRIMARY KEY, method VARCHAR(140), stopped INT);
        CREATE TABLE "tabScheduled Job Log" (name VARCHAR(140) PRIMARY KEY, scheduled_job_type VARCHAR(140),
                                             status VARCHAR(140), creation TIMESTAMP(6));
        INSERT INTO "tabScheduled Job Type" VALUES ('tasks.daily', 'erpnext.tasks.daily', 0);
        INSERT INTO "tabScheduled Job Log" VALUES
          ('left1', 'tasks.daily', 'Start', LOCALTIMESTAMP - INTERVAL '3 hours'),
          ('young', 'tasks.daily', 'Start', LOCALTIMESTAMP - INTERVAL '1 minute');
    """)
    report = stuck(bench)
    assert [f["subject"] for f in of(report, "RQD306")] == [f"scheduled job log {SITE}/left1"], report["errors"]
    assert report["snapshot"]["frappe"]["scheduled_methods"] == {SITE: ["erpnext.tasks.daily"]}
