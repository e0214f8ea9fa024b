"""End to end: ``rqdoctor stack PID|JOB_ID`` against real rq 1.15.1 / 2.6.1 / 3.0 workers.

One bench per flavour with one job blocked on an HTTP tarpit (job ids in each flavour's shape:
``site::uuid``, ``site||uuid``, plain hex) and one plain Python process that sleeps; the console
script runs as a subprocess and the JSON is checked against pids found with psutil.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.workers import StartedJob, WorkerProcess, Workers, text_client, wait_for_job_started
from tests.test_hangs_cli import (
    FLAVOURS,
    MIN_AGE,
    SCN,
    Run,
    _started_at,
    bench_args,
    brief,
    enqueue_many,
    job_spec,
    run_cli,
    stop_quickly,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAME_VIEW = ("job_id", "queue", "site", "method", "status", "timeout_s", "worker", "host", "location", "pid",
             "runner_role", "findings")
"""Row fields that must not differ between ``stack <horse pid>`` and ``stack <job id>``."""


@dataclass
class StackLab:
    """A bench with one stuck job and a plain sleeping Python process."""

    flavour: str
    bench: Bench
    tarpit: scenarios.Tarpit
    worker: WorkerProcess
    started: StartedJob
    sleeper: subprocess.Popen[bytes]

    @property
    def job_id(self) -> str:
        return self.started.job_id

    def stack(self, subject: str | int, *extra: str) -> Run:
        return run_cli("stack", str(subject), *bench_args(self.bench), *extra)


@pytest.fixture(scope="module", params=FLAVOURS)
def slab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackLab]:
    flavour = request.param
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis_db())
        bench = Bench.create(tmp_path_factory.mktemp(f"stack-{flavour}") / "frappe-bench", redis_url)
        r = text_client(redis_url)
        stack.callback(r.close)
        pit = stack.enter_context(scenarios.tarpit())
        workers = stack.enter_context(Workers())
        stack.callback(stop_quickly, workers)
        worker = workers.frappe(bench, flavour, ("short",))
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        stack.callback(sleeper.wait, 5)
        stack.callback(sleeper.kill)
        (job_id,) = enqueue_many(flavour, [job_spec(flavour, bench, "short", SCN + "http_no_timeout",
                                                    {"url": pit.url})])
        started = wait_for_job_started(r, job_id, worker, timeout=60)
        assert pit.wait_for_connection(10)
        time.sleep(max(0.0, MIN_AGE + 0.5 - (time.time() - _started_at(started))))
        yield StackLab(flavour, bench, pit, worker, started, sleeper)


def _only_row(run: Run) -> dict[str, Any]:
    report = run.report
    assert report["command"] == "stack", run
    assert len(report["jobs"]) == 1, [j["job_id"] for j in report["jobs"]]
    return report["jobs"][0]


def test_stack_by_horse_pid_and_by_job_id_show_the_same_job(slab: StackLab) -> None:
    horse = slab.started.horse
    assert horse is not None and horse.pid != slab.worker.pid
    by_pid, by_id = slab.stack(horse.pid), slab.stack(slab.job_id)
    assert by_pid.code == 1 and by_id.code == 1, (by_pid, by_id)
    row_pid, row_id = _only_row(by_pid), _only_row(by_id)
    assert row_pid["job_id"] == slab.job_id and row_pid["pid"] == horse.pid, brief(row_pid)
    assert {k: row_pid[k] for k in SAME_VIEW} == {k: row_id[k] for k in SAME_VIEW}
    peer = f"127.0.0.1:{slab.tarpit.port}"
    for row in (row_pid, row_id):
        assert row["runner_role"] == "horse" and row["findings"] == ["RQD103"], brief(row)
        assert row["activity"]["kind"] == "http" and row["activity"]["peer"] == peer, brief(row)
        assert row["threads"] and row["threads"][0]["frames"], brief(row)
    for run in (by_pid, by_id):
        assert [(f["code"], f["job_id"]) for f in run.report["findings"]] == [("RQD103", slab.job_id)], run


def test_stack_of_a_plain_python_process(slab: StackLab) -> None:
    run = slab.stack(slab.sleeper.pid)
    assert run.code == 0, run
    row = _only_row(run)
    assert row["pid"] == slab.sleeper.pid and row["runner_role"] == "process", brief(row)
    assert row["job_id"] == f"pid {slab.sleeper.pid}" and row["findings"] == [], brief(row)
    assert row["activity"]["kind"] == "sleep", brief(row)
    assert row["activity"]["where"]["name"] == "<module>", brief(row)


def test_stack_of_a_worker_parent(slab: StackLab) -> None:
    """The worker parent waits for its horse: ``idle``, with the horse as the child waited on."""
    run = slab.stack(slab.worker.pid)
    row = _only_row(run)
    assert row["pid"] == slab.worker.pid and row["runner_role"] == "worker", brief(row)
    assert row["activity"]["kind"] == "idle", brief(row)
    assert row["activity"]["child_pid"] == slab.started.horse.pid, brief(row)


def _pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


@pytest.mark.parametrize("subject", ["pid", "job"])
def test_unknown_subject_exits_2_with_one_error_line(redis_url: str, subject: str) -> None:
    missing = str(_pid_max()) if subject == "pid" else "site1.local::no-such-job"  # pids are < pid_max
    run = run_cli("stack", missing, "--redis-url", redis_url, "--format", "json", "--no-db")
    assert run.code == 2, run
    assert run.stdout == "" and "Traceback" not in run.stderr, run
    lines = run.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("rqdoctor: error: ")]
    assert len(errors) == 1 and missing in errors[0], run
    assert all(ln.startswith(("rqdoctor: error: ", "rqdoctor: hint: ")) for ln in lines), run
