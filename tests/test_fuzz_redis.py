"""Fuzzing RQ's keys: random, truncated, binary, huge and wrong-typed values in a private Redis DB.

Hypothesis writes worker hashes (claiming this host and the pids of unrelated live processes the
module starts: ``sleep 300``, a Python loop whose child leads its own session, a zombie whose argv
said ``rq worker``), ``rq:workers`` members, started registries (rq 1.x ``job_id`` and rq 2.x+
``job_id:execution_id`` members, any score), job and execution hashes, ``rq:worker:<name>:executions``,
queues (``rq:queues`` and ``rq:queue:<q>`` of any type), and finished/failed registries. Then, per
example, one live run of a drawn command and format, plus every read-only command that takes
``--from``, in every format, on the snapshot a live ``hangs --format json`` saved. Every run ends
with exit 0, 1 or 2, no traceback, valid JSON under ``--format json``, and no finding, command, job
runner or worker process naming an unrelated pid. Runs are in-process (``cli.main``); a few examples
also go through the console script. Hypothesis is derandomized, so a failure reproduces.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.harness.services import private_redis_db
from tests.test_fuzz_harness import FORMATS, Outcome, clean_env, run
from tests.test_identity_cli import strangers

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
NOW = time.time()
QUEUES = ["default", "short", "rqdfuzz:long", "a:b.c"]
JOBS = ["j1", "site1.local::9f3c", "site||j2", "x:y:z"]
WORKERS = ["w1", "w2", "frappe-bench:short,default:1"]
EXEC_ID = "14e0ced5d36840aaa7ad864d1a0e41ee"
NO_SHRINK = (Phase.explicit, Phase.generate)
"""No shrinking: it re-runs the CLI hundreds of times; the failing example is printed as found."""
FROM_COMMANDS = ("hangs", "workers", "queues", "locks", "stack")
"""The read-only commands that take ``--from``."""


def rq_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# --- values ------------------------------------------------------------------------------------------


SPECIAL = [b"", b"\xff\xfe\x00", b"nan", b"inf", b"-inf", b"-1", b"0", b"1e309", b"9" * 400, b"-" * 3,
           b"2024-13-45T99:99:99Z", b"2024-01-31T12:00:00.123456Z", b"0001-01-01T00:00:00Z", b"None", b"[]",
           b"\xc3\x28", "é漢字".encode(), b",,,", b"rq:queue:", b":" + EXEC_ID.encode()]


def junk() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=40), st.text(max_size=40).map(str.encode), st.sampled_from(SPECIAL),
        st.integers(min_value=-2**70, max_value=2**70).map(lambda n: str(n).encode()),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
        st.builds(bytes, st.just(200_000)).map(lambda zeros: zeros.replace(b"\0", b"x")),  # huge, short repr
    )


def plausible_time() -> st.SearchStrategy[bytes]:
    return st.one_of(st.floats(min_value=-3600, max_value=3600).map(lambda d: rq_time(NOW + d).encode()),
                     st.floats(min_value=-3600, max_value=3600).map(lambda d: repr(NOW + d).encode()),
                     st.builds(lambda s: rq_time(NOW - 86400 * 365 * s).encode(), st.integers(0, 40)))


def pick(*options: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(*options, junk())


def names(choices: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(choices).map(str.encode), st.binary(min_size=1, max_size=30),
                     st.sampled_from([s for s in SPECIAL if s and len(s) < 100]))


def scores() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=False), st.sampled_from([float("inf"), float("-inf"), 0.0, -1.0]),
                     st.floats(min_value=-3600, max_value=3600).map(lambda d: NOW + d))


# --- keys --------------------------------------------------------------------------------------------


Write = tuple[str, bytes, Any]
"""(Redis type, key, value): ``hash`` a dict, ``set``/``list`` a list, ``zset`` a dict member->score,
``string`` bytes."""


@st.composite
def wrong_type(draw: st.DrawFn, key: bytes) -> Write:
    kind = draw(st.sampled_from(["string", "list", "set", "zset", "hash"]))
    values = [v or b"-" for v in draw(st.lists(junk(), min_size=1, max_size=3))]
    value: Any = {
        "string": values[0], "list": values, "set": values, "zset": dict.fromkeys(values, 1.0),
        "hash": {v[:50]: v for v in values},
    }[kind]
    return kind, key, value


@st.composite
def worker_hash(draw: st.DrawFn, pids: list[int]) -> dict[bytes, bytes]:
    pid = st.one_of(st.sampled_from(pids).map(lambda p: str(p).encode()),
                    st.sampled_from([b"4194305", b"0", b"-7", b"1", b"99999999999999999999"]))
    fields: dict[str, st.SearchStrategy[bytes]] = {
        "name": names(WORKERS), "hostname": st.one_of(st.just(HOST.encode()), pick(st.just(b"other-host"))),
        "pid": st.one_of(pid, pick(pid)), "ip_address": pick(st.just(b"127.0.0.1")),
        "state": pick(st.sampled_from([b"busy", b"idle", b"suspended", b"started"])),
        "queues": pick(st.lists(st.sampled_from(QUEUES), max_size=3).map(lambda q: ",".join(q).encode())),
        "current_job": names(JOBS), "current_job_working_time": pick(st.just(b"12.5")),
        "birth": pick(plausible_time()), "last_heartbeat": pick(plausible_time()), "death": pick(plausible_time()),
        "shutdown_requested_date": pick(plausible_time()),
        "version": pick(st.sampled_from([b"1.15.1", b"2.6.1", b"3.0.0"])), "python_version": junk(),
        "successful_job_count": pick(st.just(b"3")), "failed_job_count": junk(), "total_working_time": junk(),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, min_size=0, max_size=6))
    required = ["hostname", "pid"] if draw(st.integers(0, 3)) else []  # mostly a claim on a local pid
    return {name.encode(): draw(fields[name]) for name in dict.fromkeys([*required, *chosen])}


@st.composite
def job_hash(draw: st.DrawFn) -> dict[bytes, bytes]:
    fields: dict[str, st.SearchStrategy[bytes]] = {
        "status": pick(st.sampled_from([b"started", b"queued", b"finished", b"failed"])),
        "origin": names(QUEUES), "description": pick(st.just(b"app.jobs.work(password='hunter2', n=1)")),
        "timeout": pick(st.sampled_from([b"300", b"-1", b"180.5"])), "created_at": pick(plausible_time()),
        "enqueued_at": pick(plausible_time()), "started_at": pick(plausible_time()),
        "ended_at": pick(plausible_time()), "last_heartbeat": pick(plausible_time()),
        "worker_name": names(WORKERS), "data": junk(),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
    return {name.encode(): draw(fields[name]) for name in chosen}


def member(draw: st.DrawFn) -> bytes:
    job = draw(names(JOBS))
    return draw(st.sampled_from([job, job + b":" + EXEC_ID.encode(), job + b":" + draw(junk())]))


@st.composite
def rq_world(draw: st.DrawFn, pids: list[int]) -> list[Write]:
    """A set of RQ keys, each well-formed, malformed or of the wrong type."""
    writes: list[Write] = []
    if draw(st.booleans()):  # a well-formed claim on an unrelated live pid, born after it started
        claim = {b"hostname": HOST.encode(), b"pid": str(draw(st.sampled_from(pids))).encode(),
                 b"birth": rq_time(time.time()).encode(), b"state": b"busy", b"queues": b"default",
                 b"current_job": draw(names(JOBS)), b"version": draw(st.sampled_from([b"1.15.1", b"2.6.1"]))}
        writes += [("hash", b"rq:worker:claim", claim), ("set", b"rq:workers", [b"rq:worker:claim"])]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(names(WORKERS))
        key = b"rq:worker:" + name
        if draw(st.integers(0, 5)):
            writes.append(("hash", key, draw(worker_hash(pids))))
        else:
            writes.append(draw(wrong_type(key)))
        writes.append(("set", b"rq:workers", [key, *draw(st.lists(st.binary(min_size=1, max_size=20), max_size=1))]))
        if draw(st.booleans()):
            execs = [member(draw) for _ in range(draw(st.integers(1, 2)))]
            writes.append(("set", key + b":executions", execs) if draw(st.integers(0, 3)) else
                          draw(wrong_type(key + b":executions")))
    for _ in range(draw(st.integers(0, 3))):
        queue = draw(names(QUEUES))
        strays = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=1))
        writes.append(("set", b"rq:queues", [b"rq:queue:" + queue, *strays]))
        if draw(st.booleans()):
            writes.append(("list", b"rq:queue:" + queue, draw(st.lists(names(JOBS), min_size=1, max_size=3)))
                          if draw(st.integers(0, 3)) else draw(wrong_type(b"rq:queue:" + queue)))
        for registry in draw(st.lists(st.sampled_from(["wip", "finished", "failed", "deferred", "scheduled"]),
                                      unique=True, max_size=3)):
            key = f"rq:{registry}:".encode() + queue
            if draw(st.integers(0, 4)):
                entries = {member(draw): draw(scores()) for _ in range(draw(st.integers(1, 3)))}
                writes.append(("zset", key, entries))
            else:
                writes.append(draw(wrong_type(key)))
    for _ in range(draw(st.integers(0, 4))):
        job = draw(names(JOBS))
        writes.append(("hash", b"rq:job:" + job, draw(job_hash())) if draw(st.integers(0, 4)) else
                      draw(wrong_type(b"rq:job:" + job)))
        if draw(st.booleans()):
            execution = {b"created_at": draw(pick(plausible_time())), b"last_heartbeat": draw(pick(plausible_time()))}
            writes.append(("hash", b"rq:execution:" + job + b":" + EXEC_ID.encode(), execution))
    if draw(st.booleans()):
        writes.append(draw(wrong_type(draw(st.sampled_from([b"rq:workers", b"rq:queues", b"rq:suspended"])))))
    return writes


def load(client: redis.Redis, writes: list[Write]) -> None:
    """Write ``writes`` (a key written twice with two types keeps the first)."""
    client.flushdb()
    for kind, key, value in writes:
        try:
            if kind == "hash" and value:
                client.hset(key, mapping=value)
            elif kind == "set":
                client.sadd(key, *value)
            elif kind == "list":
                client.rpush(key, *value)
            elif kind == "zset":
                client.zadd(key, value)
            elif kind == "string":
                client.set(key, value)
        except redis.ResponseError as exc:
            assert "WRONGTYPE" in str(exc), exc


# --- checks ------------------------------------------------------------------------------------------


def mentions(text: str, pid: int) -> bool:
    return re.search(rf"(?<![\d.:]){pid}(?![\d.:])", text) is not None


def assert_strangers_untouched(outcome: Outcome, report: dict[str, Any] | None, pids: set[int]) -> None:
    """No finding, command, job runner or worker process names an unrelated pid; no kill line names one."""
    for line in (outcome.stdout + outcome.stderr).splitlines():
        if re.search(r"\bkill(pg)?\b", line):  # a kill command or advice (not "killed")
            assert not [p for p in pids if mentions(line, p)], (line, str(outcome))
    if report is None:
        return
    for finding in report.get("findings", []):
        assert finding.get("pid") not in pids, (finding, str(outcome))
        for command in finding.get("commands", []):
            assert not [p for p in pids if mentions(command, p)], (command, str(outcome))
    for job in report.get("jobs", []):
        if job.get("pid") in pids:
            assert job.get("runner_role") in (None, "process"), (job, str(outcome))
            assert job.get("findings") == [], (job, str(outcome))
    for worker in report.get("workers", []):
        if worker.get("pid") in pids:
            assert worker.get("location") != "local", (worker, str(outcome))
        assert worker.get("horse_pid") not in pids and worker.get("pool_parent_pid") not in pids, worker


# --- the tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unrelated() -> Iterator[dict[str, int]]:
    with strangers() as pids:
        yield pids


@pytest.fixture(scope="module")
def fuzz_db() -> Iterator[tuple[str, redis.Redis]]:
    with private_redis_db() as url:
        client = redis.Redis.from_url(url)
        yield url, client
        client.close()


LIVE = {"hangs": ["--samples", "2", "--interval", "0.05", "--min-age", "0", "--no-db", "--timeout", "8"],
        "workers": ["--timeout", "5"], "queues": ["--timeout", "5"],
        "stack": ["--samples", "1", "--no-db", "--timeout", "8"], "locks": ["--timeout", "5"]}


@given(data=st.data())
@settings(max_examples=12, deadline=None, derandomize=True, database=None, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
def test_any_rq_keys_any_command_any_format(data: st.DataObject, fuzz_db: tuple[str, redis.Redis],
                                            unrelated: dict[str, int]) -> None:
    url, client = fuzz_db
    ours = set(unrelated.values())
    load(client, data.draw(rq_world(sorted(ours)), label="keys"))
    scope = ["--redis-url", url, *data.draw(st.sampled_from([["--all-queues"], []]), label="scope")]
    command = data.draw(st.sampled_from(sorted(LIVE)), label="live command")
    fmt = data.draw(st.sampled_from(FORMATS), label="live format")
    subject = [str(data.draw(st.sampled_from(sorted(ours)), label="stack pid"))] if command == "stack" else []
    live = run(command, *subject, *LIVE[command], *scope, "--format", fmt)
    report = live.check()
    assert_strangers_untouched(live, report, ours)
    if report is None or "snapshot" not in report:  # the snapshot for --from: from a live hangs run
        saved = run("hangs", *LIVE["hangs"], *scope, "--format", "json")
        report = saved.check()
        assert_strangers_untouched(saved, report, ours)
    if report is None:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(report, f)
    for command in FROM_COMMANDS:
        for fmt in FORMATS:
            subject = [str(unrelated["sleep"])] if command == "stack" else []
            outcome = run(command, *subject, "--from", f.name, "--format", fmt)
            assert_strangers_untouched(outcome, outcome.check(), ours)
    Path(f.name).unlink()


@given(data=st.data())
@settings(max_examples=2, deadline=None, derandomize=True, database=None, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
def test_console_script_on_fuzzed_keys(data: st.DataObject, fuzz_db: tuple[str, redis.Redis],
                                       unrelated: dict[str, int]) -> None:
    """The same rules through ``python -m rqdoctor`` (a real process: real stdout, exit code and stderr)."""
    url, client = fuzz_db
    ours = set(unrelated.values())
    load(client, data.draw(rq_world(sorted(ours)), label="keys"))
    command, fmt = data.draw(st.sampled_from(sorted(LIVE))), data.draw(st.sampled_from(FORMATS))
    subject = [str(unrelated["python"])] if command == "stack" else []
    argv = [command, *subject, *LIVE[command], "--redis-url", url, "--all-queues", "--format", fmt]
    proc = subprocess.run([sys.executable, "-m", "rqdoctor", *argv], capture_output=True, text=True, timeout=60,
                          env=clean_env(), cwd="/")
    outcome = Outcome(argv, proc.returncode, proc.stdout, proc.stderr)
    assert_strangers_untouched(outcome, outcome.check(), ours)
