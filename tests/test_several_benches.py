"""Several Frappe-like benches with real workers on one Redis DB and on two: the report names its target and
what it hid, never adopts a bench silently, never says "no problems" about a database it filtered away.

Other tests on this host may run benches of their own, so assertions about the list of running benches
check that ours are in it (each on its own line), not that nothing else is.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from rqdoctor import scenarios
from rqdoctor.probes.redis_rq import connect, read_rq_state
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.harness.venvs import selected_flavours
from tests.harness.workers import Workers, enqueue, text_client, wait_for_job_started

FLAVOUR = selected_flavours()[0]


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    def json(self) -> dict:
        return json.loads(self.out)


def rqdoctor(*args: str, cwd: Path) -> Run:
    """The CLI in a clean environment (no Redis/bench variables), wide plain output."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "PATH": "/usr/bin:/bin"},
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


@dataclass
class Benches:
    a: Bench
    b: Bench
    c: Bench
    url_x: str
    """DB of benches a and b."""
    url_y: str
    """DB of bench c."""
    outside: Path
    workers: dict[str, str]
    """bench id -> name of its busy worker."""


def busy(workers: Workers, bench: Bench) -> str:
    """One worker on the bench's short queue, busy with a long sleep; returns the worker's name."""
    worker = workers.frappe(bench, FLAVOUR, ["short"])
    job = enqueue(FLAVOUR, bench.redis_url, bench.queue("short"), "rqdoctor.scenarios.sleep_for", {"seconds": 300})
    client = text_client(bench.redis_url)
    try:
        return wait_for_job_started(client, job, worker).worker_name
    finally:
        client.close()


@pytest.fixture
def benches(make_bench: Callable[..., Bench], redis_url: str, workers: Workers, tmp_path: Path) -> Iterator[Benches]:
    """Benches rqda and rqdb on one Redis DB, rqdc on another, each with a busy worker; a cwd outside them."""
    with private_redis_db() as url_y:
        a, b = make_bench(bench_id="rqda"), make_bench(bench_id="rqdb")
        c = make_bench(bench_id="rqdc", redis_url=url_y)
        names = {bench.bench_id: busy(workers, bench) for bench in (a, b, c)}
        outside = tmp_path / "outside"
        outside.mkdir()
        yield Benches(a, b, c, redis_url, url_y, outside, names)


def test_redis_url_without_bench_shows_that_whole_db_and_adopts_no_bench(benches: Benches) -> None:
    # WHEN workers/hangs run from outside any bench, with several benches' workers running, and --redis-url
    for url, expected, foreign in ((benches.url_x, {"rqda", "rqdb"}, "rqdc"), (benches.url_y, {"rqdc"}, "rqda")):
        run = rqdoctor("workers", "--redis-url", url, "--format", "json", cwd=benches.outside)
        # THEN every worker of that DB is shown, busy, and no bench was adopted
        assert run.rc == 0, run.out + run.err
        report = run.json()
        target = report["target"]
        assert target["bench_path"] is None and target["queue_filter"] is None and target["hidden"] is None
        assert target["bench_source"].startswith("none: Redis chosen by --redis-url without --bench")
        names = {w["name"]: w for w in report["workers"]}
        assert {benches.workers[b] for b in expected} <= set(names), names
        assert benches.workers[foreign] not in names
        assert all(names[benches.workers[b]]["state"] == "busy" for b in expected)
    text = rqdoctor("workers", "--redis-url", benches.url_x, cwd=benches.outside)
    head = text.out.splitlines()[:6]
    assert head[1].startswith("bench:    none: Redis chosen by --redis-url without --bench"), head
    assert any(line.startswith("queues:   all (no bench chosen") for line in head), head
    assert any(line.startswith("2 workers on ") for line in head), head
    # AND hangs reports both benches' running jobs
    hangs = rqdoctor("hangs", "--redis-url", benches.url_x, "--no-db", "--format", "json", "--samples", "2",
                     cwd=benches.outside)
    assert hangs.rc in (0, 1), hangs.err
    assert {j["queue"] for j in hangs.json()["jobs"]} == {"rqda:short", "rqdb:short"}


def test_several_running_benches_and_no_choice_ask_for_bench(benches: Benches) -> None:
    # WHEN nothing names a bench or a Redis, and several benches' workers run
    for command in (["workers"], ["hangs", "--no-db"], ["target"]):
        run = rqdoctor(*command, cwd=benches.outside)
        # THEN one error line, one line per bench found, exit 2, no report
        assert run.rc == 2 and run.out == "", (run.out, run.err)
        errors = [line for line in run.err.splitlines() if line.startswith("rqdoctor: error:")]
        assert len(errors) == 1 and "benches" in errors[0] and "--bench" in errors[0], run.err
        listed = [line.removeprefix("rqdoctor:   ") for line in run.err.splitlines()
                  if line.startswith("rqdoctor:   ")]
        for bench in (benches.a, benches.b, benches.c):
            (line,) = [x for x in listed if x.startswith(f"{bench.root.resolve()}:")]
            assert f"bench_id {bench.bench_id}," in line and "worker pids" in line, line
        paths = [Path(x.split(": ")[0]) for x in listed]
        assert paths == sorted(paths)  # deterministic: by path, whatever order the processes are listed in


def test_a_chosen_bench_names_what_the_filter_hid(benches: Benches) -> None:
    a = benches.a
    # WHEN bench a is chosen (by --bench, or by the current directory)
    for args, cwd, source in ((["--bench", str(a.root)], benches.outside, "--bench"),
                              ([], a.sites_path, "current directory")):
        report = rqdoctor("workers", *args, "--format", "json", cwd=cwd).json()
        # THEN its workers are shown, and b's queue and busy worker are counted as hidden
        target = report["target"]
        assert (target["bench_source"], target["queue_filter"]) == (source, "rqda:")
        assert target["hidden"] == {"queues": 1, "queued": 0, "started": 1, "workers": 1, "busy_workers": 1}
        assert [w["name"] for w in report["workers"]] == [benches.workers["rqda"]]
    text = rqdoctor("queues", "--bench", str(a.root), cwd=benches.outside)
    assert text.rc == 0, text.out + text.err
    assert ("queues:   rqda:* only; 1 queue(s) (1 started) and 1 worker(s) (1 busy) of other benches hidden; "
            "--all-queues shows them") in text.out
    assert f"redis:    {benches.url_x} (from {a.sites_path / 'common_site_config.json'} redis_queue)" in text.out
    every = rqdoctor("queues", "--bench", str(a.root), "--all-queues", "--format", "json", cwd=benches.outside).json()
    assert {q["name"] for q in every["queues"]} == {"rqda:short", "rqdb:short"} and every["target"]["all_queues"]


def test_a_bench_on_another_benchs_db_is_a_finding_not_no_problems(benches: Benches) -> None:
    # WHEN bench a is diagnosed on bench c's DB (a wrong --redis-url)
    for command in ("workers", "queues"):
        run = rqdoctor(command, "--bench", str(benches.a.root), "--redis-url", benches.url_y, cwd=benches.outside)
        # THEN RQD505 names the bench id and the prefix that has jobs, and nothing says "no problems"
        assert run.rc == 1, run.out + run.err
        assert "no problems" not in run.out.lower()
        assert "RQD505" in run.out and "rqdc:* : 1 queue(s), 0 queued, 1 started, 1 worker(s) (1 busy)" in run.out
        assert "bench set-config -g bench_id rqdc" in run.out


def test_bench_id_mismatch_is_rqd505(make_bench: Callable[..., Bench], workers: Workers, tmp_path: Path) -> None:
    # GIVEN a bench whose workers run with bench_id "before", then its config says "after" (not restarted)
    bench = make_bench(bench_id="before")
    name = busy(workers, bench)
    config = bench.sites_path / "common_site_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "bench_id": "after"}))
    # WHEN
    for command in (["workers"], ["queues"], ["hangs", "--no-db", "--samples", "2"]):
        run = rqdoctor(*command, "--format", "json", cwd=bench.sites_path)
        # THEN
        assert run.rc == 1, run.err
        report = run.json()
        (finding,) = [f for f in report["findings"] if f["code"] == "RQD505"]
        assert finding["data"]["bench_id"] == "after"
        assert finding["data"]["bench_id_source"] == "common_site_config.json bench_id"
        assert list(finding["data"]["prefixes_with_jobs"]) == ["before"]
        assert report["target"]["hidden"]["busy_workers"] == 1
        assert name not in {w["name"] for w in report.get("workers", [])}
    text = rqdoctor("queues", cwd=bench.sites_path)
    assert "no problems" not in text.out.lower() and "0 queues" in text.out and "RQD505" in text.out


def test_probe_counts_what_the_filter_hides_in_the_same_round_trips(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.sadd("rq:queues", "rq:queue:mine:short", "rq:queue:theirs:short", "rq:queue:theirs:long")
    raw.rpush("rq:queue:theirs:short", "j1", "j2")
    raw.zadd("rq:wip:theirs:long", {"j3": time.time() + 60})
    raw.sadd("rq:workers", "rq:worker:w1", "rq:worker:w2", "rq:worker:w3")
    raw.hset("rq:worker:w1", mapping={"queues": "theirs:long,theirs:custom", "state": "busy", "pid": "1"})
    raw.hset("rq:worker:w2", mapping={"queues": "mine:short", "state": "idle", "pid": "2"})
    raw.hset("rq:worker:w3", mapping={"queues": "theirs:short", "state": "idle", "pid": "3"})
    client = connect(redis_url, 5)
    try:
        everything = read_rq_state(client, None, [])
        mine = read_rq_state(client, "mine:", [])
        raw.sadd("rq:queues", "rq:queue:theirs:extra")  # one more hidden queue
        more = read_rq_state(client, "mine:", [])
    finally:
        client.close()
        raw.close()
    assert (everything.hidden_queues, everything.hidden_workers) == ([], [])
    assert [q.name for q in mine.queues] == ["mine:short"] and [w.name for w in mine.workers] == ["w2"]
    hidden = {q.name: (q.queued, q.started, q.registered) for q in mine.hidden_queues}
    assert hidden == {"theirs:custom": (None, None, False), "theirs:long": (0, 1, True), "theirs:short": (2, 0, True)}
    assert [(w.name, w.state) for w in mine.hidden_workers] == [("w1", "busy"), ("w3", "idle")]
    assert mine.round_trips == 2  # sets; workers + queues + the hidden counts: no round trip of their own
    assert (more.round_trips, more.commands) == (mine.round_trips, mine.commands + 2)  # LLEN + ZCARD per hidden queue
    assert more.hidden_queues[1].name == "theirs:extra" and more.hidden_counted


# --- Redis that cannot be read: one error line, exit 2, within --timeout -------------------------------------------

@pytest.fixture
def refused_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


REDIS_COMMANDS = [["hangs", "--no-db"], ["workers"], ["queues"], ["stack", "1", "--no-db"],
                  ["stack", "site1.local::job", "--no-db"]]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "markdown"])
@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_redis_tarpit_is_one_error_line_within_the_timeout(tmp_path: Path, tarpit: scenarios.Tarpit,
                                                           command: list[str], fmt: str) -> None:
    run = rqdoctor(*command, "--redis-url", f"redis://127.0.0.1:{tarpit.port}/3", "--timeout", "2",
                   "--format", fmt, cwd=tmp_path)
    errors = [line for line in run.err.splitlines() if line.startswith("rqdoctor: error:")]
    assert run.rc == 2 and run.out == "" and len(errors) == 1, (run.out, run.err)
    assert f"127.0.0.1:{tarpit.port}" in errors[0] and "no answer in time" in errors[0]
    assert run.seconds < 2 + 8, run.seconds  # generous: a loaded 2-core machine
    assert tarpit.wait_for_connection(1)


def test_locks_without_redis_still_shows_the_db_and_says_jobs_were_not_joined(tmp_path: Path, refused_port: int,
                                                                            mariadb: object) -> None:
    db = mariadb
    url = f"mysql://{db.user}:{db.password}@{db.host}:{db.port}/"  # type: ignore[attr-defined]
    run = rqdoctor("locks", "--redis-url", f"redis://127.0.0.1:{refused_port}", "--db-url", url, cwd=tmp_path)
    assert run.rc in (0, 1), run.out + run.err
    head = run.out.splitlines()[:6]
    (redis_line,) = [line for line in head if line.startswith("redis:")]
    assert "NOT READ" in redis_line and "could not be joined" in redis_line and str(refused_port) in redis_line
    assert "lock wait(s) on 1 database server(s)" in run.out


def test_redis_rejecting_the_credentials_is_one_error_line(tmp_path: Path, redis_url: str) -> None:
    wrong = redis_url.replace("redis://", "redis://:NotThePassword7@")
    for command in (["workers"], ["hangs", "--no-db"], ["queues", "--format", "markdown"]):
        run = rqdoctor(*command, "--redis-url", wrong, cwd=tmp_path)
        errors = [line for line in run.err.splitlines() if line.startswith("rqdoctor: error:")]
        assert run.rc == 2 and run.out == "" and len(errors) == 1, (run.out, run.err)
        assert "authentication failed" in errors[0] and "NotThePassword7" not in run.err
