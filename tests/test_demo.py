"""``rqdoctor demo``: real workers, real hangs, the real report, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
import redis

from rqdoctor.demo import explicit_db, url_with_db
from tests.harness.services import tcp_reachable

pytestmark = pytest.mark.cli  # runs the CLI or scenario processes: not the pure unit tier

EXPECTED = {
    "demo-http": ({"http"}, "RQD103"),
    "demo-subprocess": ({"subprocess"}, "RQD104"),
    "demo-cpu": ({"cpu"}, "RQD105"),
    "demo-deadlock": ({"lock"}, "RQD106"),
    "demo-redis-lock": ({"sleep", "redis"}, "RQD106"),
}
"""Job id -> (accepted activity kinds, finding code it must get)."""


def _rqdoctor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_url_with_db_and_explicit_db() -> None:
    assert url_with_db("redis://:pw@127.0.0.1:6379", 15) == "redis://:pw@127.0.0.1:6379/15"
    assert url_with_db("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", 3) == \
        "redis://127.0.0.1:6379/3?ssl_cert_reqs=none"
    assert url_with_db("unix:///run/redis.sock?db=0", 7) == "unix:///run/redis.sock?db=7"
    assert explicit_db("redis://127.0.0.1:6379") is None
    assert explicit_db("redis://127.0.0.1:6379/") is None
    assert explicit_db("redis://127.0.0.1:6379/12") == 12
    assert explicit_db("unix:///run/redis.sock?db=4") == 4
    assert explicit_db("unix:///run/redis.sock") is None


def test_demo_without_rq_exits_2_with_one_line() -> None:
    code = "import sys; sys.modules['rq'] = None; sys.argv = ['rqdoctor', 'demo']; " \
           "from rqdoctor.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["rqdoctor demo: needs the rq library: pip install 'rqdoctor[demo]'"]
    assert proc.stdout == ""


def test_demo_with_unreachable_redis_exits_2_with_one_line() -> None:
    proc = _rqdoctor("demo", "--redis-url", "redis://127.0.0.1:1", "--no-db", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach Redis at redis://127.0.0.1:1" in lines[0] and "--redis-url" in lines[0]


def _alive(pid: int, create_time: float | None) -> bool:
    try:
        p = psutil.Process(pid)
        same = create_time is None or abs(p.create_time() - create_time) < 1.0
        return same and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _database_exists(server: str, name: str) -> bool:
    if server.startswith("postgres"):
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres",
                             connect_timeout=5) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            return bool(cur.execute("SHOW DATABASES LIKE %s", (name,)))
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.slow
def test_demo_diagnoses_every_scenario_and_removes_everything(redis_url: str) -> None:
    db_reachable = tcp_reachable("127.0.0.1", 3306) or tcp_reachable("127.0.0.1", 5432)

    proc = _rqdoctor("demo", "--format", "json", "--redis-url", redis_url)

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["command"] == "demo"
    jobs = {j["job_id"]: j for j in report["jobs"]}
    findings = {(f["code"], f["job_id"]) for f in report["findings"]}
    expected = dict(EXPECTED)
    if db_reachable:
        expected["demo-db-waiter"] = ({"db_lock_wait", "db_query"}, "RQD401")
    for job_id, (kinds, code) in expected.items():
        job = jobs.get(job_id)
        assert job is not None, f"{job_id} missing; jobs: {sorted(jobs)}\n{proc.stderr}"
        assert job["location"] == "local" and job["runner_role"] == "horse", job
        activity = job["activity"] or {}
        assert activity.get("kind") in kinds, (job_id, activity)
        assert (code, job_id) in findings, (job_id, code, sorted(findings))
    lock = jobs["demo-redis-lock"]["activity"]
    assert lock["kind"] == "redis" or lock["polling"], lock

    # nothing survives: every process of the snapshot is the demo's own (workers, horses, children)
    snapshot = report["snapshot"]
    processes = {p["pid"]: p.get("create_time") for p in snapshot["processes"]}
    processes.update({w["pid"]: None for w in snapshot["redis"]["workers"] if w["pid"] not in processes})
    assert len(processes) >= 2 * len(expected)
    assert [pid for pid, created in processes.items() if _alive(pid, created)] == []
    assert redis.Redis.from_url(redis_url).dbsize() == 0
    for server, name in {(s["server"], s["db"]) for s in (snapshot["database"] or {}).get("sessions", [])
                         if (s["db"] or "").startswith("rqdoctor_demo_")}:
        assert not _database_exists(server, name), name
    assert "removed 7 workers" in proc.stderr if db_reachable else "removed 5 workers" in proc.stderr
