"""Two hosts of one bench, live: namespace "hosts" (tests/harness/hosts.py) sharing one Redis and one MariaDB.

Host B's worker runs a job holding a row lock; host A's worker runs a job waiting on that row. Each host sees
only its own processes, sockets and hostname, so ``rqdoctor`` inside host A sees B's job as remote; the
snapshots ``rqdoctor collect`` writes on each host, merged with ``--from``, show both jobs local to their own
host, and name B's job (its host, its pid as B sees it) as the blocker of A's. Pids collide across hosts (both
horses are often pid 5 of their host): a merge that matches a hash to a pid of the wrong host shows here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tests.harness.bench import Bench
from tests.harness.hosts import CLAIM_DIR, Host, TestBed, multi_host_bed, require_test_bed, sweep_stale_claims
from tests.harness.services import DBInfo
from tests.harness.workers import (
    WorkerProcess,
    Workers,
    enqueue,
    ns_pid,
    running_workers,
    text_client,
    wait_for_job_started,
    wait_for_worker_registered,
    worker_hashes,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mariadb]

RQDOCTOR = Path(sys.executable).with_name("rqdoctor")
FLAVOUR = "rq26"
BENCH_ID = "multihost-bench"
TABLE = "tabBin"
FAST = ("--samples", "2", "--interval", "0.2")
_CLEAN_ENV = ("RQDOCTOR_", "FRAPPE_", "RQ_", "REDIS_")


@pytest.fixture(scope="session")
def bed() -> Iterator[TestBed]:
    """Hosts ``hosta`` and ``hostb`` with the private Redis and MariaDB on their bridge (built once)."""
    require_test_bed()
    with multi_host_bed(("hosta", "hostb")) as built:
        yield built


@dataclass
class Side:
    """One host's bench, worker and running job (pids as the root namespace sees them)."""

    host: Host
    bench: Bench
    worker: WorkerProcess
    job_id: str
    horse: psutil.Process

    @property
    def horse_pid_here(self) -> int:
        """The horse's pid as its own host sees it."""
        pid = ns_pid(self.horse.pid)
        assert pid is not None and pid != self.horse.pid, (self.horse.pid, pid)
        return pid


@dataclass
class Scene:
    """B's job holds row 1 of ``TABLE``; A's job waits for it."""

    bed: TestBed
    db: DBInfo
    a: Side
    b: Side
    redis: redis.Redis
    tmp: Path
    workers: Workers


def lay_out_bench(root: Path, bed: TestBed, db: DBInfo) -> Bench:
    """A one-site bench of the shared bench id on the shared Redis, its site on the shared database."""
    bench = Bench.create(root, f"{bed.redis_url}/0", bench_id=BENCH_ID, sites=("site1.local",))
    path = bench.sites_path / "site1.local" / "site_config.json"
    config = json.loads(path.read_text())
    config.update(db_name=db.database, db_host=db.host, db_port=db.port)
    path.write_text(json.dumps(config, indent=1))
    return bench


def lock_waiters(bed: TestBed, db: DBInfo) -> int:
    rows = bed.sql("SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
                   f"ON p.ID = t.trx_mysql_thread_id WHERE p.DB = '{db.database}' AND t.trx_state = 'LOCK WAIT'")
    return int(rows[0][0])


def row_locked(bed: TestBed, db: DBInfo) -> bool:
    rows = bed.sql("SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
                   f"ON p.ID = t.trx_mysql_thread_id WHERE p.DB = '{db.database}' AND t.trx_rows_locked > 0")
    return int(rows[0][0]) > 0


def wait_until(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"{what}: not within {timeout}s"
        time.sleep(0.3)


def start_side(bed: TestBed, r: redis.Redis, started: Workers, db: DBInfo, tmp: Path, host: str, qtype: str,
               method: str, seconds: float) -> Side:
    """Lay out ``host``'s bench, start its frappe worker on ``qtype`` inside it, run ``method`` there."""
    bench = lay_out_bench(tmp / f"bench-{qtype}", bed, db)  # no host name in a path: outputs must say it
    worker = started.frappe(bench, FLAVOUR, (qtype,), host=bed.hosts[host])
    wait_for_worker_registered(r, worker, timeout=60)
    kwargs = db.scenario_kwargs(table=TABLE, seconds=seconds)
    job_id = enqueue(FLAVOUR, bench.redis_url, bench.queue(qtype), f"rqdoctor.scenarios.{method}", kwargs)
    job = wait_for_job_started(r, job_id, worker, timeout=60)
    assert job.horse is not None, job
    return Side(bed.hosts[host], bench, worker, job_id, job.horse)


@pytest.fixture
def scene(bed: TestBed, tmp_path: Path) -> Iterator[Scene]:
    """B's holder job and A's waiting job running; workers stopped, Redis flushed, database dropped after."""
    r = text_client(f"{bed.redis_url}/0")
    r.flushall()
    db = bed.database(f"rqd_{uuid.uuid4().hex[:12]}")
    try:
        with running_workers() as started:
            b = start_side(bed, r, started, db, tmp_path, "hostb", "short", "mysql_hold_lock", 300)
            wait_until(lambda: row_locked(bed, db), "B's job locks row 1")
            a = start_side(bed, r, started, db, tmp_path, "hosta", "long", "mysql_lock_wait", 300)
            wait_until(lambda: lock_waiters(bed, db) == 1, "A's job waits on the row lock")
            yield Scene(bed, db, a, b, r, tmp_path, started)
    finally:
        r.flushall()
        r.close()
        bed.sql(f"DROP DATABASE IF EXISTS `{db.database}`")


# --- running rqdoctor -------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: tuple[str, ...]
    where: str
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"{self}\nstdout: {self.stdout[-3000:]}") from None

    def __str__(self) -> str:
        return (f"rqdoctor {' '.join(self.args)} on {self.where} -> exit {self.code} in {self.seconds:.1f}s\n"
                f"{self.stderr[-3000:]}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN_ENV)}
    env.update(COLUMNS="250", NO_COLOR="1", TERM="dumb")
    return env


def rqdoctor(*args: str, host: Host | None, cwd: Path, timeout: float = 180) -> Run:
    """The console script inside ``host`` (None: in the root namespace); never a traceback."""
    started = time.monotonic()
    argv = [str(RQDOCTOR), *args]
    if host is None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env(),
                              stdin=subprocess.DEVNULL)
    else:
        done = host.run(argv, cwd=cwd, env=_env(), timeout=timeout)
    run = Run(args, host.name if host else "root", done.returncode, done.stdout, done.stderr,
              time.monotonic() - started)
    assert "Traceback" not in run.stderr, run
    return run


def job_row(report: dict[str, Any], job_id: str) -> dict[str, Any]:
    rows = {j["job_id"]: j for j in report["jobs"]}
    assert job_id in rows, f"job {job_id} not in the report: {sorted(rows)}; errors {report.get('errors')}"
    return rows[job_id]


def frames(row: dict[str, Any]) -> list[str]:
    return [f["name"] for t in row["threads"] for f in t["frames"]]


# --- the tests ----------------------------------------------------------------------------------------------------


def test_worker_hashes_name_each_hosts_hostname_and_its_pid_there(scene: Scene) -> None:
    hashes = worker_hashes(scene.redis)
    for side in (scene.a, scene.b):
        [process] = psutil.Process(side.worker.pid).children()  # nsenter's child: the worker itself
        [hash_] = [h for h in hashes.values() if h.get("hostname") == side.host.name]
        assert int(hash_["pid"]) == ns_pid(process.pid) != process.pid, (hash_, process.pid)
        seen = side.host.run(["sh", "-c", "hostname; ls /proc | grep -c '^[0-9]'"])
        name, count = seen.stdout.split()
        assert name == side.host.name and int(count) < 20, seen  # its own processes only


def test_hangs_inside_host_a_sees_its_job_local_and_bs_job_remote(scene: Scene) -> None:
    run = rqdoctor("hangs", "--bench", str(scene.a.bench.root), "--db-url", scene.bed.db_url, "--format", "json",
                   "--timeout", "30", "--min-age", "1", *FAST, host=scene.a.host, cwd=scene.tmp)
    report = run.json()
    assert run.code == 1, run
    assert report["snapshot"]["host"] == "hosta"
    victim = job_row(report, scene.a.job_id)
    assert (victim["location"], victim["runner_role"], victim["host"]) == ("local", "horse", "hosta"), victim
    assert victim["pid"] == scene.a.horse_pid_here, victim
    assert "mysql_lock_wait" in frames(victim), victim["threads"]
    assert victim["activity"]["kind"] == "db_lock_wait", victim["activity"]
    holder = job_row(report, scene.b.job_id)
    assert (holder["location"], holder["pid"], holder["host"]) == ("remote", None, "hostb"), holder
    assert holder["threads"] == [], holder
    # the blocker's session is seen, its client on host B's address: no local pid claimed for it
    blocker = victim["blocker"]
    assert blocker is not None, report["errors"]
    assert (blocker["role"], blocker["pid"], blocker["job_id"]) == ("remote", None, None), blocker
    assert f"remote host {scene.b.host.ip}" in blocker["summary"], blocker


def test_stuck_kill_inside_host_a_stops_a_hung_job_of_a_and_leaves_b_s_job_alone(scene: Scene) -> None:
    bench = lay_out_bench(scene.tmp / "bench-default", scene.bed, scene.db)
    worker = scene.workers.frappe(bench, FLAVOUR, ("default",), host=scene.a.host)
    wait_for_worker_registered(scene.redis, worker, timeout=60)
    hung = enqueue(FLAVOUR, bench.redis_url, bench.queue("default"), "rqdoctor.scenarios.sleep_for", {"seconds": 600})
    horse = wait_for_job_started(scene.redis, hung, worker, timeout=60).horse
    assert horse is not None
    time.sleep(1.5)  # older than --older-than
    run = rqdoctor("stuck", "--bench", str(scene.a.bench.root), "--kill", "--yes", "--older-than", "1s",
                   "--timeout", "30", "--format", "json", host=scene.a.host, cwd=scene.tmp)
    actions = run.json().get("actions", [])
    assert [a["result"] for a in actions if a["action"] == "stop_horse" and hung in json.dumps(a)] == ["done"], run
    wait_until(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE, "A's hung horse stops")
    # B's job, sleeping in its transaction just as long, is remote from A: neither signalled nor failed
    assert scene.b.job_id not in json.dumps(actions), actions
    assert scene.b.horse.is_running(), actions
    assert scene.redis.hget(f"rq:job:{scene.b.job_id}", "status") == "started", actions


def collect(scene: Scene, side: Side, *, db: bool = True) -> Path:
    """``rqdoctor collect -o`` inside ``side``'s host (``db=False``: this host reads no database)."""
    out = scene.tmp / f"{side.host.name}.json"
    db_args = ("--db-url", scene.bed.db_url) if db else ("--no-db",)
    run = rqdoctor("collect", "--bench", str(side.bench.root), *db_args, "--timeout", "30", *FAST, "-o", str(out),
                   host=side.host, cwd=scene.tmp)
    assert run.code == 0, run
    assert json.loads(out.read_text())["host"] == side.host.name
    return out


def from_both(scene: Scene, db_hosts: tuple[str, ...] = ("hosta", "hostb")) -> list[str]:
    """``--from a.json --from b.json``, collected now; only ``db_hosts`` read the database."""
    return [arg for side in (scene.a, scene.b)
            for arg in ("--from", str(collect(scene, side, db=side.host.name in db_hosts)))]


def merged_hangs(scene: Scene, db_hosts: tuple[str, ...] = ("hosta", "hostb")) -> dict[str, Any]:
    run = rqdoctor("hangs", *from_both(scene, db_hosts), "--format", "json", "--min-age", "1", host=None,
                   cwd=scene.tmp)
    assert run.code == 1, run
    return run.json()


DB_VIEWS = [pytest.param(("hosta", "hostb"), id="every-host-reads-the-db"),
            pytest.param(("hosta",), id="only-host-a-reads-the-db")]


@pytest.mark.parametrize("db_hosts", DB_VIEWS)
def test_merged_snapshots_show_both_jobs_local_and_b_s_job_as_the_blocker(scene: Scene,
                                                                           db_hosts: tuple[str, ...]) -> None:
    report = merged_hangs(scene, db_hosts)
    snapshot = report["snapshot"]
    assert sorted(h["name"] for h in snapshot["hosts"]) == ["hosta", "hostb"], snapshot["hosts"]
    # each job's DB session is tied to its horse on its own host: by that host's own database probe, or (B not
    # reading the database) by the client address the server reports = a TCP socket's local address on B
    sessions = {(s["client_pid_host"], s["client_pid"]): s for s in snapshot["database"]["sessions"]
                if s["db"] == scene.db.database}
    a_key, b_key = ("hosta", scene.a.horse_pid_here), ("hostb", scene.b.horse_pid_here)
    assert set(sessions) == {a_key, b_key}, sessions
    assert sessions[a_key]["client_match"] == "tcp", sessions[a_key]
    assert sessions[b_key]["client_match"] == ("tcp" if "hostb" in db_hosts else "tcp@hostb"), sessions[b_key]
    assert sessions[b_key]["client_host"] == scene.b.host.ip, sessions[b_key]
    victim, holder = job_row(report, scene.a.job_id), job_row(report, scene.b.job_id)
    assert (victim["location"], victim["host"], victim["pid"]) == ("local", "hosta", scene.a.horse_pid_here), victim
    assert (holder["location"], holder["host"], holder["pid"]) == ("local", "hostb", scene.b.horse_pid_here), holder
    assert "mysql_lock_wait" in frames(victim) and "mysql_hold_lock" in frames(holder)
    blocker = victim["blocker"]
    assert blocker is not None, report.get("errors")
    assert (blocker["role"], blocker["job_id"], blocker["pid"], blocker.get("host")) == (
        "rq-job", scene.b.job_id, scene.b.horse_pid_here, "hostb"), blocker
    assert blocker["session_id"] == sessions[b_key]["session_id"], blocker
    assert holder["blocker"] is None, holder["blocker"]


def test_merged_victim_finding_names_the_blockers_session_host_pid_and_job(scene: Scene) -> None:
    report = merged_hangs(scene)
    blocker = job_row(report, scene.a.job_id)["blocker"]
    [finding] = [f for f in report["findings"] if f["code"] == "RQD401" and f["job_id"] == scene.a.job_id]
    evidence = " ".join(finding["evidence"])
    for fact in (f"session {blocker['session_id']}", scene.b.job_id, f"pid {scene.b.horse_pid_here} on hostb",
                 f"pid {scene.a.horse_pid_here} on hosta"):
        assert fact in evidence, (fact, finding["evidence"])


def test_merged_findings_see_no_bench_collision_and_print_no_kill_without_its_host(scene: Scene) -> None:
    report = merged_hangs(scene)
    collisions = [f for f in report["findings"] if f["code"] == "RQD609"]
    assert collisions == [], [f["evidence"] for f in collisions]  # each worker runs in its own host's bench
    # both horses may be pid 5 of their host: a bare `kill … 5` read on a third host would signal the wrong one
    commands = [c for f in report["findings"] for c in f["commands"]]
    assert [c for c in commands if c.startswith("kill ")] == [], commands
    assert any(c.startswith("ssh hostb ") and "kill" in c for c in commands), commands


def job_sections(text: str) -> dict[str, str]:
    """``{job id: its section}`` of the text ``hangs`` output (sections start with ``── <job id>``)."""
    parts = text.split("\n── ")[1:]
    return {part.split("\n", 1)[0].strip(): part.split("\nFindings\n", 1)[0] for part in parts}


def test_merged_text_names_each_jobs_host_beside_its_pid(scene: Scene) -> None:
    run = rqdoctor("hangs", *from_both(scene), "--min-age", "1", host=None, cwd=scene.tmp)
    assert run.code == 1, run
    head = run.stdout.split("\nJobs\n", 1)[0]
    assert "hosta" in head and "hostb" in head, head
    sections = job_sections(run.stdout)
    for side in (scene.a, scene.b):
        section = sections[side.job_id]
        pid_line = next(line for line in section.splitlines() if f"pid {side.horse_pid_here} " in line)
        assert side.host.name in pid_line, section


def test_merged_workers_locks_and_stack_views_keep_each_process_on_its_host(scene: Scene) -> None:
    merged = from_both(scene)
    workers = rqdoctor("workers", *merged, "--format", "json", host=None, cwd=scene.tmp)
    assert workers.code == 0, workers
    rows = {r["host"]: r for r in workers.json()["workers"]}
    for side in (scene.a, scene.b):
        row = rows[side.host.name]
        assert (row["location"], row["process_host"], row["horse_pid"]) == (
            "local", side.host.name, side.horse_pid_here), row
    locks = rqdoctor("locks", *merged, "--format", "json", host=None, cwd=scene.tmp)
    assert locks.code == 1, locks
    [edge] = locks.json()["locks"]
    assert (edge["waiting"]["host"], edge["waiting"]["pid"], edge["waiting"]["job_id"]) == (
        "hosta", scene.a.horse_pid_here, scene.a.job_id), edge
    assert (edge["blocker"]["host"], edge["blocker"]["pid"], edge["blocker"]["job_id"]) == (
        "hostb", scene.b.horse_pid_here, scene.b.job_id), edge
    stack = rqdoctor("stack", scene.b.job_id, *merged, host=None, cwd=scene.tmp)
    assert stack.code in (0, 1), stack
    assert f"pid {scene.b.horse_pid_here} (horse) on hostb" in stack.stdout, stack.stdout
    assert "mysql_hold_lock" in stack.stdout, stack.stdout


def test_stuck_and_report_run_on_merged_snapshots(scene: Scene) -> None:
    merged = from_both(scene)
    stuck = rqdoctor("stuck", "--format", "json", *merged, host=None, cwd=scene.tmp)
    assert stuck.code in (0, 1), stuck
    assert "findings" in stuck.json(), stuck
    out = scene.tmp / "report"
    report = rqdoctor("report", *merged, "-o", str(out), host=None, cwd=scene.tmp)
    assert report.code in (0, 1), report
    bundle = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    for side in (scene.a, scene.b):
        assert side.job_id in markdown, markdown[:3000]
        assert side.host.name in markdown
    assert bundle, bundle
    # collect read the scheduler part on each host: the merged scheduler view has it (no scheduler runs here)
    scheduler = rqdoctor("scheduler", *merged, "--format", "json", host=None, cwd=scene.tmp)
    assert scheduler.code in (0, 1), scheduler
    view = scheduler.json()["scheduler"]
    assert view["read"] and view["lock"]["state"] == "missing" and view["processes"] == [], view


def test_stuck_kill_on_merged_snapshots_signals_no_other_hosts_process(scene: Scene) -> None:
    merged = from_both(scene)
    plan = rqdoctor("stuck", "--kill", "--dry-run", "--older-than", "1s", "--format", "json", *merged, host=None,
                    cwd=scene.tmp)
    killed = rqdoctor("stuck", "--kill", "--yes", "--older-than", "1s", "--format", "json", *merged, host=None,
                      cwd=scene.tmp)
    for run in (plan, killed):  # refused outright: one line, exit 2, nothing planned
        assert run.code == 2 and run.stdout == "", run
        assert run.stderr.startswith("rqdoctor: error:") and len(run.stderr.strip().splitlines()) == 1, run
        assert "--from" in run.stderr, run
    # nothing was signalled on either host, and no job was failed or requeued in Redis
    assert scene.a.horse.is_running() and scene.b.horse.is_running(), killed
    for side in (scene.a, scene.b):
        assert scene.redis.hget(f"rq:job:{side.job_id}", "status") == "started", killed
    assert lock_waiters(scene.bed, scene.db) == 1


# --- the harness itself -------------------------------------------------------------------------------------------


def _netns() -> set[str]:
    return {line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                        timeout=30).stdout.splitlines() if line.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_a_bed_torn_down_after_a_failure_leaves_no_namespace_link_process_or_claim() -> None:
    require_test_bed()
    before_ns, before_links = _netns(), _links()
    with pytest.raises(RuntimeError, match="inside the bed"), multi_host_bed(("solo",)) as solo:
        host = solo.hosts["solo"]
        seen = host.run(["hostname"]).stdout.strip()
        sleeper = host.spawn(["sleep", "300"], log=solo.workdir / "sleep.log")
        wait_until(lambda: psutil.Process(sleeper.pid).children(), "sleep starts inside the host", timeout=20)
        [inner] = psutil.Process(sleeper.pid).children()
        leader, claim = host.leader, next(CLAIM_DIR.glob(f"{solo.gateway.rsplit('.', 1)[0]}.claim"))
        raise RuntimeError("a failure inside the bed")
    assert seen == "solo"
    assert not leader.is_running() and not inner.is_running()
    assert sleeper.wait(timeout=10) is not None
    assert _netns() - before_ns == set() and _links() - before_links == set()
    assert not claim.exists() and not solo.workdir.exists()


def test_a_dead_runs_claim_is_swept_with_what_it_lists() -> None:
    require_test_bed()
    leftover = f"rqdstale{os.getpid()}"
    subprocess.run(["ip", "netns", "add", leftover], check=True, capture_output=True, timeout=30)
    dead = subprocess.Popen(["true"])
    dead.wait()
    claim = CLAIM_DIR / "10.199.255.claim"  # outside claim_subnet's range: never a live run's
    try:
        CLAIM_DIR.mkdir(exist_ok=True)
        claim.write_text(json.dumps({"pid": dead.pid, "started": 0.0, "netns": [leftover], "links": []}))
        sweep_stale_claims()
        assert not claim.exists() and leftover not in _netns()
    finally:
        claim.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "del", leftover], capture_output=True, timeout=30)


def test_from_the_node_each_host_is_a_container_and_its_db_session_is_matched_in_its_own_network(
        scene: Scene) -> None:
    # rqdoctor on the machine itself sees both "hosts" as containers with their own PID, UTS and network
    # namespaces: each job's horse by its host pid and namespace pid, and each DB session (its client address a
    # container's, in no socket table of the machine's) tied to it through the container's own /proc/<pid>/net/tcp
    run = rqdoctor("hangs", "--redis-url", f"{scene.bed.redis_url}/0", "--db-url", scene.bed.db_url, "--all-queues",
                   "--format", "json", "--min-age", "1", "--timeout", "30", *FAST, host=None, cwd=scene.tmp)
    assert run.code == 1, run
    report = run.json()
    rows = {j["job_id"]: j for j in report["jobs"]}
    for side in (scene.a, scene.b):
        row = rows[side.job_id]
        assert (row["location"], row["pid"]) == ("local", side.horse.pid), row
        assert (row["container"]["name"], row["container"]["ns_pid"]) == (side.host.name, side.horse_pid_here), row
    sessions = {s["client_pid"]: s for s in report["snapshot"]["database"]["sessions"]
                if s["db"] == scene.db.database}
    assert set(sessions) == {scene.a.horse.pid, scene.b.horse.pid}, sessions
    assert {s["client_match"] for s in sessions.values()} == {f"tcp@{report['snapshot']['host']}"}, sessions
    blocker = rows[scene.a.job_id]["blocker"]
    assert (blocker["pid"], blocker["job_id"]) == (scene.b.horse.pid, scene.b.job_id), blocker
