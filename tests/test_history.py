"""Hung versus slow, on hand-built snapshots: a method's recent durations and RQD111 (pure, no services)."""

from __future__ import annotations

import json

import pytest

from rqdoctor.diagnose.history import UsualDuration, compare_line, percentile, usual_durations
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import MethodRuns, RunHistory, Snapshot
from rqdoctor.render.hangs import facts_lines
from rqdoctor.views import job_rows
from tests.test_diagnosis import busy_bench

METHOD = "app.jobs.work"  # the method of busy_bench's job
USUAL = [3.0, 3.5, 4.0] * 39 + [2.0, 9.0, 4.0]  # 120 runs: median 3.5 s, p95 4 s, longest 9 s


def bench_with(running: float, finished: list[float] | None = None, failed: list[float] | None = None,
               method: str = METHOD, timeout: int = 7200) -> Snapshot:
    """busy_bench's stalled job (a sleep, no CPU) with ``method``'s recent runs in the snapshot."""
    snap = busy_bench(running=running, timeout=timeout)
    assert snap.redis is not None
    runs = [MethodRuns(method, finished or [], failed or [])] if finished or failed else []
    snap.redis.history = RunHistory(runs, per_registry=100, entries=len(finished or []) + len(failed or []))
    return snap


def rqd111(snap: Snapshot) -> list[list[str]]:
    return [f.evidence for f in diagnose(snap).findings if f.code == "RQD111"]


# --- the statistics ------------------------------------------------------------------------------


def test_nearest_rank_percentiles_and_usual_durations() -> None:
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile(list(map(float, range(1, 101))), 0.95) == 95.0
    assert percentile([9.0, 1.0, 2.0, 3.0, 4.0], 0.95) == 9.0  # few runs: p95 is the longest
    usual = usual_durations(RunHistory([MethodRuns(METHOD, USUAL, [300.0, 2.0]), MethodRuns("only.failed", [], [1.0]),
                                        MethodRuns("empty")]))
    assert usual == {METHOD: UsualDuration(120, 3.5, 4.0, 9.0, 2, 300.0)}
    assert usual[METHOD].far_past() == 64.0  # max(5 x 4, 4 + 60)
    assert UsualDuration(120, 200.0, 300.0, 400.0).far_past() == 1500.0  # max(5 x 300, 300 + 60)


def test_compare_line_says_usual_duration_and_this_run() -> None:
    assert compare_line(UsualDuration(120, 3.5, 4.0, 9.0), 340.4) == (
        "this method usually takes 4 s (p95 of 120 recent runs, median 3.5 s, longest 9 s); this run is at 340 s")
    assert compare_line(UsualDuration(2, 0.25, 0.3, 0.3, 1, 31.0), None) == (
        "only 2 recent finished run(s) of this method (longest 0.3 s), too few to say what is usual; "
        "1 recent failed run(s), longest 31 s")


# --- RQD111 --------------------------------------------------------------------------------------


def test_rqd111_fires_far_past_usual_runs() -> None:
    snap = bench_with(running=340, finished=USUAL)
    (evidence,) = rqd111(snap)
    line = ("this method usually takes 4 s (p95 of 120 recent runs, median 3.5 s, longest 9 s); "
            "this run is at 340 s")
    assert line in evidence and "past max(5 x p95, p95 + 60 s) = 64 s of its usual runs" in evidence
    finding = next(f for f in diagnose(snap).findings if f.code == "RQD111")
    assert finding.severity == "warning" and finding.commands == []  # slow or hung: no kill advice from this alone
    assert finding.data["usual_p95_s"] == 4.0 and finding.data["usual_runs"] == 120
    no_progress = next(f for f in diagnose(snap).findings if f.code in ("RQD109", "RQD113"))
    assert line in no_progress.evidence  # every job finding carries the comparison


def test_rqd111_fires_just_past_the_threshold() -> None:
    assert rqd111(bench_with(running=65, finished=USUAL))  # 65 s > max(20 s, 64 s)


def test_rqd111_near_miss_within_usual_range() -> None:
    assert rqd111(bench_with(running=60, finished=USUAL)) == []  # past 15 x p95, but within p95 + 60 s
    assert rqd111(bench_with(running=8, finished=USUAL)) == []


def test_rqd111_near_miss_long_method_that_always_takes_long() -> None:
    always_long = [1800.0, 2000.0, 2400.0, 2100.0, 1900.0, 2200.0]
    snap = bench_with(running=3000, finished=always_long)
    assert rqd111(snap) == []
    no_progress = next(f for f in diagnose(snap).findings if f.code in ("RQD109", "RQD113"))
    assert any(line.startswith("this method usually takes 2400 s (p95 of 6 recent runs") for line in
               no_progress.evidence)


def test_rqd111_near_miss_too_few_runs() -> None:
    snap = bench_with(running=5000, finished=[1.0, 1.0, 1.5, 2.0])
    assert rqd111(snap) == []
    no_progress = next(f for f in diagnose(snap).findings if f.code in ("RQD109", "RQD113"))
    assert ("only 4 recent finished run(s) of this method (longest 2 s), too few to say what is usual; "
            "this run is at 5000 s") in no_progress.evidence


def test_rqd111_near_miss_no_history() -> None:
    snap = bench_with(running=5000)
    assert rqd111(snap) == []
    assert not any("this method" in line or "this run is at" in line
                   for f in diagnose(snap).findings for line in f.evidence)


def test_rqd111_near_miss_only_failed_runs_or_another_method() -> None:
    assert rqd111(bench_with(running=5000, failed=[1.0] * 20)) == []  # failures say nothing about a good run
    assert rqd111(bench_with(running=5000, finished=USUAL, method="app.jobs.other")) == []


# --- the hangs view ------------------------------------------------------------------------------


def test_hangs_view_and_json_carry_the_usual_duration() -> None:
    snap = bench_with(running=340, finished=USUAL, failed=[30.0])
    (row,) = job_rows(diagnose(snap))
    usual = row["usual_duration"]
    assert (usual["runs"], usual["p50_s"], usual["p95_s"], usual["max_s"]) == (120, 3.5, 4.0, 9.0)
    assert (usual["failed_runs"], usual["failed_max_s"]) == (1, 30.0)
    assert usual["summary"].endswith("; 1 recent failed run(s), longest 30 s; this run is at 340 s")
    assert usual["summary"] in facts_lines(row, snap.own_host)
    assert "RQD111" in row["findings"]
    json.dumps(row)

    (quiet,) = job_rows(diagnose(bench_with(running=340)))
    assert quiet["usual_duration"] is None
    assert not any("usually" in line for line in facts_lines(quiet, quiet["process_host"]))


def test_snapshot_with_history_round_trips() -> None:
    snap = bench_with(running=340, finished=USUAL, failed=[30.0])
    again = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again == snap and again.redis is not None and again.redis.history.methods[0].finished == USUAL
    old = snap.to_dict()
    del old["redis"]["history"]  # a snapshot saved before run history was read
    assert Snapshot.from_dict(old).redis.history == RunHistory()
    with pytest.raises(ValueError, match=r"history\.methods\.finished"):
        bad = snap.to_dict()
        bad["redis"]["history"]["methods"][0]["finished"] = {"a": 1.0}
        Snapshot.from_dict(bad)
