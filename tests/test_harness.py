"""The integration harness itself: benches, scenarios, real workers of every rq flavour."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from rqdoctor import scenarios
from tests.harness.bench import Bench, derive_bench_id
from tests.harness.services import DBInfo, _sql
from tests.harness.venvs import RQ_FLAVOURS, venv_python
from tests.harness.workers import (
    WorkerProcess,
    Workers,
    enqueue,
    find_horse,
    wait_for_job_started,
    wait_for_job_status,
    wait_for_worker_registered,
)

pytestmark = pytest.mark.cli  # runs the CLI or scenario processes: not the pure unit tier

RQ_VERSIONS = {"rq115": "1.15.1", "rq116": "1.16.2", "rq26": "2.6.1", "rq30": "3.0."}
SLEEP = "rqdoctor.scenarios.sleep_for"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _shim_bench_id(bench: Bench) -> str:
    code = "from frappe.utils import get_bench_id; print(get_bench_id())"
    env = {**os.environ, "PYTHONPATH": bench.pythonpath}
    env.pop("FRAPPE_BENCH_ROOT", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=bench.sites_path, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# --- no services needed ------------------------------------------------------------------


def test_bench_layout_and_derived_id(tmp_path: Path) -> None:
    bench = Bench.create(tmp_path / "frappe-bench", "redis://127.0.0.1:6379/11",
                         workers={"heavy": {"timeout": 5000, "background_workers": 1}})
    sites = bench.sites_path
    common = json.loads((sites / "common_site_config.json").read_text())
    assert common == {"redis_queue": "redis://127.0.0.1:6379/11",
                      "workers": {"heavy": {"timeout": 5000, "background_workers": 1}}}
    assert (sites / "apps.txt").read_text() == "frappe\n"
    for site in ("site1.local", "site2.local"):
        conf = json.loads((sites / site / "site_config.json").read_text())
        assert conf["db_type"] == "mariadb" and conf["db_name"].startswith("_")
        assert conf["db_password"] == bench.db_password(site) and conf["db_password"].startswith("rqdsecret")
    assert bench.db_password("site1.local") != bench.db_password("site2.local")
    assert (bench.apps_path / "frappe" / "frappe" / "utils" / "bench_helper.py").is_file()
    assert (bench.logs_path).is_dir()
    expected = os.path.realpath(bench.root).strip("/").replace("/", "-")
    assert bench.bench_id == derive_bench_id(bench.root) == expected
    assert bench.queue("short") == f"{expected}:short"
    assert bench.queue_types == ["short", "default", "long", "heavy"]
    assert _shim_bench_id(bench) == expected


def test_bench_id_from_config_and_symlinked_root(tmp_path: Path) -> None:
    fixed = Bench.create(tmp_path / "a", "redis://127.0.0.1:6379/11", bench_id="prod-bench")
    assert fixed.bench_id == "prod-bench" and fixed.queue("long") == "prod-bench:long"
    assert _shim_bench_id(fixed) == "prod-bench"
    real = Bench.create(tmp_path / "real-bench", "redis://127.0.0.1:6379/11")
    (tmp_path / "link").symlink_to(real.root)
    assert derive_bench_id(tmp_path / "link") == real.bench_id  # realpath, as Frappe does


def test_scenarios_import_only_stdlib(tmp_path: Path) -> None:
    bench = Bench.create(tmp_path / "b", "redis://127.0.0.1:6379/11")
    code = ("import sys; before = set(sys.modules); import rqdoctor.scenarios as s; "
            "print(s.__file__); print(' '.join(sorted(set(sys.modules) - before)))")
    paths = bench.pythonpath.split(os.pathsep)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {paths!r}; " + code],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(bench.apps_path)), out[0]
    new = {m.split(".")[0] for m in out[1].split()} - {"rqdoctor"}
    assert new <= set(sys.stdlib_module_names), new - set(sys.stdlib_module_names)


def test_tarpit_blocks_http_until_closed() -> None:
    errors: list[BaseException] = []

    def call(url: str) -> None:
        try:
            scenarios.http_no_timeout(url)
        except BaseException as e:
            errors.append(e)

    with scenarios.tarpit() as pit:
        t = threading.Thread(target=call, args=(pit.url,), daemon=True)
        t.start()
        assert pit.wait_for_connection(5), "the HTTP client never reached the tarpit"
        t.join(1.0)
        assert t.is_alive(), f"http_no_timeout returned although nothing answered: {errors}"
    t.join(5)
    assert not t.is_alive() and errors, "closing the tarpit should end the request with an error"


@pytest.mark.parametrize("job,kwargs", [
    ("thread_deadlock", {}),
    ("wait_child", {"seconds": 600}),
    ("cpu_loop", {"seconds": 600}),
    ("sleep_for", {"seconds": 600}),
])
def test_hanging_scenarios_do_hang(job: str, kwargs: dict[str, object]) -> None:
    code = f"from rqdoctor import scenarios; scenarios.{job}(**{kwargs!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_finite_scenarios_return() -> None:
    assert scenarios.quick() == "ok"
    assert scenarios.sleep_for(0.1) == 0.1
    assert scenarios.cpu_loop(0.2) > 0
    assert scenarios.progress(0.5) >= 3
    assert scenarios.wait_child(0) == 0
    with pytest.raises(RuntimeError, match="kaboom"):
        scenarios.boom("kaboom")
    assert set(scenarios.SCENARIOS) >= {"sleep_for", "http_no_timeout", "mysql_hold_lock", "pg_lock_wait"}


# --- Redis -------------------------------------------------------------------------------


def test_private_redis_db(redis_url: str, redis_client: redis.Redis) -> None:
    db = int(redis_url.rsplit("/", 1)[1])
    assert 1 <= db <= 15
    assert redis_client.dbsize() == 0, "the private DB must start empty"
    if not os.environ.get("RQDOCTOR_TEST_REDIS"):  # this run's own server, on a port no bench uses by default
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        assert port != 6379 and redis_client.config_get("port")["port"] == str(port)


def test_shared_redis_dbs_are_claimed_in_redis_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.harness import services

    with services.private_redis_db() as own:
        base = own.rsplit("/", 1)[0]
    monkeypatch.setenv("RQDOCTOR_TEST_REDIS", base)  # pretend this server is shared with another checkout
    claims = redis.Redis.from_url(f"{base}/0", decode_responses=True)
    with services.private_redis_db() as url:
        db = int(url.rsplit("/", 1)[1])
        owner = claims.get(f"rqdoctor-tests:claim:{db}")
        assert owner and owner.split(":")[1] == str(os.getpid()), owner
        assert 0 < claims.ttl(f"rqdoctor-tests:claim:{db}") <= services.CLAIM_TTL_S
    assert claims.get(f"rqdoctor-tests:claim:{db}") is None, "released on exit"
    claims.close()


@pytest.mark.parametrize("force_raw_resp", [False, True])
def test_redis_lock_poll(redis_url: str, redis_client: redis.Redis, force_raw_resp: bool,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    if force_raw_resp:
        monkeypatch.setattr(scenarios, "_redis_client", scenarios._MiniRedis)
    redis_client.set("lock:x", "1")
    assert scenarios.redis_lock_poll(redis_url, "lock:x", 0.5) is False
    threading.Timer(0.5, redis_client.delete, args=("lock:x",)).start()
    start = time.monotonic()
    assert scenarios.redis_lock_poll(redis_url, "lock:x", 10) is True
    assert 0.4 < time.monotonic() - start < 3


# --- real workers, every flavour ----------------------------------------------------------


def _assert_registered(r: redis.Redis, bench: Bench, w: WorkerProcess, flavour: str, name: str) -> dict:
    short, default = bench.queue("short"), bench.queue("default")
    h = r.hgetall(f"rq:worker:{name}")
    assert re.fullmatch(r"[0-9a-f]{32}", name), name  # Frappe passes no name: uuid4().hex
    assert int(h["pid"]) == w.pid
    assert h["queues"] == f"{short},{default}"
    assert h["version"].startswith(RQ_VERSIONS[flavour])
    assert h["hostname"] == socket.gethostname()
    assert {"birth", "last_heartbeat", "state"} <= set(h)
    assert f"rq:worker:{name}" in r.smembers(f"rq:workers:{short}")
    assert r.ttl(f"rq:worker:{name}") > 0
    return h


def _expected_description(method: str, kwargs: dict[str, object]) -> str:
    return (f"frappe.utils.background_jobs.execute_job(event=None, is_async=True, job_name='{method}', "
            f"kwargs={kwargs!r}, method='{method}', site='site1.local', user='Administrator')")


@pytest.mark.slow
def test_frappe_worker_runs_job(rq_flavour: str, bench: Bench, workers: Workers,
                                redis_client: redis.Redis) -> None:
    r, flavour = redis_client, RQ_FLAVOURS[rq_flavour]
    w = workers.frappe(bench, rq_flavour, ("short", "default"))
    expected_argv = [str(bench.root / "env" / "bin" / "python"), "-m", "frappe.utils.bench_helper",
                     "frappe", "worker", "--queue", "short,default"]
    assert w.argv == expected_argv
    (name,) = wait_for_worker_registered(r, w)
    leader = psutil.Process(w.pid)
    assert leader.cwd() == str(bench.sites_path)
    if flavour.setproctitle:  # the title is set once the work loop starts, just after registration
        title = f"rq:worker:{name}: Listening on "
        deadline = time.monotonic() + 10
        while not " ".join(leader.cmdline()).startswith(title) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert " ".join(leader.cmdline()).startswith(title), leader.cmdline()
    else:
        assert leader.cmdline() == expected_argv
    _assert_registered(r, bench, w, rq_flavour, name)

    queue = bench.queue("short")
    job_id = enqueue(rq_flavour, bench.redis_url, queue, SLEEP, {"seconds": 120}, job_timeout=180)
    id_pattern = {"frappe15": r"site1\.local::[0-9a-f-]{36}", "frappe16": r"site1\.local\|\|[0-9a-f-]{36}",
                  "plain": r"[A-Za-z0-9_-]+"}[flavour.job_id_style]
    assert re.fullmatch(id_pattern, job_id), job_id
    started = wait_for_job_started(r, job_id, w)

    job = started.job
    assert job["description"] == _expected_description(SLEEP, {"seconds": 120})
    assert job["origin"] == queue and job["timeout"] == "180" and job["worker_name"] == name
    h = r.hgetall(f"rq:worker:{name}")
    assert h["state"] == "busy"
    if flavour.rq_major < 3:
        assert h.get("current_job") == job_id
    else:  # 3.0 keeps current executions in a set instead of current_job
        assert "current_job" not in h
        assert r.scard(f"rq:worker:{name}:executions") == 1

    members = r.zrange(f"rq:wip:{queue}", 0, -1, withscores=True)
    assert len(members) == 1, members
    member, score = members[0]
    if flavour.composite_wip:
        assert re.fullmatch(re.escape(job_id) + r":[0-9a-f]{32}", member), member
    else:
        assert member == job_id
    assert score > time.time(), "wip score is an expiry time in the future"

    horse = started.horse
    assert horse is not None and horse.ppid() == w.pid
    assert os.getpgid(horse.pid) == horse.pid != os.getpgid(w.pid)
    if flavour.rq_major == 1:  # os.setsid(): a session of its own
        assert os.getsid(horse.pid) == horse.pid
    else:  # os.setpgrp(): same session as the worker
        assert os.getsid(horse.pid) == os.getsid(w.pid)
    if flavour.setproctitle:
        assert " ".join(horse.cmdline()).startswith(f"rq:worker:{name}: Processing "), horse.cmdline()
    else:
        assert horse.cmdline() == expected_argv
    assert find_horse(w.pid).pid == horse.pid

    pids = [w.pid, horse.pid]
    w.stop()
    assert all(_gone(p) for p in pids), [p for p in pids if not _gone(p)]
    assert w.popen.returncode is not None


@pytest.mark.slow
@pytest.mark.parametrize("rq_flavour", ["rq115", "rq30"])
def test_worker_pool(rq_flavour: str, bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    w = workers.frappe(bench, rq_flavour, ("short",), pool_size=2)
    names = wait_for_worker_registered(redis_client, w, count=2)
    pids = {int(redis_client.hget(f"rq:worker:{n}", "pid")) for n in names}
    assert all(psutil.Process(p).ppid() == w.pid for p in pids)
    assert w.pid not in pids, "the pool process itself is not registered"
    job_id = enqueue(rq_flavour, bench.redis_url, bench.queue("short"), SLEEP, {"seconds": 60})
    started = wait_for_job_started(redis_client, job_id, w)
    assert started.worker_pid in pids and started.horse.ppid() == started.worker_pid
    tree = [p.pid for p in w.tree()]
    w.stop()
    assert all(_gone(p) for p in tree)


@pytest.mark.slow
@pytest.mark.parametrize("rq_flavour", ["rq116", "rq26"])
def test_simple_worker_runs_job_in_process(rq_flavour: str, bench: Bench, workers: Workers,
                                           redis_client: redis.Redis) -> None:
    w = workers.frappe(bench, rq_flavour, ("long",), simple=True)
    wait_for_worker_registered(redis_client, w)
    job_id = enqueue(rq_flavour, bench.redis_url, bench.queue("long"), SLEEP, {"seconds": 60})
    started = wait_for_job_started(redis_client, job_id, w)
    assert started.horse is None and started.executing_pid == w.pid
    assert psutil.Process(w.pid).children() == []


@pytest.mark.slow
def test_plain_rq_worker_finishes_quick_job(bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    w = workers.rq(bench, "rq26", ["plainq"])
    (name,) = wait_for_worker_registered(redis_client, w)
    assert redis_client.hget(f"rq:worker:{name}", "queues") == "plainq"
    job_id = enqueue("rq26", bench.redis_url, "plainq", "rqdoctor.scenarios.quick")
    job = wait_for_job_status(redis_client, job_id, ["finished"])
    assert job["worker_name"] == name


@pytest.mark.slow
def test_stop_ends_orphaned_horse_but_nothing_else(bench: Bench, workers: Workers,
                                                   redis_client: redis.Redis) -> None:
    bystander = subprocess.Popen([str(venv_python("rq115")), "-c", "import time; time.sleep(60)"],
                                 start_new_session=True)
    try:
        w = workers.frappe(bench, "rq115", ("short",))
        wait_for_worker_registered(redis_client, w)
        job_id = enqueue("rq115", bench.redis_url, bench.queue("short"), "rqdoctor.scenarios.wait_child",
                         {"seconds": 300})
        horse = wait_for_job_started(redis_client, job_id, w).horse
        deadline = time.monotonic() + 10
        while not horse.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = horse.children()[0]  # the `sleep 300` child, in the horse's group
        assert grandchild.cmdline() == ["sleep", "300"]
        w.remember(grandchild)
        os.kill(w.pid, signal.SIGKILL)  # the worker dies; horse and child are orphaned
        w.popen.wait(5)
        assert horse.is_running() and horse.ppid() != w.pid
        w.stop()
        assert _gone(horse.pid) and _gone(grandchild.pid)
        assert bystander.poll() is None, "stop() must not touch processes it did not start"
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
def test_http_tarpit_job_blocks_in_horse(bench: Bench, workers: Workers, redis_client: redis.Redis,
                                         tarpit: scenarios.Tarpit) -> None:
    w = workers.frappe(bench, "rq26", ("default",))
    wait_for_worker_registered(redis_client, w)
    job_id = enqueue("rq26", bench.redis_url, bench.queue("default"), "rqdoctor.scenarios.http_no_timeout",
                     {"url": tarpit.url})
    started = wait_for_job_started(redis_client, job_id, w)
    assert tarpit.wait_for_connection(10)
    conns = [c for c in started.horse.net_connections(kind="tcp") if c.raddr and c.raddr.port == tarpit.port]
    assert conns, "the horse should hold the connection to the tarpit"


# --- databases ---------------------------------------------------------------------------


def _lock_pair(bench: Bench, workers: Workers, r: redis.Redis, db: DBInfo, hold: str, wait: str) -> int:
    """Start a holder and a waiter job on two workers; return the waiter horse's pid."""
    holder = workers.frappe(bench, "rq115", ("short",))
    victim = workers.frappe(bench, "rq115", ("long",))
    wait_for_worker_registered(r, holder)
    wait_for_worker_registered(r, victim)
    kw = db.scenario_kwargs(table="rqd_lock", seconds=120)
    first = enqueue("rq115", bench.redis_url, bench.queue("short"), f"rqdoctor.scenarios.{hold}", kw)
    wait_for_job_started(r, first, holder)
    time.sleep(1.0)  # let the holder create the table and take the row lock
    second = enqueue("rq115", bench.redis_url, bench.queue("long"), f"rqdoctor.scenarios.{wait}", kw)
    return wait_for_job_started(r, second, victim).horse.pid


def _poll(check, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        if out.strip() or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


@pytest.mark.slow
def test_mysql_lock_wait(bench: Bench, workers: Workers, redis_client: redis.Redis, mariadb: DBInfo) -> None:
    _lock_pair(bench, workers, redis_client, mariadb, "mysql_hold_lock", "mysql_lock_wait")
    out = _poll(lambda: _sql("mariadb", mariadb.host, mariadb.port, mariadb.user,
                             "SELECT requesting_trx_id, blocking_trx_id FROM information_schema.INNODB_LOCK_WAITS"))
    assert out.strip(), "expected an InnoDB lock wait between the two jobs"


@pytest.mark.slow
def test_pg_lock_wait(bench: Bench, workers: Workers, redis_client: redis.Redis, postgres: DBInfo) -> None:
    _lock_pair(bench, workers, redis_client, postgres, "pg_hold_lock", "pg_lock_wait")
    out = _poll(lambda: _sql("postgres", postgres.host, postgres.port, postgres.user,
                             "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                             f"AND datname = '{postgres.database}'"))
    assert out.strip(), "expected a backend waiting on a row lock"
