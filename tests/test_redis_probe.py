"""The Redis probe against real Redis: recorded Frappe state, odd and corrupt keys, round trips,
a MONITOR proof that it only reads, failures within the timeout, and real workers of every rq."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqdoctor import scenarios
from rqdoctor.diagnose.run import diagnose
from rqdoctor.errors import ConfigError, ProbeFailure
from rqdoctor.model import MethodRuns, ProbeError, RedisState, Snapshot, TargetInfo
from rqdoctor.probes.redis_rq import connect, read_rq_state
from rqdoctor.views import job_rows
from tests.harness.bench import Bench
from tests.harness.venvs import RQ_FLAVOURS
from tests.harness.workers import (
    Workers,
    enqueue,
    wait_for_job_started,
    wait_for_job_status,
    wait_for_worker_registered,
)

FIXTURE = Path(__file__).parent / "data" / "frappe-15.54.1" / "state.json"
BENCH = "home-frappe-frappe-bench:"
EXEC = "14e0ced5d36840aaa7ad864d1a0e41ee"
EXEC2 = "0123456789abcdef0123456789abcdef"
RQ_VERSIONS = {"rq115": "1.15.1", "rq116": "1.16.2", "rq26": "2.6.1", "rq30": "3.0."}
READ_COMMANDS = {"SELECT", "AUTH", "HELLO", "PING", "TIME", "INFO", "SMEMBERS", "EXISTS", "TYPE", "HGETALL",
                 "TTL", "LLEN", "LINDEX", "ZCARD", "ZRANGE", "ZREVRANGEBYSCORE", "HMGET"}


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def load_keys(r: redis.Redis, keys: dict[str, dict[str, Any]]) -> None:
    """Write recorded keys (``{"type", "ttl", "value"}``; binary values as ``{"base64": …}``)."""
    def raw(value: Any) -> Any:
        return base64.b64decode(value["base64"]) if isinstance(value, dict) else value

    pipe = r.pipeline(transaction=False)
    for key, entry in keys.items():
        kind, value = entry["type"], entry["value"]
        if kind == "string":
            pipe.set(key, raw(value))
        elif kind == "hash":
            pipe.hset(key, mapping={f: raw(v) for f, v in value.items()})
        elif kind == "list":
            pipe.rpush(key, *map(raw, value))
        elif kind == "set":
            pipe.sadd(key, *map(raw, value))
        elif kind == "zset":
            pipe.zadd(key, {raw(m): s for m, s in value})
        elif kind == "stream":
            for entry_id, fields in value:
                pipe.xadd(key, {f: raw(v) for f, v in fields.items()}, id=entry_id)
        else:
            raise ValueError(f"unknown key type {kind} of {key}")
        if entry.get("ttl", -1) > 0:
            pipe.expire(key, entry["ttl"])
    pipe.execute()


def read(url: str, queue_filter: str | None = None) -> tuple[RedisState, list[ProbeError]]:
    client = connect(url, 5)
    try:
        errors: list[ProbeError] = []
        return read_rq_state(client, queue_filter, errors), errors
    finally:
        client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """Bytes client on the test's private DB."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def frappe15(raw: redis.Redis) -> redis.Redis:
    """The private DB loaded with the recorded Frappe 15.54.1 / rq 1.15.1 bench."""
    load_keys(raw, json.loads(FIXTURE.read_text())["redis"])
    return raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the recorded Frappe bench -----------------------------------------------------------------


def test_recorded_frappe15_bench(frappe15: redis.Redis, redis_url: str) -> None:
    state, errors = read(redis_url, BENCH)
    assert errors == []
    assert state.redis_version == frappe15.info("server")["redis_version"]
    assert abs(state.server_time - time.time()) < 5
    assert not state.suspended
    # 46 before run history: + 2 ZREVRANGEBYSCORE per queue + 1 HMGET (the live failed entry), no extra round
    assert (state.round_trips, state.commands) == (3, 56)
    # the finished entries' scores (expiry) are in the past: not read; the failed one (7 days) is
    assert state.history.methods == [MethodRuns("hangjobs.jobs.boom", finished=[], failed=[0.789])]
    assert (state.history.entries, state.history.skipped, state.history.per_registry) == (1, 0, 100)

    workers = {w.name: w for w in state.workers}
    assert set(workers) == {"265fc20cbe22415cb480a89bf0e4445e", "3e6904cd5aa043dd92bafc83fa1546ac"}
    long, short = workers["265fc20cbe22415cb480a89bf0e4445e"], workers["3e6904cd5aa043dd92bafc83fa1546ac"]
    assert (long.pid, long.state, long.hostname, long.version) == (18622, "busy", "vm", "1.15.1")
    assert long.key == "rq:worker:265fc20cbe22415cb480a89bf0e4445e" and long.key_type == "hash"
    assert long.queues == [f"{BENCH}long", f"{BENCH}default", f"{BENCH}short"]
    assert long.current_job == "diag.localhost::lockwait" and short.current_job == "diag.localhost::holdlock"
    assert long.birth == epoch("2026-11-29T13:21:12.796398Z")
    assert short.last_heartbeat == epoch("2026-11-29T13:23:11.464558Z")
    assert (short.successful_job_count, short.failed_job_count, long.failed_job_count) == (2, None, 1)
    assert long.total_working_time == 0.788562 and long.current_job_working_time == 0.0
    assert 0 < long.ttl <= 78 and long.in_worker_set and long.executions == []
    assert long.ip_address == "127.0.0.1:33770" and long.python_version.startswith("3.11.7")

    queues = {q.name: q for q in state.queues}
    assert set(queues) == {f"{BENCH}default", f"{BENCH}long", f"{BENCH}short"}
    default, short_q = queues[f"{BENCH}default"], queues[f"{BENCH}short"]
    assert (default.queued, default.oldest_queued_job) == (1, "diag.localhost::sleep-callable")
    assert default.oldest_enqueued_at == epoch("2026-11-29T13:23:16.389560Z")
    assert (short_q.started, short_q.failed, short_q.finished, short_q.queued) == (1, 1, 2, 0)
    assert queues[f"{BENCH}long"].started == 1 and all(q.registered for q in queues.values())

    jobs = {j.job_id: j for j in state.jobs}
    assert set(jobs) == {"diag.localhost::holdlock", "diag.localhost::lockwait"}
    hold, wait = jobs["diag.localhost::holdlock"], jobs["diag.localhost::lockwait"]
    assert (hold.queue, hold.status, hold.site, hold.method) == (
        f"{BENCH}short", "started", "diag.localhost", "hangjobs.jobs.hold_lock")
    assert (wait.queue, wait.worker_name, wait.method) == (f"{BENCH}long", long.name, "hangjobs.jobs.lock_wait")
    assert hold.registry_expires_at == 1795958681.0 and hold.execution_id is None and hold.exists
    assert hold.timeout == 3600 and hold.started_at == epoch("2026-11-29T13:23:11.464793Z")
    assert hold.created_at < hold.enqueued_at < hold.started_at
    assert hold.description.startswith("frappe.utils.background_jobs.execute_job(")
    assert "'seconds': 900" in hold.description


def test_queue_filter(frappe15: redis.Redis, redis_url: str) -> None:
    frappe15.hset("rq:worker:other", mapping={"pid": "1", "queues": "other-bench:short", "state": "idle"})
    frappe15.hset("rq:worker:ghost", mapping={"successful_job_count": "1"})
    frappe15.sadd("rq:workers", "rq:worker:other", "rq:worker:ghost")
    frappe15.sadd("rq:queues", "rq:queue:other-bench:short")
    frappe15.rpush("rq:queue:other-bench:short", "x")

    everything, _ = read(redis_url, None)
    assert len(everything.queues) == 4 and len(everything.workers) == 4 and len(everything.jobs) == 2

    ours, _ = read(redis_url, BENCH)
    assert {q.name for q in ours.queues} == {f"{BENCH}default", f"{BENCH}long", f"{BENCH}short"}
    assert "other" not in {w.name for w in ours.workers} and "ghost" in {w.name for w in ours.workers}

    theirs, _ = read(redis_url, "other-bench:")
    assert [q.name for q in theirs.queues] == ["other-bench:short"] and theirs.queues[0].queued == 1
    assert {w.name for w in theirs.workers} == {"other", "ghost"}  # queueless ghosts show everywhere
    assert theirs.jobs == []


# --- odd and corrupt keys ----------------------------------------------------------------------


def add_odd_keys(r: redis.Redis) -> None:
    """One key of every odd or corrupt shape the probe must survive."""
    r.sadd("rq:workers", *[f"rq:worker:{n}" for n in ("as-string", "as-list", "as-zset", "stale", "ghost",
                                                        "garbage", "bad-exec")], "weird-member")
    r.set("rq:worker:as-string", "x")
    r.rpush("rq:worker:as-list", "x")
    r.zadd("rq:worker:as-zset", {"x": 1})
    r.hset("rq:worker:ghost", mapping={"successful_job_count": "1", "total_working_time": "0.5"})
    r.hset("rq:worker:garbage", mapping={
        "pid": "abc", "birth": "yesterday", "last_heartbeat": "2026-11-29T13:21:12Z",
        "current_job_working_time": "nan", "successful_job_count": "1e999", "failed_job_count": "2.0",
        "queues": "q:a,,q:d", "state": b"\xff\xfebusy", "hostname": b"h\xc3\x28st", "current_job": "gone-job"})
    r.expire("rq:worker:garbage", 300)
    r.hset("rq:worker:bad-exec", mapping={"pid": "7", "queues": "q:a"})
    r.set("rq:worker:bad-exec:executions", "not a set")
    r.sadd("rq:queues", "rq:queue:q:a", "rq:queue:q:b", "rq:queue:q:c", "rq:queue:q:d", "not-a-queue-key")
    r.hset("rq:queue:q:b", "x", "y")
    r.set("rq:wip:q:c", "x")
    r.rpush("rq:failed:q:c", "x")
    r.zadd("rq:finished:q:c", {"a": 1, "b": 2})
    r.zadd("rq:wip:q:d", {"missing-job": 5, b"bin\xff-id": 6, "listjob": 7, "secret-job": 8})
    r.hset(b"rq:job:bin\xff-id", mapping={"description": b"mod.f(b'\xff')", "status": "started",
                                           "timeout": "soon", "started_at": "garbage", "data": b"\x80\x04never"})
    r.rpush("rq:job:listjob", "x")
    r.hset("rq:job:secret-job", mapping={
        "description": "mod.login(password='hunter2', token='t0k3n', url='redis://:pw123@h:6379')",
        "status": "started", "origin": "q:d", "created_at": "2026-11-29T13:21:12Z"})
    r.set("rq:suspended", "1")


def test_odd_and_corrupt_keys_never_raise(raw: redis.Redis, redis_url: str) -> None:
    add_odd_keys(raw)
    state, errors = read(redis_url)

    corrupt = {e.subject for e in errors if e.kind == "corrupt"}
    assert corrupt == {"rq:worker:as-string", "rq:worker:as-list", "rq:worker:as-zset", "rq:queues",
                       "rq:queue:q:b", "rq:wip:q:c", "rq:failed:q:c", "rq:job:listjob",
                       "rq:worker:bad-exec:executions"}, errors
    assert all(e.probe == "redis" and e.kind == "corrupt" and "\n" not in e.message for e in errors)
    assert state.suspended

    workers = {w.name: w for w in state.workers}
    assert {n: workers[n].key_type for n in ("as-string", "as-list", "as-zset")} == {
        "as-string": "string", "as-list": "list", "as-zset": "zset"}
    stale = workers["stale"]
    assert (stale.key_type, stale.ttl, stale.pid, stale.in_worker_set) == ("none", -2, None, True)
    assert (workers["weird-member"].key, workers["weird-member"].ttl) == ("weird-member", -2)
    ghost = workers["ghost"]
    assert (ghost.ttl, ghost.pid, ghost.birth, ghost.successful_job_count) == (-1, None, None, 1)
    garbage = workers["garbage"]
    assert (garbage.pid, garbage.birth, garbage.current_job_working_time, garbage.successful_job_count) == (
        None, None, None, None)
    assert garbage.failed_job_count == 2 and garbage.last_heartbeat == epoch("2026-11-29T13:21:12Z")
    assert garbage.queues == ["q:a", "q:d"] and garbage.state == "\ufffd\ufffdbusy"
    assert garbage.hostname == "h\ufffd(st" and 0 < garbage.ttl <= 300

    queues = {q.name: q for q in state.queues}
    assert set(queues) == {"q:a", "q:b", "q:c", "q:d"}
    assert queues["q:a"].queued == 0 and queues["q:a"].oldest_queued_job is None
    assert (queues["q:c"].started, queues["q:c"].failed, queues["q:c"].finished) == (0, 0, 2)
    assert queues["q:d"].started == 4

    jobs = {j.job_id: j for j in state.jobs}
    assert set(jobs) == {"missing-job", "bin\ufffd-id", "listjob", "secret-job", "gone-job"}
    assert not jobs["missing-job"].exists and not jobs["listjob"].exists and not jobs["gone-job"].exists
    assert jobs["gone-job"].queue == "" and jobs["gone-job"].registry_expires_at is None
    binary = jobs["bin\ufffd-id"]
    assert binary.exists and (binary.timeout, binary.started_at, binary.method) == (None, None, "mod.f")
    secret = jobs["secret-job"]
    assert secret.method == "mod.login" and secret.created_at == epoch("2026-11-29T13:21:12Z")
    assert not re.search("hunter2|t0k3n|pw123", secret.description), secret.description


def test_corrupt_top_level_sets(raw: redis.Redis, redis_url: str) -> None:
    raw.set("rq:workers", "x")
    raw.hset("rq:queues", "a", "b")
    state, errors = read(redis_url)
    assert {e.subject for e in errors} == {"rq:workers", "rq:queues"}
    assert (state.workers, state.queues, state.jobs, state.round_trips) == ([], [], [], 1)


def test_rq2_and_rq3_shapes(raw: redis.Redis, redis_url: str) -> None:
    """Composite wip members, execution hashes, rq 3.0 executions sets, v16 ids, unregistered
    queues and a job whose worker is missing from ``rq:workers``."""
    now = time.time()
    raw.sadd("rq:queues", "rq:queue:b16:short")
    raw.sadd("rq:workers", "rq:worker:w26", "rq:worker:w30")
    raw.hset("rq:worker:w26", mapping={"pid": "26", "queues": "b16:short", "state": "busy", "version": "2.6.1",
                                       "current_job": "site1.local||j1", "birth": "2026-11-29T13:21:12Z"})
    raw.hset("rq:worker:w30", mapping={"pid": "30", "queues": "b16:long", "state": "busy", "version": "3.0.0"})
    raw.sadd("rq:worker:w30:executions", f"plainid:{EXEC2}")
    raw.zadd("rq:wip:b16:short", {f"site1.local||j1:{EXEC}": now + 90, "orphan1": now - 10, "orphan2": now - 5})
    raw.zadd("rq:wip:b16:long", {f"plainid:{EXEC2}": now + 80})
    raw.rpush("rq:queue:b16:long", "q1", "q2")
    raw.hset("rq:job:site1.local||j1", mapping={
        "status": "started", "origin": "b16:short", "worker_name": "w26", "started_at": "2026-11-29T13:21:12Z",
        "description": "frappe.utils.background_jobs.execute_job(event=None, is_async=True, job_name='a.b', "
                       "kwargs={}, method='a.b', site='site1.local', user='Administrator')"})
    raw.hset(f"rq:execution:site1.local||j1:{EXEC}", mapping={
        "id": EXEC, "created_at": "1795958000.25", "last_heartbeat": "1795958030.5", "worker_name": "w26"})
    raw.hset("rq:job:plainid", mapping={"status": "started", "origin": "b16:long", "worker_name": "w30",
                                        "description": "rqdoctor.scenarios.sleep_for(seconds=60)"})
    raw.hset("rq:job:orphan1", mapping={"status": "started", "origin": "b16:short", "worker_name": "wghost"})
    raw.hset("rq:job:orphan2", mapping={"status": "started", "origin": "b16:short", "worker_name": "wnone"})
    raw.hset("rq:worker:wghost", mapping={"successful_job_count": "3"})

    state, errors = read(redis_url, "b16:")
    assert errors == []
    assert state.round_trips == 4  # sets; workers+queues; jobs+unregistered queue; workers named by jobs

    jobs = {(j.job_id, j.execution_id): j for j in state.jobs}
    assert set(jobs) == {("site1.local||j1", EXEC), ("plainid", EXEC2), ("orphan1", None), ("orphan2", None)}
    j1 = jobs[("site1.local||j1", EXEC)]
    assert (j1.site, j1.method, j1.registry_expires_at) == ("site1.local", "a.b", pytest.approx(now + 90))
    assert (j1.execution_created_at, j1.execution_last_heartbeat) == (1795958000.25, 1795958030.5)
    assert j1.started_at == epoch("2026-11-29T13:21:12Z")
    plain = jobs[("plainid", EXEC2)]
    assert (plain.queue, plain.site, plain.method) == ("b16:long", None, "rqdoctor.scenarios.sleep_for")
    assert plain.registry_expires_at == pytest.approx(now + 80) and plain.execution_created_at is None

    queues = {q.name: q for q in state.queues}
    assert queues["b16:long"].registered is False and queues["b16:long"].queued == 2
    assert queues["b16:long"].oldest_queued_job == "q1" and queues["b16:short"].started == 3

    workers = {w.name: w for w in state.workers}
    assert set(workers) == {"w26", "w30", "wghost"}  # wnone: named by a job, but gone
    assert workers["w30"].executions == [f"plainid:{EXEC2}"] and workers["w30"].current_job is None
    ghost = workers["wghost"]
    assert (ghost.in_worker_set, ghost.ttl, ghost.pid, ghost.successful_job_count) == (False, -1, None, 3)


def test_round_trips_do_not_grow(frappe15: redis.Redis, redis_url: str) -> None:
    base, _ = read(redis_url, BENCH)
    pipe = frappe15.pipeline(transaction=False)
    for i in range(500):
        pipe.hset(f"rq:worker:idle{i}", mapping={"pid": str(10000 + i), "queues": f"{BENCH}short", "state": "idle",
                                                 "birth": "2026-11-29T13:21:12.796398Z"})
        pipe.sadd("rq:workers", f"rq:worker:idle{i}")
    ids = [str(uuid.UUID(int=i)) for i in range(10_000)]
    pipe.rpush(f"rq:queue:{BENCH}default", *ids)
    pipe.zadd(f"rq:failed:{BENCH}short", {i: 1.0 for i in ids})  # expired entries: not read
    pipe.zadd(f"rq:finished:{BENCH}default", {i: time.time() + 600 for i in ids})  # live: the newest 100
    pipe.execute()

    started = time.monotonic()
    big, errors = read(redis_url, BENCH)
    assert errors == [] and time.monotonic() - started < 5
    assert len(big.workers) == 502
    assert big.round_trips == base.round_trips == 3
    assert big.commands == base.commands + 500 * 4 + 100
    assert big.history.entries == base.history.entries + 100  # their hashes are missing: skipped
    assert big.history.skipped == base.history.skipped + 100
    queues = {q.name: q for q in big.queues}
    assert queues[f"{BENCH}default"].queued == 10_001 and queues[f"{BENCH}short"].failed == 10_001


# --- run history: finished and failed registries ---------------------------------------------


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def add_run(r: redis.Redis, registry: str, queue: str, job_id: str, fields: dict[str, str] | None,
            expires_in: float = 600) -> None:
    r.zadd(f"rq:{registry}:{queue}", {job_id: time.time() + expires_in})
    if fields is not None:
        r.hset(f"rq:job:{job_id}", mapping={**fields, "data": b"\x80\x04never"})


def frappe_call(method: str) -> str:
    return (f"frappe.utils.background_jobs.execute_job(event=None, is_async=True, job_name='{method}', "
            f"kwargs={{}}, method='{method}', site='site1.local', user='Administrator')")


def test_history_durations_per_method(raw: redis.Redis, redis_url: str) -> None:
    """Newest live entries only, durations per method, odd entries skipped without a ProbeError."""
    t = time.time() - 1000
    raw.sadd("rq:queues", "rq:queue:h:q", "rq:queue:h:big", "rq:queue:h:odd")
    raw.zadd("rq:wip:h:q", {"running": time.time() + 90})
    raw.hset("rq:job:running", mapping={"status": "started", "description": frappe_call("app.task")})
    ok = {"status": "finished", "started_at": iso(t), "ended_at": iso(t + 2.5), "description": frappe_call("app.task")}
    add_run(raw, "finished", "h:q", "ok1", ok)
    add_run(raw, "finished", "h:q", "ok2", {**ok, "description": "mod.fn(1)", "ended_at": iso(t + 0.25)})
    add_run(raw, "finished", "h:q", "rerun", {**ok, "status": "started", "ended_at": ""})  # enqueued again since
    add_run(raw, "finished", "h:q", "gone", None)  # hash expired before its registry entry
    add_run(raw, "finished", "h:q", "badtime", {**ok, "ended_at": "soon"})
    add_run(raw, "finished", "h:q", "negative", {**ok, "ended_at": iso(t - 5)})
    add_run(raw, "finished", "h:q", "nomethod", {**ok, "description": "???"})
    add_run(raw, "finished", "h:q", "expired", ok, expires_in=-10)  # past its score: never read
    raw.zadd("rq:finished:h:q", {"listhash": time.time() + 600})
    raw.rpush("rq:job:listhash", "x")
    add_run(raw, "failed", "h:q", "f1", {**ok, "status": "failed", "ended_at": iso(t + 30)})
    for i in range(150):
        add_run(raw, "finished", "h:big", f"b{i:03d}", {**ok, "description": "mod.bulk()"}, expires_in=600 + i)
    raw.set("rq:finished:h:odd", "not a zset")

    state, errors = read(redis_url, "h:")
    assert {e.subject for e in errors} == {"rq:finished:h:odd"}  # from its ZCARD, not from the history read
    assert state.round_trips == 3
    history = state.history
    assert sorted(history.methods, key=lambda m: m.method) == [
        MethodRuns("app.task", [2.5], [30.0]), MethodRuns("mod.bulk", [2.5] * 100), MethodRuns("mod.fn", [0.25])]
    assert (history.entries, history.skipped, history.per_registry) == (100 + 8 + 1, 6, 100)

    raw.delete("rq:wip:h:q")  # nothing running: nothing to judge, so no job hash of the history is read
    idle, _ = read(redis_url, "h:")
    assert (idle.history.entries, idle.history.methods, idle.history.per_registry) == (0, [], 0)
    assert idle.commands == state.commands - 1 - (100 + 8 + 1) and idle.round_trips == 2


# --- read-only proof ---------------------------------------------------------------------------


def contents(r: redis.Redis) -> dict[bytes, tuple[bytes, Any, bool]]:
    """Every key's type, logical value and whether it has a TTL (DUMP bytes change on reads:
    Redis rehashes incrementally)."""
    readers = {b"string": r.get, b"hash": r.hgetall, b"set": r.smembers, b"list": lambda k: r.lrange(k, 0, -1),
               b"zset": lambda k: r.zrange(k, 0, -1, withscores=True), b"stream": r.xrange}
    return {k: (r.type(k), readers[r.type(k)](k), r.ttl(k) > 0) for k in r.scan_iter()}


def test_read_only_proof_with_monitor(frappe15: redis.Redis, redis_url: str) -> None:
    add_odd_keys(frappe15)
    before = contents(frappe15)
    db = int(redis_url.rsplit("/", 1)[1])
    marker = f"rqdoctor-monitor-end-{uuid.uuid4().hex}"
    ready, seen = threading.Event(), []

    def monitor() -> None:
        with redis.Redis.from_url(redis_url, socket_timeout=20).monitor() as m:
            ready.set()
            for entry in m.listen():
                if marker in entry["command"]:
                    return
                if entry["db"] == db:
                    seen.append(entry["command"])

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    assert ready.wait(5)
    time.sleep(0.1)  # MONITOR is registered server-side before its OK reply; this is only margin
    state, errors = read(redis_url, None)
    frappe15.echo(marker)
    thread.join(10)
    assert not thread.is_alive(), "MONITOR never saw the end marker"

    names = [cmd.split()[0].upper() for cmd in seen]
    assert set(names) <= READ_COMMANDS, sorted(set(names) - READ_COMMANDS)
    assert {"TIME", "HGETALL", "ZRANGE", "HMGET", "TYPE", "LLEN"} <= set(names)
    assert len([n for n in names if n not in ("SELECT", "PING", "AUTH", "HELLO")]) == state.commands
    assert not any(n == "HMGET" and "data" in cmd.split()[2:] for n, cmd in zip(names, seen, strict=True))
    assert len(state.jobs) > 2 and errors  # the odd keys were read too
    assert contents(frappe15) == before


def test_probe_never_imports_rq() -> None:
    code = "import sys, rqdoctor.probes.redis_rq, rqdoctor.jobids; sys.exit(int('rq' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --- failures ----------------------------------------------------------------------------------


def test_refused_connection() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ProbeFailure) as info:
        connect(f"redis://:s3cr3tpw@127.0.0.1:{port}/0", 2)
    assert time.monotonic() - started < 2
    failure = info.value
    assert (failure.probe, failure.kind) == ("redis", "unreachable")
    assert f"127.0.0.1:{port}" in failure.message and "s3cr3tpw" not in failure.message
    assert "\n" not in failure.message and "--redis-url" in failure.hint and "rqdoctor target" in failure.hint


@pytest.mark.parametrize("query", ["", "?socket_timeout=30&socket_connect_timeout=30"])
def test_tarpit_times_out(tarpit: scenarios.Tarpit, query: str) -> None:
    started = time.monotonic()
    with pytest.raises(ProbeFailure) as info:
        connect(f"redis://127.0.0.1:{tarpit.port}/0{query}", 0.5)
    assert time.monotonic() - started < 1.5, "one timeout, no retries, URL options do not win"
    assert info.value.kind == "timeout" and tarpit.connections


def test_tarpit_during_read(tarpit: scenarios.Tarpit) -> None:
    client = redis.Redis(host="127.0.0.1", port=tarpit.port, socket_timeout=0.5, socket_connect_timeout=0.5,
                         retry=Retry(NoBackoff(), 0))
    started = time.monotonic()
    with pytest.raises(ProbeFailure) as info:
        read_rq_state(client, None, [])
    assert time.monotonic() - started < 1.5
    assert info.value.kind == "timeout" and f"redis://127.0.0.1:{tarpit.port}/0" in info.value.message


def test_not_redis_is_a_protocol_failure() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(5)

        def answer() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                time.sleep(1)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(ProbeFailure) as info:
            connect(f"redis://127.0.0.1:{server.getsockname()[1]}/0", 2)
        thread.join(3)
    assert info.value.kind == "protocol" and "\n" not in info.value.message


def test_invalid_url() -> None:
    with pytest.raises(ConfigError) as info:
        connect("http://:pw@example.org/", 1)
    assert "pw@" not in info.value.message and "--redis-url" in info.value.hint


def test_password_on_server_without_one(redis_url: str) -> None:
    with pytest.raises(ProbeFailure) as info:
        connect(redis_url.replace("redis://", "redis://:nope-pw@"), 2)
    assert info.value.kind == "auth" and "nope-pw" not in info.value.message


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A private redis-server on a unix socket only, with a password: ``(socket path, password)``."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server binary")
    home = tmp_path_factory.mktemp("redis")
    path, password = home / "redis.sock", f"pw-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
                             "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert path.exists(), "redis-server did not open its socket"
        yield str(path), password
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.integration
def test_unix_socket_with_password(secured_redis: tuple[str, str]) -> None:
    path, password = secured_redis
    seed = redis.Redis(unix_socket_path=path, password=password, db=3)
    seed.flushdb()
    load_keys(seed, json.loads(FIXTURE.read_text())["redis"])
    seed.close()
    state, errors = read(f"unix://:{password}@{path}?db=3", BENCH)
    assert errors == [] and len(state.workers) == 2 and len(state.jobs) == 2
    empty, _ = read(f"unix://:{password}@{path}?db=4", BENCH)
    assert empty.workers == []

    for url in (f"unix://:wrong-{password}@{path}?db=3", f"unix://{path}?db=3"):
        with pytest.raises(ProbeFailure) as info:
            connect(url, 2)
        assert info.value.kind == "auth" and password not in info.value.message, url
        assert path in info.value.message


# --- real workers of every rq flavour ----------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_real_workers(rq_flavour: str, bench: Bench, workers: Workers, redis_url: str,
                      redis_client: redis.Redis) -> None:
    flavour, text = RQ_FLAVOURS[rq_flavour], redis_client
    w = workers.frappe(bench, rq_flavour, ("short",))
    (name,) = wait_for_worker_registered(text, w)
    queue = bench.queue("short")
    job_id = enqueue(rq_flavour, redis_url, queue, "rqdoctor.scenarios.sleep_for", {"seconds": 60}, job_timeout=120)
    wait_for_job_started(text, job_id, w)
    (member,) = text.zrange(f"rq:wip:{queue}", 0, -1)

    state, errors = read(redis_url, f"{bench.bench_id}:")
    assert errors == []
    (worker,) = state.workers
    assert (worker.name, worker.pid, worker.state, worker.queues) == (name, w.pid, "busy", [queue])
    assert worker.version.startswith(RQ_VERSIONS[rq_flavour])
    assert worker.hostname == socket.gethostname() and worker.ttl > 0 and worker.birth <= state.server_time

    (job,) = state.jobs
    assert (job.job_id, job.queue, job.status, job.worker_name) == (job_id, queue, "started", name)
    assert (job.site, job.method, job.timeout) == ("site1.local", "rqdoctor.scenarios.sleep_for", 120)
    assert job.started_at is not None and job.registry_expires_at > state.server_time
    if flavour.composite_wip:
        assert re.fullmatch(r"[0-9a-f]{32}", job.execution_id) and member == f"{job_id}:{job.execution_id}"
        assert job.execution_created_at is not None and job.execution_created_at <= job.started_at + 1
    else:
        assert member == job_id and job.execution_id is None and job.execution_created_at is None
    if flavour.rq_major >= 3:
        assert worker.current_job is None and worker.executions == [member]
    else:
        assert worker.current_job == job_id and worker.executions == []

    (q,) = state.queues
    assert (q.name, q.started, q.queued, q.intermediate) == (queue, 1, 0, 0)


@pytest.mark.integration
@pytest.mark.slow
def test_real_run_history(rq_flavour: str, bench: Bench, workers: Workers, redis_url: str,
                          redis_client: redis.Redis) -> None:
    """A real worker runs a method 5 times and fails one job; while the method runs a 6th time, the probe
    reads the durations of the finished and failed runs, and the job's view compares them."""
    text = redis_client
    w = workers.frappe(bench, rq_flavour, ("short",))
    wait_for_worker_registered(text, w)
    queue = bench.queue("short")
    done = [enqueue(rq_flavour, redis_url, queue, "rqdoctor.scenarios.sleep_for", {"seconds": 0.2})
            for _ in range(5)]
    failed = enqueue(rq_flavour, redis_url, queue, "rqdoctor.scenarios.boom")
    hashes = [wait_for_job_status(text, job_id, ["finished"]) for job_id in done]
    wait_for_job_status(text, failed, ["failed"])
    running = enqueue(rq_flavour, redis_url, queue, "rqdoctor.scenarios.sleep_for", {"seconds": 60})
    wait_for_job_started(text, running, w)

    # what every rq stores: plain ids in both registries, ISO start and end times in the job hash
    assert set(text.zrange(f"rq:finished:{queue}", 0, -1)) == set(done)
    assert text.zrange(f"rq:failed:{queue}", 0, -1) == [failed]
    expected = sorted(round(epoch(h["ended_at"]) - epoch(h["started_at"]), 3) for h in hashes)

    state, errors = read(redis_url, f"{bench.bench_id}:")
    assert errors == [] and state.round_trips == 3  # the history rides along with the existing rounds
    history = state.history
    runs = {m.method: m for m in history.methods}
    assert set(runs) == {"rqdoctor.scenarios.sleep_for", "rqdoctor.scenarios.boom"}
    assert sorted(runs["rqdoctor.scenarios.sleep_for"].finished) == expected and all(0.2 <= d < 10 for d in expected)
    assert runs["rqdoctor.scenarios.sleep_for"].failed == [] and runs["rqdoctor.scenarios.boom"].finished == []
    (boom,) = runs["rqdoctor.scenarios.boom"].failed
    assert 0 <= boom < 10
    assert (history.entries, history.skipped, history.per_registry) == (6, 0, 100)

    snap = Snapshot(host="elsewhere", generated_at=state.server_time, target=TargetInfo(redis_url, "test"),
                    redis=state)
    (row,) = job_rows(diagnose(snap))
    assert row["job_id"] == running and row["usual_duration"]["runs"] == 5
    assert row["usual_duration"]["p95_s"] == max(expected)
    assert re.fullmatch(r"this method usually takes .* \(p95 of 5 recent runs, median .*\); this run is at .*",
                        row["usual_duration"]["summary"])
