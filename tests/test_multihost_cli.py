"""``rqdoctor collect`` on a real worker, and ``--from`` repeated on files, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import redis

from rqdoctor.commands.common import load_snapshot
from rqdoctor.config import dir_id
from tests.harness.bench import Bench
from tests.harness.workers import Workers, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import SCN, enqueue_many, job_spec, run_cli, selected_flavours, stop_quickly
from tests.test_multihost import host_a, host_b

pytestmark = pytest.mark.cli

FLAVOUR = next((f for f in ("rq26", "rq115", "rq30") if f in selected_flavours()), "rq26")


def _files(tmp_path: Path, b: object = None) -> tuple[Path, Path]:
    a_file, b_file = tmp_path / "a.json", tmp_path / "b.json"
    a_file.write_text(json.dumps(host_a().to_dict()))
    b_file.write_text(json.dumps((b or host_b()).to_dict()))  # type: ignore[attr-defined]
    return a_file, b_file


def test_hangs_merges_two_files_and_names_the_other_hosts_blocker(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    result = run_cli("hangs", "--from", str(a), "--from", str(b), "--format", "json")
    assert result.code == 1, result.stderr
    report = json.loads(result.stdout)
    assert [h["name"] for h in report["snapshot"]["hosts"]] == ["host-a", "host-b"]
    rows = {j["job_id"]: j for j in report["jobs"]}
    assert (rows["jb"]["pid"], rows["jb"]["process_host"], rows["jb"]["location"]) == (4301, "host-b", "local")
    assert (rows["jc"]["location"], rows["jc"]["pid"]) == ("remote", None)
    blocker = rows["ja"]["blocker"]
    assert (blocker["pid"], blocker["host"], blocker["job_id"]) == (4301, "host-b", "jb")
    text = run_cli("hangs", "--from", str(a), "--from", str(b))
    assert "3 running job(s), 2 on the 2 hosts collected (host-a, host-b)" in text.stdout
    assert "pid 4301 (horse) on host-b of worker wb" in text.stdout
    assert "pid 4300 (horse) on host-a of worker wa" in text.stdout


def test_hangs_refuses_files_of_another_redis_in_one_line(tmp_path: Path) -> None:
    other = host_b()
    assert other.redis is not None
    other.redis.run_id = "b" * 40
    a, b = _files(tmp_path, other)
    result = run_cli("hangs", "--from", str(a), "--from", str(b))
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"rqdoctor: error: {b}: another Redis server") and "Traceback" not in result.stderr


def test_stuck_kill_refuses_merged_snapshots(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    result = run_cli("stuck", "--from", str(a), "--from", str(b), "--kill", "--dry-run")
    assert result.code == 2 and "run `rqdoctor stuck --kill` on the host each process runs on" in result.stderr


def test_stack_of_a_pid_two_hosts_have_asks_which_and_takes_host_colon_pid(tmp_path: Path) -> None:
    a, b = _files(tmp_path)  # both hosts run a worker with pid 4242
    both = ("--from", str(a), "--from", str(b))
    ambiguous = run_cli("stack", "4242", *both)
    assert ambiguous.code == 2 and ambiguous.stdout == "", ambiguous
    assert ambiguous.stderr.startswith("rqdoctor: error: pid 4242 is on several hosts: host-a, host-b")
    assert "rqdoctor stack host-a:4242" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    one = run_cli("stack", "host-b:4242", *both, "--format", "json")
    assert one.code in (0, 1), one
    [row] = json.loads(one.stdout)["jobs"]
    assert (row["pid"], row["process_host"], row["worker"]) == (4242, "host-b", "wb"), row
    assert run_cli("stack", "4301", *both, "--format", "json").code in (0, 1)  # only host B has 4301: no question
    unknown = run_cli("stack", "host-z:4242", *both)
    assert unknown.code == 2 and "no host 'host-z' in this snapshot (its hosts: host-a, host-b)" in unknown.stderr


def test_from_standard_input_cannot_be_merged(tmp_path: Path) -> None:
    a, _ = _files(tmp_path)
    result = run_cli("hangs", "--from", str(a), "--from", "-")
    assert result.code == 2 and "standard input cannot be merged" in result.stderr


def test_collect_with_a_dead_redis_still_writes_a_loadable_snapshot_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("collect", "--redis-url", "redis://127.0.0.1:1/0", "--no-db", "--timeout", "5")
    assert result.code == 2, result
    assert "rqdoctor: error: Redis at redis://127.0.0.1:1/0: cannot connect" in result.stderr
    saved = tmp_path / "dead.json"
    saved.write_text(result.stdout)
    snap = load_snapshot(saved)
    assert snap.redis is None and snap.host == socket.gethostname()
    assert [e.probe for e in snap.errors][:1] == ["redis"]


@pytest.mark.integration
@pytest.mark.slow
def test_collect_writes_this_hosts_snapshot_of_a_running_job(tmp_path: Path, bench: Bench, workers: Workers,
                                                            redis_client: redis.Redis) -> None:
    worker = workers.frappe(bench, FLAVOUR, ("short",))
    wait_for_worker_registered(redis_client, worker, timeout=60)
    [job_id] = enqueue_many(FLAVOUR, [job_spec(FLAVOUR, bench, "short", SCN + "sleep_for", {"seconds": 120})])
    started = wait_for_job_started(redis_client, job_id, worker, timeout=60)
    assert started.horse is not None
    out = tmp_path / "here.json"
    try:
        result = run_cli("collect", "--bench", str(bench.root), "--no-db", "--timeout", "30", "-o", str(out))
    finally:
        stop_quickly(workers)
    assert result.code == 0, result
    assert result.stdout == "" and f"written to {out}" in result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    snap = load_snapshot(out)
    assert snap.hosts == [] and snap.host == socket.gethostname()
    assert snap.redis is not None and snap.redis.run_id == redis_client.info("server")["run_id"]
    # what stuck, scheduler and report read besides: the job-hash scan and the scheduler's lock and process
    assert snap.redis.job_scan is not None and snap.health is not None and snap.health.processes_read
    assert snap.health.lock is not None and snap.health.lock.path == str(bench.root / "config" / "scheduler_process")
    [horse] = [p for p in snap.processes if p.pid == started.horse.pid]
    assert snap.target.bench_dirs == [dir_id(bench.root), dir_id(bench.sites_path)]
    assert horse.cwd_dir == dir_id(bench.sites_path)  # its cwd by directory identity, as from any namespace
    assert horse.identity is not None and horse.identity.host == snap.host
    assert any(s.pid == horse.pid and s.samples for s in snap.stacks)
    report = json.loads(run_cli("hangs", "--from", str(out), "--format", "json", "--min-age", "0").stdout)
    [row] = [j for j in report["jobs"] if j["job_id"] == job_id]
    assert (row["pid"], row["process_host"], row["location"]) == (horse.pid, snap.host, "local")
