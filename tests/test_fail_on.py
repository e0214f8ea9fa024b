"""``--fail-on SEVERITY``: the exit code as a liveness or alerting probe, on saved snapshots through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rqdoctor.model import QueueInfo, RedisState, Snapshot, TargetInfo, WorkerInfo
from tests.test_hangs_cli import run_cli

pytestmark = pytest.mark.cli

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"


def saved(tmp_path: Path, warning_only: bool) -> Path:
    """A snapshot whose only finding is RQD507 (a warning), or one without any finding."""
    state = RedisState(server_time=1_800_000_000.0, queues=[QueueInfo(name="default")], hidden_counted=True,
                       other_prefixes=["myapp"] if warning_only else [],
                       workers=[] if warning_only else [WorkerInfo(name="w", key="rq:worker:w", state="idle")])
    snap = Snapshot(host="vm", generated_at=1_800_000_000.0, redis=state,
                    target=TargetInfo(redis_url="redis://127.0.0.1:6379/0", redis_url_source="--redis-url"))
    path = tmp_path / ("warning.json" if warning_only else "clean.json")
    path.write_text(json.dumps(snap.to_dict()))
    return path


def codes(path: Path, *extra: str) -> int:
    run = run_cli("hangs", "--from", str(path), "--format", "json", *extra)
    assert run.stderr.count("Traceback") == 0, run
    return run.code


def test_critical_findings_fail_every_threshold() -> None:
    severities = {f["severity"] for f in json.loads(run_cli("hangs", "--from", str(RECORDED), "--format",
                                                             "json").stdout)["findings"]}
    assert "critical" in severities
    assert [codes(RECORDED, "--fail-on", s) for s in ("critical", "warning", "info")] == [1, 1, 1]


def test_a_warning_fails_only_at_warning_or_below(tmp_path: Path) -> None:
    path = saved(tmp_path, warning_only=True)
    assert codes(path) == 1  # the default: warning or worse
    assert [codes(path, "--fail-on", s) for s in ("critical", "warning", "info")] == [0, 1, 1]


def test_near_miss_no_finding_passes_every_threshold(tmp_path: Path) -> None:
    path = saved(tmp_path, warning_only=False)
    assert [codes(path, "--fail-on", s) for s in ("critical", "warning", "info")] == [0, 0, 0]


def test_a_bad_severity_is_a_usage_error_without_traceback() -> None:
    run = run_cli("hangs", "--from", str(RECORDED), "--fail-on", "severe")
    assert run.code == 2 and "Traceback" not in run.stderr and "severe" in run.stderr
