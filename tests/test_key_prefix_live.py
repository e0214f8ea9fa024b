"""rq 3.0 with ``RQ_KEY_PREFIX=myapp``: a real worker running a hanging job, read by the real CLI.

Discovery (the worker's ``/proc/<pid>/environ``) and ``--key-prefix`` both find it; ``workers`` and ``queues``
list it; with the wrong prefix rqdoctor says it saw no worker and names the prefix it found (RQD507);
``stuck --kill`` on a started entry no process runs writes only ``myapp:`` keys.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

import psutil
import pytest
import redis

from tests.harness.bench import Bench
from tests.harness.venvs import ensure_venv, venv_python
from tests.harness.workers import Workers, find_horse
from tests.test_hangs_cli import _ENQUEUE_MANY, SCN, bench_args, job_spec, run_cli, selected_flavours

pytestmark = [pytest.mark.integration, pytest.mark.cli]

FLAVOUR = "rq30"
PREFIX = "myapp"


@pytest.fixture
def hanging(bench: Bench, workers: Workers, redis_client: redis.Redis) -> dict[str, Any]:
    """A Frappe worker under ``RQ_KEY_PREFIX=myapp`` running a 300 s job: its pid, horse and job id."""
    if FLAVOUR not in selected_flavours():
        pytest.skip(f"{FLAVOUR} not selected")
    env = {"RQ_KEY_PREFIX": PREFIX}
    worker = workers.frappe(bench, FLAVOUR, ("short",), env=env)
    wait_until(lambda: any(_pid_of(redis_client, k) in {p.pid for p in worker.tree()}
                           for k in redis_client.smembers(f"{PREFIX}:workers")), worker.log_tail)
    spec = job_spec(FLAVOUR, bench, "short", SCN + "sleep_for", {"seconds": 300})
    proc = subprocess.run([str(venv_python(ensure_venv(FLAVOUR))), "-c", _ENQUEUE_MANY, json.dumps([spec])],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    job_id = spec["job_id"]
    wait_until(lambda: redis_client.hget(f"{PREFIX}:job:{job_id}", "status") == "started"
               and find_horse(worker.pid) is not None, worker.log_tail)
    horse = find_horse(worker.pid)
    assert horse is not None
    worker.remember(horse)
    assert not redis_client.exists("rq:workers"), "the worker must not write unprefixed keys"
    return {"worker": worker, "horse": horse.pid, "job_id": job_id}


def wait_until(condition: Any, describe: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s\n{describe()}")
        time.sleep(0.2)


def _pid_of(r: redis.Redis, key: str) -> int:
    return int(r.hget(key, "pid") or -1)


def cli_json(*args: str) -> dict[str, Any]:
    run = run_cli(*args, "--timeout", "30", timeout=90)
    assert run.code in (0, 1), run
    return json.loads(run.stdout)


def test_hangs_finds_the_job_by_discovery_and_by_flag(bench: Bench, hanging: dict[str, Any]) -> None:
    found = cli_json("hangs", *bench_args(bench, min_age=0))
    assert found["snapshot"]["target"]["key_prefix"] == PREFIX
    source = found["snapshot"]["target"]["key_prefix_source"]
    # rq 3.0 sets its title with setproctitle, which blanks /proc/<pid>/environ: the title's worker name is
    # then looked up in the workers sets of this Redis
    assert "RQ_KEY_PREFIX of running workers" in source or f"{PREFIX}:workers of this Redis lists local" in source
    jobs = {j["job_id"]: j for j in found["jobs"]}
    assert hanging["job_id"] in jobs, found["jobs"]
    flagged = cli_json("hangs", *bench_args(bench, min_age=0), "--key-prefix", PREFIX)
    assert flagged["snapshot"]["target"]["key_prefix_source"] == "--key-prefix"
    assert hanging["job_id"] in {j["job_id"] for j in flagged["jobs"]}
    text = run_cli("hangs", *bench_args(bench, fmt="text", min_age=0), timeout=90)
    assert f"key prefix: {PREFIX}" in " ".join(text.stdout.split()) or f"key prefix {PREFIX}" in text.stdout, text


def test_the_environment_of_a_worker_like_process_names_its_prefix() -> None:
    """The /proc/<pid>/environ path, on a process that looks like a worker and keeps its environment."""
    from rqdoctor.keyprefix import workers_prefixes

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "rqworker"],
                            env={**os.environ, "RQ_KEY_PREFIX": "envapp"})
    try:
        wait_until(lambda: "RQ_KEY_PREFIX" in psutil.Process(proc.pid).environ(), lambda: "no environment")
        seen, _, _ = workers_prefixes()
        assert proc.pid in seen.get("envapp", []), seen
    finally:
        proc.kill()
        proc.wait(10)


def test_workers_and_queues_list_it(bench: Bench, hanging: dict[str, Any]) -> None:
    workers = cli_json("workers", "--bench", str(bench.root), "--format", "json")
    assert hanging["worker"].pid in {w.get("pid") for w in workers["snapshot"]["redis"]["workers"]}
    assert all(w["key"].startswith(f"{PREFIX}:worker:") for w in workers["snapshot"]["redis"]["workers"])
    queues = cli_json("queues", "--bench", str(bench.root), "--format", "json")
    short = [q for q in queues["snapshot"]["redis"]["queues"] if q["name"] == bench.queue("short")]
    assert short and short[0]["started"] == 1, queues["snapshot"]["redis"]["queues"]


def test_the_wrong_prefix_says_no_worker_and_names_the_one_found(bench: Bench, hanging: dict[str, Any]) -> None:
    report = cli_json("hangs", *bench_args(bench, min_age=0), "--key-prefix", "rq")
    assert report["snapshot"]["redis"]["workers"] == []
    [finding] = [f for f in report["findings"] if f["code"] == "RQD507"]
    assert PREFIX in finding["data"]["other_prefixes"]
    assert any(f"--key-prefix {PREFIX}" in c for c in finding["commands"])


def test_stuck_kill_moves_the_dead_entry_under_the_prefix(bench: Bench, hanging: dict[str, Any],
                                                          redis_client: redis.Redis) -> None:
    worker, horse, job_id = hanging["worker"], hanging["horse"], hanging["job_id"]
    os.kill(worker.pid, signal.SIGKILL)
    os.killpg(horse, signal.SIGKILL)  # the horse we started, by its group
    for pid in (worker.pid, horse):
        with suppress(psutil.Error):
            psutil.Process(pid).wait(10)
    wip = f"{PREFIX}:wip:{bench.queue('short')}"
    assert redis_client.zcard(wip) == 1
    unflagged = cli_json("stuck", "--bench", str(bench.root), "--format", "json")  # no live worker to ask
    assert [f["data"]["other_prefixes"] for f in unflagged["findings"] if f["code"] == "RQD507"] == [[PREFIX]]
    plan = cli_json("stuck", "--bench", str(bench.root), "--format", "json", "--kill", "--dry-run",
                    "--key-prefix", PREFIX)
    assert [(p["action"], job_id in p["description"]) for p in plan["plan"]] == [("fail_started", True)], plan
    assert redis_client.zcard(wip) == 1, "a dry run changes nothing"
    run = run_cli("stuck", "--bench", str(bench.root), "--kill", "--yes", "--key-prefix", PREFIX,
                  "--audit-log", str(bench.root / "audit.log"), "--timeout", "30", timeout=120)
    assert run.code in (0, 1), run
    assert redis_client.zcard(wip) == 0, run
    assert redis_client.zscore(f"{PREFIX}:failed:{bench.queue('short')}", job_id) is not None, run
    assert redis_client.hget(f"{PREFIX}:job:{job_id}", "status") == "failed"
    assert not redis_client.exists(f"rq:job:{job_id}") and not redis_client.exists(f"rq:failed:{bench.queue('short')}")
