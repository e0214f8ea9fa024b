"""Healthy loops are not hangs; real lock polls are. Real rq workers, 20 consecutive ``hangs`` runs.

One bench (rq 1.15.1) runs five jobs at once, each on its own worker: three healthy loops that sleep
between real work (hashing and sorting between 20 ms sleeps; an INSERT + COMMIT into MariaDB every
0.2 s; a small TCP message to a local listener every 0.2 s) and two real lock waits (the
``while client.get(key) is not None: time.sleep(0.2)`` poll of a key nobody deletes, and redis-py's
``Lock.acquire`` on a lock held elsewhere). ``rqdoctor hangs`` runs 20 times with its default
``--samples``/``--interval``: the healthy loops never get a warning or critical finding, the lock waits
get RQD106 every time.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import DBInfo, private_redis_db
from tests.harness.workers import Workers, text_client, wait_for_job_started, wait_for_worker_registered
from tests.test_hangs_cli import _started_at, brief, enqueue_many, findings_of, job_spec, run_cli, stop_quickly

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 20
SCN = "rqdoctor.scenarios."
POLL_KEY = "rqdoctor-test:lock:progress"
LOCK_NAME = "rqdoctor-test:redis-py-lock"
HEALTHY = ("naps", "save", "send")
LOCKED = ("poll", "acquire")
SEVERE = ("critical", "warning")


def _specs(flavour: str, bench: Bench, redis_url: str, mariadb: DBInfo, port: int) -> dict[str, dict[str, Any]]:
    db = mariadb.scenario_kwargs(table="rqd_saves", seconds=600)
    return {
        "naps": job_spec(flavour, bench, "naps", SCN + "work_between_naps", {"seconds": 600}, job_timeout=900),
        "save": job_spec(flavour, bench, "save", SCN + "save_every", db, job_timeout=900),
        "send": job_spec(flavour, bench, "send", SCN + "send_every",
                         {"host": "127.0.0.1", "port": port, "seconds": 600}, job_timeout=900),
        "poll": job_spec(flavour, bench, "poll", SCN + "redis_lock_poll",
                         {"redis_url": redis_url, "key": POLL_KEY, "seconds": 600}, job_timeout=900),
        "acquire": job_spec(flavour, bench, "acquire", SCN + "redis_lock_acquire",
                            {"redis_url": redis_url, "name": LOCK_NAME, "seconds": 600}, job_timeout=900),
    }


@pytest.mark.parametrize("rq_flavour", ["rq115"])
def test_healthy_loops_never_severe_lock_polls_always_rqd106(rq_flavour: str, tmp_path: Path,
                                                             mariadb: DBInfo) -> None:
    labels = (*HEALTHY, *LOCKED)
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis_db())
        bench = Bench.create(tmp_path / "frappe-bench", redis_url,
                             workers={q: {"timeout": 900, "background_workers": 1} for q in labels})
        r = text_client(redis_url)
        stack.callback(r.close)
        listener = stack.enter_context(scenarios.Listener())
        workers = stack.enter_context(Workers())
        stack.callback(stop_quickly, workers)
        by_label = {label: workers.frappe(bench, rq_flavour, (label,)) for label in labels}
        for w in by_label.values():
            wait_for_worker_registered(r, w, timeout=60)
        r.set(POLL_KEY, "held by a job that died")
        r.set(LOCK_NAME, "token-of-another-process", ex=900)
        specs = _specs(rq_flavour, bench, redis_url, mariadb, listener.port)
        enqueue_many(rq_flavour, list(specs.values()))
        ids = {label: spec["job_id"] for label, spec in specs.items()}
        started = {label: wait_for_job_started(r, ids[label], by_label[label], timeout=60) for label in labels}
        time.sleep(max(0.0, 2.5 - min(time.time() - _started_at(s) for s in started.values())))

        severe: list[str] = []
        missed: list[str] = []
        progress: dict[str, set[str]] = {label: set() for label in labels}
        for n in range(RUNS):
            run = run_cli("hangs", "--bench", str(bench.root), "--format", "json", "--no-db", "--min-age", "2")
            assert run.code in (0, 1), run
            jobs = {j["job_id"]: j for j in run.report["jobs"]}
            for label in labels:
                job = jobs.get(ids[label])
                assert job is not None, f"run {n}: {label} missing\n{run}"
                progress[label].add(job["activity"]["progress"])
                found = findings_of(run.report, ids[label])
                if label in HEALTHY:
                    severe += [f"run {n} {label}: {f['code']} {f['evidence']}\n{brief(job)}"
                               for f in found if f["severity"] in SEVERE]
                elif "RQD106" not in [f["code"] for f in found]:
                    missed.append(f"run {n} {label}: {[f['code'] for f in found]}\n{brief(job)}")
        assert not severe, "\n\n".join(severe[:5])
        assert not missed, "\n\n".join(missed[:5])
        assert progress["poll"] == progress["acquire"] == {"blocked"}, progress
        assert not progress["naps"] & {"blocked", "spinning"}, progress
        assert listener.received > 0
        rows = r.exists(POLL_KEY)  # the poll never ended: the key is still there
        assert rows == 1
