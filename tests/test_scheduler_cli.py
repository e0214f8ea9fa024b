"""``rqdoctor scheduler`` and the report bundle's Scheduler and Recent failures sections, from a saved snapshot: the
recorded Frappe 15.54.1 bench with a health part (lock free, no scheduler process, a paused site with a daily job
late, failing Scheduled Job Log rows, failed rq jobs past their timeout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rqdoctor.model import ConfigFlag, JobLogFailures
from tests.test_sched_rules import BENCH, FREE, SITE, daily, failed

pytestmark = pytest.mark.cli

TIMEOUT = "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (300 seconds)"


def saved(tmp_path: Path) -> Path:
    snapshot = failed(6, TIMEOUT)
    assert snapshot.health is not None
    snapshot.health.lock, snapshot.health.processes = FREE, []
    paused = daily("2026-11-27 00:00:05")
    paused.flags = [ConfigFlag("pause_scheduler", "true", f"{BENCH}/sites/{SITE}/site_config.json", True)]
    paused.failures = [JobLogFailures("auto_repeat.make_auto_repeat_entry", 3, "2026-11-29 13:00:00",
                                      "frappe.exceptions.ValidationError: Invalid date")]
    snapshot.health.sites = [paused]
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot.to_dict(), default=str))
    return path


def rqdoctor(*args: str, cwd: Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
                          cwd=cwd, preexec_fn=lambda: os.umask(0o077))


def test_scheduler_text_fits_80_columns_and_names_what_it_found(tmp_path: Path) -> None:
    run = rqdoctor("scheduler", "--from", str(saved(tmp_path)), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    commands = [line for line in lines if line.lstrip().startswith(("cd ", "sudo ", "dmesg"))]
    assert all(len(line) <= 80 for line in lines if line not in commands), [x for x in lines if len(x) > 80]
    assert f"lock `{BENCH}/config/scheduler_process`: free: nobody holds it" in lines
    for code in ("RQD605", "RQD602", "RQD607", "RQD612", "RQD613"):
        assert any(line.startswith(code) for line in lines), code
    assert "next due: 2026-11-28 00:00:00" in run.stdout


def test_scheduler_json_view(tmp_path: Path) -> None:
    run = rqdoctor("scheduler", "--from", str(saved(tmp_path)), "--format", "json", cwd=tmp_path)
    data = json.loads(run.stdout)
    view = data["scheduler"]
    assert view["lock"]["state"] == "free" and view["sites"][0]["flags"] == {"pause_scheduler": "true"}
    [job_type] = view["job_types"]
    assert (job_type["cron"], job_type["next_due"]) == ("0 0 * * *", "2026-11-28 00:00:00")
    assert view["failed_methods"] == [{"method": "app.tasks.sync", "count": 6, "last_error": TIMEOUT}]
    assert data["snapshot"]["health"]["lock"]["state"] == "free"


def test_report_bundle_fills_the_scheduler_and_recent_failures_sections(tmp_path: Path) -> None:
    run = rqdoctor("report", "--from", str(saved(tmp_path)), "--output", str(tmp_path / "b"), cwd=tmp_path,
                   columns=200)
    assert run.returncode == 1, run.stderr
    md = (tmp_path / "b" / "report.md").read_text()
    scheduler = md[md.index("## Scheduler"):md.index("## Recent failures")]
    failures = md[md.index("## Recent failures"):md.index("## Findings")]
    assert f"`{BENCH}/config/scheduler_process`: free: nobody holds it" in scheduler
    assert "not probed" not in scheduler
    assert "auto_email_report.send_daily" in scheduler and "2026-11-28 00:00:00" in scheduler
    assert "3 failed in the last day; frappe.exceptions.ValidationError: Invalid date" in scheduler
    assert "`app.tasks.sync`" in failures and TIMEOUT in failures
