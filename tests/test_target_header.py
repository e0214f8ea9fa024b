"""The report's target header and the bench-id findings (RQD505, RQD506), on hand-built snapshots (pure)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import HiddenQueue, HiddenWorker, ProbeError, QueueInfo, RedisState, Snapshot, TargetInfo
from rqdoctor.render import header, markdown, text
from rqdoctor.render import json as json_render

URL = "redis://:***@127.0.0.1:6379/11"


def target(**kwargs: object) -> TargetInfo:
    base: dict[str, object] = {
        "redis_url": URL, "redis_url_source": "--redis-url", "bench_path": "/srv/mine",
        "bench_source": "--bench", "bench_id": "mine", "bench_id_source": "common_site_config.json bench_id",
        "queue_filter": "mine:"}
    base.update(kwargs)
    return TargetInfo(**base)  # type: ignore[arg-type]


def other_bench(queued: int = 3, started: int = 2, busy: int = 2) -> tuple[list[HiddenQueue], list[HiddenWorker]]:
    """What a second bench (``theirs``) with jobs looks like once the filter hid it."""
    queues = [HiddenQueue("theirs:short", queued=queued, started=started), HiddenQueue("theirs:long", 0, 0),
              HiddenQueue("theirs:custom", registered=False)]
    workers = [HiddenWorker(f"w{i}", "busy" if i < busy else "idle", ["theirs:short", "theirs:long"])
               for i in range(4)]
    return queues, workers


def snapshot(tgt: TargetInfo | None = None, queues: list[QueueInfo] | None = None,
             hidden: tuple[list[HiddenQueue], list[HiddenWorker]] | None = None,
             redis: bool = True) -> Snapshot:
    hidden_queues, hidden_workers = hidden or ([], [])
    state = RedisState(server_time=1_800_000_000.0, queues=queues or [], hidden_queues=hidden_queues,
                       hidden_workers=hidden_workers, hidden_counted=True) if redis else None
    return Snapshot(host="vm", generated_at=1_800_000_000.0, target=tgt or target(), redis=state)


def codes(snap: Snapshot) -> list[str]:
    return [f.code for f in diagnose(snap).findings]


def rendered(snap: Snapshot) -> str:
    console = Console(record=True, width=200, file=io.StringIO(), highlight=False)
    console.print(text.facts(header.fact_rows(snap)))
    return console.export_text()


# --- RQD505 / RQD506 ------------------------------------------------------------------------------------------

def test_rqd505_fires_when_the_bench_id_matches_nothing_and_other_queues_have_jobs() -> None:
    snap = snapshot(hidden=other_bench())
    (finding,) = [f for f in diagnose(snap).findings if f.code in ("RQD505", "RQD506")]
    assert (finding.code, finding.severity, finding.subject) == ("RQD505", "warning", "bench id mine")
    evidence = "\n".join(finding.evidence)
    assert "bench /srv/mine (--bench), bench id mine (common_site_config.json bench_id)" in evidence
    assert f"no queue named mine:* in {URL}" in evidence
    assert "theirs:* : 3 queue(s), 3 queued, 2 started, 4 worker(s) (2 busy)" in evidence
    assert "bench_id" in finding.fix and "--all-queues" in finding.fix
    assert finding.commands == ["redis-cli -h 127.0.0.1 -p 6379 -n 11 --askpass SMEMBERS rq:queues",
                                "bench set-config -g bench_id theirs"]
    assert finding.data["prefixes_with_jobs"]["theirs"]["started"] == 2


def test_rqd505_fires_on_busy_workers_alone_and_lists_every_prefix_with_jobs() -> None:
    queues = [HiddenQueue("a:short", 0, 0), HiddenQueue("b:short", 5, 0), HiddenQueue("idle:short", 0, 0)]
    workers = [HiddenWorker("wa", "busy", ["a:short"])]
    (finding,) = [f for f in diagnose(snapshot(hidden=(queues, workers))).findings if f.code == "RQD505"]
    assert [line.split(":*")[0] for line in finding.evidence if ":* :" in line] == ["b", "a"]  # most jobs first
    assert len(finding.commands) == 1  # two prefixes have jobs: no single bench_id to suggest


def test_rqd505_near_miss_own_queue_exists_even_empty() -> None:
    own = [QueueInfo("mine:short", registered=False)]  # a worker of this bench listens on it, nothing queued
    assert not {"RQD505", "RQD506"} & set(codes(snapshot(queues=own, hidden=other_bench())))


def test_rqd505_near_miss_without_a_queue_filter() -> None:
    for tgt in (target(queue_filter=None, all_queues=True),
                target(bench_path=None, bench_id=None, queue_filter=None, bench_source="none: …")):
        assert not {"RQD505", "RQD506"} & set(codes(snapshot(tgt, hidden=other_bench())))


def test_rqd505_near_miss_redis_not_read() -> None:
    assert not {"RQD505", "RQD506"} & set(codes(snapshot(redis=False)))


def test_rqd506_fires_when_nothing_matches_and_the_other_queues_are_idle() -> None:
    (finding,) = [f for f in diagnose(snapshot(hidden=other_bench(0, 0, 0))).findings
                  if f.code in ("RQD505", "RQD506")]
    assert (finding.code, finding.severity) == ("RQD506", "info")
    assert any("theirs:* : 3 queue(s), 0 queued, 0 started, 4 worker(s) (0 busy)" in e for e in finding.evidence)


def test_rqd506_near_miss_empty_redis() -> None:
    assert not {"RQD505", "RQD506"} & set(codes(snapshot()))


def test_a_mismatched_bench_never_reads_no_problems_found() -> None:
    for hidden in (other_bench(), other_bench(0, 0, 0)):
        snap = snapshot(hidden=hidden)
        line = text.summary("0 queues", diagnose(snap).findings, snap.errors).plain
        assert "no problems" not in line, line


# --- the header -----------------------------------------------------------------------------------------------

def test_header_names_bench_redis_filter_and_what_was_hidden() -> None:
    snap = snapshot(queues=[QueueInfo("mine:short")], hidden=other_bench())
    out = rendered(snap)
    assert "bench:    /srv/mine (from --bench)" in out
    assert "bench id: mine (common_site_config.json bench_id)" in out
    assert f"redis:    {URL} (from --redis-url)" in out
    assert ("queues:   mine:* only; 3 queue(s) (3 queued, 2 started) and 4 worker(s) (2 busy) of other benches "
            "hidden; --all-queues shows them") in out
    md = markdown.facts(header.fact_rows(snap))
    assert "- **queues:** mine:\\* only; 3 queue(s)" in md and "- **bench:** /srv/mine (from --bench)" in md
    data = header.as_dict(snap)
    assert data["hidden"] == {"queues": 3, "queued": 3, "started": 2, "workers": 4, "busy_workers": 2}
    assert (data["bench_path"], data["queue_filter"], data["redis_read"]) == ("/srv/mine", "mine:", True)


def test_header_without_a_bench_says_why_and_that_every_queue_is_shown() -> None:
    why = "none: Redis chosen by --redis-url without --bench (running workers' benches are not adopted)"
    snap = snapshot(target(bench_path=None, bench_id=None, queue_filter=None, bench_source=why))
    out = rendered(snap)
    assert f"bench:    {why}" in out and "bench id:" not in out
    assert "queues:   all (no bench chosen" in out
    assert header.as_dict(snap)["hidden"] is None
    assert "all (--all-queues)" in rendered(snapshot(target(queue_filter=None, all_queues=True)))


def test_header_of_an_older_snapshot_does_not_claim_nothing_was_hidden() -> None:
    snap = snapshot()
    assert snap.redis is not None
    snap.redis.hidden_counted = False  # as read back from a snapshot saved before the probe counted them
    out = rendered(snap)
    assert "what it hid was not recorded" in out and "nothing else" not in out
    assert header.as_dict(snap)["hidden"] is None
    assert "nothing else in this Redis" in rendered(snapshot())


def test_header_says_when_redis_was_not_read() -> None:
    snap = snapshot(redis=False)
    snap.errors.append(ProbeError("redis", "unreachable", "Redis at redis://127.0.0.1:1/0: cannot connect"))
    out = rendered(snap)
    assert "NOT READ: Redis at redis://127.0.0.1:1/0: cannot connect" in out
    assert "could not be joined" in out
    assert header.as_dict(snap)["redis_read"] is False


def test_json_report_starts_with_the_target_and_round_trips() -> None:
    snap = snapshot(hidden=other_bench())
    report = json_render.report("workers", diagnose(snap), workers=[])
    assert list(report)[:5] == ["schema_version", "command", "host", "generated_at", "target"]
    assert report["target"]["lines"][1] == "bench: /srv/mine (from --bench)"
    again = Snapshot.from_dict(json.loads(json.dumps(report["snapshot"])))
    assert again.redis is not None and again.redis.hidden_queues == snap.redis.hidden_queues  # type: ignore[union-attr]
    assert again.redis.hidden_workers == snap.redis.hidden_workers  # type: ignore[union-attr]
    assert again.target.all_queues is False
