"""Fixes name their commands as data (``Finding.commands``), with the diagnosed target, never inline in prose."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rqdoctor.commands.common import load_snapshot
from rqdoctor.diagnose.findings import Finding
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import QueueInfo, Snapshot
from tests.test_diagnosis import NOW, RECORDED, process, snapshot, worker

INCIDENT = Path(__file__).parent / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"
COMMAND_WORDS = ("rqdoctor", "bench", "kill", "redis-cli", "rq ", "sudo", "supervisorctl", "dmesg", "mysql", "psql",
                 "KILL", "SELECT pg_")


def backlog(bench_path: str | None) -> Snapshot:
    snap = snapshot(workers=[worker(state="busy")], processes=[process(100)],
                    queues=[QueueInfo("short", queued=3, oldest_enqueued_at=NOW - 900)])
    snap.target.bench_path = bench_path
    return snap


def dead_worker(bench_path: str | None) -> Snapshot:
    snap = snapshot(workers=[worker("dead", pid=4242, state="busy")])
    snap.target.bench_path = bench_path
    return snap


def only(snap: Snapshot, code: str) -> list[Finding]:
    return [f for f in diagnose(snap).findings if f.code == code]


def test_rqd504_fires_with_rqdoctor_hangs_for_the_diagnosed_bench() -> None:
    [finding] = only(backlog("/home/frappe/frappe-bench"), "RQD504")
    assert finding.commands[0] == "rqdoctor hangs --bench /home/frappe/frappe-bench"
    assert "`rqdoctor" not in finding.fix
    [finding] = only(backlog(None), "RQD504")
    assert finding.commands[0] == "rqdoctor hangs --redis-url redis://127.0.0.1:6379"


def test_rqd504_near_miss_short_wait_has_no_advice() -> None:
    snap = backlog("/home/frappe/frappe-bench")
    snap.redis.queues[0].oldest_enqueued_at = NOW - 30  # type: ignore[union-attr]
    assert only(snap, "RQD504") == []


def test_rqd201_fires_with_a_restart_of_only_the_bench_workers() -> None:
    [finding] = only(dead_worker("/srv/my bench"), "RQD201")
    assert finding.commands[-1] == "sudo supervisorctl restart 'my bench-workers:'"
    assert "supervisorctl" not in finding.fix
    assert only(dead_worker(None), "RQD201")[0].commands[-1] == "sudo supervisorctl restart all"


def test_rqd201_near_miss_live_worker_gets_no_restart_advice() -> None:
    snap = snapshot(workers=[worker("alive", pid=100)], processes=[process(100)])
    assert only(snap, "RQD201") == []


def test_fix_prose_inlines_no_command() -> None:
    snapshots = [Snapshot.from_dict(json.loads(RECORDED.read_text())), load_snapshot(INCIDENT), backlog("/b"),
                 dead_worker("/b")]
    findings = [f for snap in snapshots for f in diagnose(snap).findings]
    assert {"RQD401", "RQD103", "RQD201", "RQD504"} <= {f.code for f in findings}
    for f in findings:
        inline = [span for span in re.findall(r"`([^`]+)`", f.fix) if span.startswith(COMMAND_WORDS)]
        assert not inline, f"{f.code} inlines {inline} in its fix; put them in commands: {f.fix}"
