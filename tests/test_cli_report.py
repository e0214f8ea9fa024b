"""The commands end to end on a recorded snapshot (``--from``): formats, JSON contract, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rqdoctor.model import SCHEMA_VERSION

pytestmark = pytest.mark.cli  # runs the CLI or scenario processes: not the pure unit tier

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"


def rqdoctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_hangs_json_contract() -> None:
    # WHEN
    run = rqdoctor("hangs", "--from", str(RECORDED), "--format", "json")
    # THEN
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["command"] == "hangs"
    assert report["host"] == "vm"
    assert isinstance(report["generated_at"], float)
    jobs = {j["job_id"]: j for j in report["jobs"]}
    victim = jobs["diag.localhost::lockwait"]
    for key in ("job_id", "queue", "site", "method", "status", "running_for_s", "timeout_s", "worker", "pid",
                "activity", "threads"):
        assert key in victim
    assert victim["site"] == "diag.localhost"
    assert victim["method"] == "hangjobs.jobs.lock_wait"
    assert victim["pid"] == 19307
    assert victim["timeout_s"] == 3600
    assert victim["activity"]["kind"] == "db_lock_wait"
    assert victim["blocker"]["job_id"] == "diag.localhost::holdlock"
    assert victim["threads"][0]["frames"][0]["name"]
    for finding in report["findings"]:
        assert {"code", "severity", "title", "job_id", "pid", "evidence", "fix", "more_info"} <= set(finding)
    assert report["errors"] == []


def test_saved_report_can_be_diagnosed_again(tmp_path: Path) -> None:
    # GIVEN a report saved with --output
    saved = tmp_path / "report.json"
    first = rqdoctor("hangs", "--from", str(RECORDED), "--format", "json", "--output", str(saved))
    assert first.stdout == ""
    assert "report written" in first.stderr
    # WHEN it is read back
    again = rqdoctor("hangs", "--from", str(saved), "--format", "json")
    # THEN the same findings come out
    codes = [f["code"] for f in json.loads(again.stdout)["findings"]]
    assert codes == [f["code"] for f in json.loads(saved.read_text())["findings"]]


def test_markdown_has_a_details_block_per_job() -> None:
    run = rqdoctor("hangs", "--from", str(RECORDED), "--format", "markdown")
    assert run.stdout.count("<details>") == 2
    assert "| job | method |" in run.stdout
    assert "RQD401" in run.stdout
    assert "\n    KILL 83;\n" in run.stdout


def test_text_names_the_blocker_and_the_fix() -> None:
    run = rqdoctor("hangs", "--from", str(RECORDED))
    assert "db_lock_wait" in run.stdout
    assert "diag.localhost::holdlock" in run.stdout
    assert "KILL 83;" in run.stdout


@pytest.mark.parametrize("command", ["workers", "queues", "locks"])
def test_other_commands_read_saved_snapshots(command: str) -> None:
    run = rqdoctor(command, "--from", str(RECORDED), "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    assert json.loads(run.stdout)["command"] == command


def test_workers_view_of_the_recorded_bench() -> None:
    report = json.loads(rqdoctor("workers", "--from", str(RECORDED), "--format", "json").stdout)
    rows = {w["name"]: w for w in report["workers"]}
    row = rows["265fc20cbe22415cb480a89bf0e4445e"]
    assert (row["pid"], row["horse_pid"], row["current_job"], row["state"]) == (
        18622, 19307, "diag.localhost::lockwait", "busy")


def test_queues_flags_the_queue_nobody_drains() -> None:
    report = json.loads(rqdoctor("queues", "--from", str(RECORDED), "--format", "json").stdout)
    rows = {q["name"]: q for q in report["queues"]}
    assert rows["home-frappe-frappe-bench:default"]["queued"] == 1
    # short and long workers also listen on default, so it is not an orphan queue
    assert "RQD501" not in rows["home-frappe-frappe-bench:default"]["findings"]


def test_stack_of_one_job_and_of_an_unknown_job() -> None:
    one = json.loads(rqdoctor("stack", "diag.localhost::lockwait", "--from", str(RECORDED), "--format", "json").stdout)
    assert [j["job_id"] for j in one["jobs"]] == ["diag.localhost::lockwait"]
    missing = rqdoctor("stack", "nope", "--from", str(RECORDED))
    assert missing.returncode == 2
    assert missing.stderr.startswith("rqdoctor: error: no running job 'nope'")
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("content", ["", "{not json", '{"schema_version": 99}', "[1, 2]"])
def test_unreadable_snapshot_is_one_line_and_exit_2(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    run = rqdoctor("hangs", "--from", str(bad))
    assert run.returncode == 2
    assert run.stderr.startswith(f"rqdoctor: error: {bad}")
    assert "Traceback" not in run.stderr
