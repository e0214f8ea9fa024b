"""``rqdoctor stuck`` as a command: bad input, --kill refusals, JSON, and the job-hash scan's bounds."""

from __future__ import annotations

import json
import time

import pytest
import redis

from rqdoctor.deadline import Deadline
from rqdoctor.model import ProbeError, RedisState
from rqdoctor.probes.job_scan import scan_jobs
from tests.test_hangs_cli import run_cli


@pytest.mark.cli
@pytest.mark.parametrize("value", ["5x", "-3m", "soon", "0"])
def test_bad_older_than_is_one_line_and_exit_2(value: str) -> None:
    run = run_cli("stuck", "--older-than", value, "--redis-url", "redis://127.0.0.1:1/0")
    assert run.code == 2, run
    assert run.stderr.strip().splitlines() == [
        f"rqdoctor: error: --older-than {value!r}: not a duration (use e.g. 90s, 30m, 2h, 1d)"], run


@pytest.mark.cli
def test_kill_refuses_a_saved_snapshot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    saved = tmp_path / "s.json"
    saved.write_text("{}")
    run = run_cli("stuck", "--kill", "--from", str(saved))
    assert run.code == 2 and "Traceback" not in run.stderr, run
    assert run.stderr.strip().splitlines() == [
        "rqdoctor: error: --kill cannot act on --from FILE: a saved snapshot cannot be acted on"], run


def test_json_of_an_empty_redis_and_its_round_trip(redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = run_cli("stuck", "--redis-url", redis_url, "--format", "json", "--timeout", "20")
    assert run.code == 0, run
    report = json.loads(run.stdout)
    assert report["command"] == "stuck" and report["findings"] == [] and report["remedies"] == []
    assert report["snapshot"]["redis"]["job_scan"]["complete"] is True
    saved = tmp_path / "stuck.json"
    saved.write_text(run.stdout)
    again = run_cli("stuck", "--from", str(saved))
    assert again.code == 0 and "job hashes: 0 key(s) scanned (complete)" in again.stdout, again


def test_scan_is_bounded_and_says_so_and_known_ids_are_read_anyway(redis_client: redis.Redis,
                                                                   redis_url: str) -> None:
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(5000):  # a keyspace this small in one SCAN reply would never be partial
            pipe.hset(f"rq:job:j{n:04d}", mapping={"status": "finished", "origin": "q"})
        pipe.execute()
    known = "site1.local::scheduled_job::app.tasks.daily"
    redis_client.hset(f"rq:job:{known}", mapping={"status": "queued", "origin": "q", "enqueued_at": old})
    client = redis.Redis.from_url(redis_url)
    errors: list[ProbeError] = []
    try:
        scan = scan_jobs(client, RedisState(server_time=time.time()), None, Deadline(20), errors,
                         known_ids=[known], limit=1000)
    finally:
        client.close()
    assert not scan.complete and scan.stopped_by == "limit" and 1000 <= scan.keys_seen < 5001
    assert [e.kind for e in errors] == ["truncated"]
    [job] = [j for j in scan.jobs if j.job_id == known]
    assert job.checked and job.held_by == [] and (job.direct or scan.keys_seen >= 1000)


@pytest.mark.cli
def test_kill_flags_without_kill_are_refused() -> None:
    run = run_cli("stuck", "--dry-run", "--requeue", "--redis-url", "redis://127.0.0.1:1/0")
    assert run.code == 2, run
    assert run.stderr.strip().splitlines() == ["rqdoctor: error: --dry-run, --requeue only apply with --kill"], run
