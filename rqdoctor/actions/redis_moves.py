"""The Redis writes of ``stuck --kill``: raw redis-py, each move one WATCH/MULTI transaction, never the rq library.

What each move writes, as rq 1.15, 2.x and 3.0 themselves write a failure (checked against their
sources: ``FailedJobRegistry.add``, ``Job._handle_failure``, ``Result.save``, ``Execution.delete``):

- the started-registry member is removed as stored (``job_id`` in 1.x, ``job_id:execution_id`` in 2.x+);
  with an execution id also ``rq:execution:<job>:<exec>`` (DEL), its id in ``rq:executions:<job>`` (ZREM)
  and the member in ``rq:worker:<name>:executions`` (SREM, rq 3.0);
- failed: job hash ``status=failed``, ``ended_at`` (rq's ISO format), ``exc_info`` zlib-compressed (every
  version reads it so, falling back to plain text), ZADD ``rq:failed:<q>`` at now + the job's
  ``failure_ttl`` (default one year), EXPIRE of the job key to that TTL, and a failed Result entry
  (``type=2``, ``exc_string`` base64 of zlib, ``worker_name`` empty) on ``rq:results:<job>`` (MAXLEN 10),
  which is what ``job.latest_result()`` and ``job.exc_info`` of each version show first;
- requeued (``--requeue``): ``status=queued``, ``enqueued_at`` now, RPUSH onto ``rq:queue:<q>`` and the
  queue key into ``rq:queues``.

Every key is named under the run's key prefix (``rq`` above; ``RQ_KEY_PREFIX`` of rq 3.0): see :mod:`rqdoctor.rqkeys`.

The keys read in the transaction are WATCHed: if anyone (a worker, rq's own cleanup) touches them
between the check and the write, nothing is written and the move is retried from the start.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from rqdoctor.diagnose.findings import Remedy
from rqdoctor.rqkeys import Keys

DEFAULT_KEYS = Keys()
DEFAULT_FAILURE_TTL = 31536000
"""rq's ``DEFAULT_FAILURE_TTL``: one year."""
ENDED = {b"finished", b"failed", b"stopped", b"canceled"}
RUNNABLE = {b"queued", b"started"}
RETRIES = 3
"""Attempts of one move when a WATCHed key changes under it."""
BIRTH_SLACK_S = 3.0
RESULT_FAILED = b"2"


@dataclass
class Outcome:
    """What one move did: ``done``, ``nothing`` (already as wanted), ``refused`` or ``failed``, and the changes."""

    result: str
    detail: str
    changes: list[str] = field(default_factory=list)


def _s(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _iso(now: float) -> bytes:
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


def _transaction(client: redis.Redis, keys: list[bytes], body: Callable[[Any], Outcome]) -> Outcome:
    """Run ``body(pipe)`` under WATCH ``keys``; it reads, then calls ``pipe.multi()`` and queues writes."""
    for _ in range(RETRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*keys)
                outcome = body(pipe)
                if pipe.explicit_transaction:
                    pipe.execute()
                return outcome
            except redis.WatchError:
                continue
    return Outcome("failed", f"the keys changed under {RETRIES} attempts (a worker is active on them): run again")


def exc_text(reason: str, now: float, user: str) -> str:
    """The ``exc_info`` rqdoctor writes: who moved the job, when and why (readable in rq-dashboard and Frappe)."""
    return (f"Moved to FailedJobRegistry by rqdoctor (stuck --kill, user {user}) at {_s(_iso(now))}: {reason}\n")


def _fail_writes(k: Keys, pipe: Any, job_id: bytes, queue: bytes, ttl_raw: bytes | None, text: str,
                 now: float) -> list[str]:
    ttl = int(ttl_raw) if ttl_raw and ttl_raw.lstrip(b"-").isdigit() else DEFAULT_FAILURE_TTL
    score = ttl if ttl < 0 else now + ttl
    job_key, results_key = k.base + b"job:" + job_id, k.base + b"results:" + job_id
    failed_key = k.base + b"failed:" + queue
    pipe.hset(job_key, mapping={b"status": b"failed", b"ended_at": _iso(now),
                                b"exc_info": zlib.compress(text.encode("utf-8"))})
    pipe.zadd(failed_key, {job_id: score})
    pipe.xadd(results_key, {b"type": RESULT_FAILED, b"worker_name": b"",
                            b"exc_string": base64.b64encode(zlib.compress(text.encode("utf-8")))}, maxlen=10)
    if ttl > 0:
        pipe.expire(job_key, ttl)
        pipe.expire(results_key, ttl)
    return [f"HSET {_s(job_key)} status=failed ended_at exc_info", f"ZADD {_s(failed_key)}",
            f"XADD {_s(results_key)} (failed result)"]


def _requeue_writes(k: Keys, pipe: Any, job_id: bytes, queue: bytes, now: float) -> list[str]:
    job_key, queue_key = k.base + b"job:" + job_id, k.base + b"queue:" + queue
    pipe.hset(job_key, mapping={b"status": b"queued", b"enqueued_at": _iso(now)})
    pipe.rpush(queue_key, job_id)
    pipe.sadd(k.base + b"queues", queue_key)
    return [f"HSET {_s(job_key)} status=queued enqueued_at", f"RPUSH {_s(queue_key)}"]


def _execution_writes(k: Keys, pipe: Any, job_id: bytes, execution_id: str | None, worker: str | None) -> list[str]:
    if not execution_id:
        return []
    exec_id = _b(execution_id)
    composite = job_id + b":" + exec_id
    pipe.delete(k.base + b"execution:" + composite)
    pipe.zrem(k.base + b"executions:" + job_id, exec_id)
    changes = [f"DEL {k.prefix}:execution:{_s(composite)}", f"ZREM {k.prefix}:executions:{_s(job_id)}"]
    if worker:
        pipe.srem(k.base + b"worker:" + _b(worker) + b":executions", composite)
        changes.append(f"SREM {k.prefix}:worker:{worker}:executions")
    return changes


def move_started(client: redis.Redis, remedy: Remedy, reason: str, requeue: bool, user: str,
                 now: Callable[[], float] = time.time, k: Keys = DEFAULT_KEYS) -> Outcome:
    """Move a started entry no process runs any more to failed (or its queue), atomically.

    A job that already ended (finished, failed, stopped, canceled) only loses its stale entry; a
    member whose job hash is gone is removed (there is no job to keep).
    """
    assert remedy.job_id and remedy.queue and remedy.member
    job_id, queue, member = _b(remedy.job_id), _b(remedy.queue), _b(remedy.member)
    wip, job_key = k.base + b"wip:" + queue, k.base + b"job:" + job_id

    def body(pipe: Any) -> Outcome:
        if pipe.zscore(wip, member) is None:
            return Outcome("nothing", f"{remedy.member} is no longer in {k.prefix}:wip:{remedy.queue}")
        exists = pipe.exists(job_key)
        status, ttl_raw = pipe.hmget(job_key, "status", "failure_ttl")
        pipe.multi()
        pipe.zrem(wip, member)
        changes = [f"ZREM {k.prefix}:wip:{remedy.queue} {remedy.member}"]
        changes += _execution_writes(k, pipe, job_id, remedy.execution_id, remedy.worker)
        if not exists:
            return Outcome("done", "removed a started entry whose job hash is gone", changes)
        if status in ENDED:
            return Outcome("done", f"removed the stale started entry of a job already {_s(status)}", changes)
        if requeue:
            changes += _requeue_writes(k, pipe, job_id, queue, now())
            return Outcome("done", f"requeued onto {remedy.queue}", changes)
        changes += _fail_writes(k, pipe, job_id, queue, ttl_raw, exc_text(reason, now(), user), now())
        return Outcome("done", f"moved to {k.prefix}:failed:{remedy.queue}", changes)

    return _transaction(client, [wip, job_key], body)


def fail_zombie(client: redis.Redis, remedy: Remedy, reason: str, user: str,
                now: Callable[[], float] = time.time, k: Keys = DEFAULT_KEYS) -> Outcome:
    """Mark a zombie job hash failed: it says queued/started but is in no queue, registry or worker.

    Its queue list is WATCHed, so a worker cannot pick it up between the check and the write.
    """
    assert remedy.job_id
    job_id = _b(remedy.job_id)
    job_key = k.base + b"job:" + job_id
    origin = _b(remedy.queue) if remedy.queue else client.hget(job_key, "origin")
    if not origin:
        return Outcome("refused", "the job hash names no queue (origin)")
    queue_key = k.base + b"queue:" + origin
    runner = _runner(client, remedy.job_id, k)
    if runner:
        return Outcome("refused", f"worker {runner} runs it")

    def body(pipe: Any) -> Outcome:
        status, ttl_raw = pipe.hmget(job_key, "status", "failure_ttl")
        if status not in RUNNABLE:
            return Outcome("nothing", f"its status is now {_s(status) or 'gone'}")
        where = _where_listed(k, pipe, job_id, origin)
        if where:
            return Outcome("refused", f"it is in {where}: not a zombie")
        pipe.multi()
        changes = _fail_writes(k, pipe, job_id, origin, ttl_raw, exc_text(reason, now(), user), now())
        return Outcome("done", f"marked failed (was {_s(status)}), in {k.prefix}:failed:{_s(origin)}", changes)

    return _transaction(client, [job_key, queue_key, k.base + b"wip:" + origin], body)


def _where_listed(k: Keys, pipe: Any, job_id: bytes, queue: bytes) -> str:
    """The queue list or registry of ``queue`` that holds ``job_id`` (any member format), else ``''``."""
    for key in (k.base + b"queue:" + queue, k.base + b"queue:" + queue + b":intermediate"):
        if job_id in pipe.lrange(key, 0, -1):
            return _s(key)
    wip = k.base + b"wip:" + queue
    if pipe.zscore(wip, job_id) is not None:
        return _s(wip)
    for member, _ in pipe.zscan_iter(wip, match=_glob_escape(job_id) + b":*", count=1000):
        if member.startswith(job_id + b":"):
            return _s(wip)
    return ""


def find_started(client: redis.Redis, job_id: str, k: Keys = DEFAULT_KEYS) -> tuple[str, str] | None:
    """The queue (the job's ``origin``) and started-registry member of ``job_id``, when it is in that registry."""
    origin = client.hget(k.base + b"job:" + _b(job_id), "origin")
    if not origin:
        return None
    wip, raw = k.base + b"wip:" + origin, _b(job_id)
    if client.zscore(wip, raw) is not None:
        return _s(origin), job_id
    for member, _ in client.zscan_iter(wip, match=_glob_escape(raw) + b":*", count=1000):
        if member.startswith(raw + b":"):
            return _s(origin), _s(member)
    return None


def _glob_escape(value: bytes) -> bytes:
    """``value`` as a literal in a Redis MATCH pattern."""
    out = bytearray()
    for byte in value:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _runner(client: redis.Redis, job_id: str, k: Keys) -> str | None:
    """The registered worker whose ``current_job`` or rq 3.0 executions name ``job_id``, if any."""
    keys = list(client.smembers(k.base + b"workers"))
    if not keys:
        return None
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "current_job")
            pipe.smembers(key + b":executions")
        replies = pipe.execute()
    wanted = _b(job_id)
    for i, key in enumerate(keys):
        current, executions = replies[2 * i], replies[2 * i + 1]
        if current == wanted or any(m.startswith(wanted + b":") for m in executions or ()):
            return _s(key).removeprefix(k.s("worker:"))
    return None


def client_names(client: redis.Redis) -> set[str]:
    """Names of the connected Redis clients (``CLIENT LIST``): each rq worker names its connection after itself."""
    return {_text(c.get("name")) for c in client.client_list() if c.get("name")}


def _text(value: Any) -> str:
    return _s(value) if isinstance(value, bytes) else str(value)


def prune_worker(client: redis.Redis, remedy: Remedy, host: str, k: Keys = DEFAULT_KEYS) -> Outcome:
    """Remove a ghost worker hash and its set memberships, once no process and no connection is its own."""
    assert remedy.worker
    name = remedy.worker
    try:
        if name in client_names(client):
            return Outcome("refused", f"a Redis client named {name} is connected: the worker is alive")
    except redis.ResponseError as exc:
        return Outcome("refused", f"CLIENT LIST is not allowed ({exc}): cannot confirm no connection is the worker's")
    key = k.base + b"worker:" + _b(name)

    def body(pipe: Any) -> Outcome:
        fields = pipe.hgetall(key)
        alive = _worker_process_alive(fields, host)
        if alive:
            return Outcome("refused", alive)
        queues = [q for q in _s(fields.get(b"queues")).split(",") if q]
        pipe.multi()
        pipe.delete(key, key + b":executions")
        pipe.srem(k.base + b"workers", key)
        for queue in queues:
            pipe.srem(k.base + b"workers:" + _b(queue), key)
        changes = [f"DEL {k.prefix}:worker:{name} (and :executions)", f"SREM {k.prefix}:workers"]
        changes += [f"SREM {k.prefix}:workers:{q}" for q in queues]
        return Outcome("done", "removed the ghost worker hash" if fields else "removed a stale worker-set member",
                       changes)

    return _transaction(client, [key], body)


def worker_alive(client: redis.Redis, worker: str, host: str, k: Keys = DEFAULT_KEYS) -> str:
    """Why worker ``worker``'s process may still be alive (``''``: its hash names no live process)."""
    return _worker_process_alive(client.hgetall(k.base + b"worker:" + _b(worker)), host)


def _worker_process_alive(fields: dict[bytes, bytes], host: str) -> str:
    """Why the hash's process may be alive (``''``: it is not, or the hash names none)."""
    hostname, pid_raw = _s(fields.get(b"hostname")), fields.get(b"pid")
    if not pid_raw:
        return ""
    if hostname and hostname != host:
        return f"its process is on host {hostname}: cannot confirm it is gone from here"
    try:
        proc = psutil.Process(int(pid_raw))
        started = proc.create_time()
        zombie = proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):
        return ""
    except psutil.Error as exc:
        return f"pid {_s(pid_raw)} cannot be read ({type(exc).__name__})"
    birth = _birth(fields.get(b"birth"))
    if zombie or (birth is not None and started > birth + BIRTH_SLACK_S):
        return ""  # exited, or the pid now belongs to a process started after the worker's birth
    return f"pid {_s(pid_raw)} is alive and may be the worker"


def _birth(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        return dt.datetime.fromisoformat(_s(raw).replace("Z", "+00:00")).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return None


def publish_stop(client: redis.Redis, remedy: Remedy, version: str | None, k: Keys = DEFAULT_KEYS) -> int:
    """RQ's stop command on the worker's channel; returns how many subscribers received it (0: nobody listens).

    rq 3.0 stops one execution (``stop-execution``) when the execution id is known; older versions and
    a missing id get ``stop-job``. The worker kills its horse and marks the job ``stopped``.
    """
    assert remedy.worker and remedy.job_id
    payload: dict[str, str] = {"command": "stop-job", "job_id": remedy.job_id}
    if remedy.execution_id and (version or "").split(".")[0].isdigit() and int((version or "0").split(".")[0]) >= 3:
        payload = {"command": "stop-execution", "job_id": remedy.job_id, "execution_id": remedy.execution_id}
    return int(client.publish(k.base + b"pubsub:" + _b(remedy.worker), json.dumps(payload)))


@dataclass
class JobState:
    """The job as Redis holds it now."""

    status: str
    in_failed: bool
    in_started: bool
    current: bool
    """Its worker still names it as current (``current_job``, or an rq 3.0 execution)."""
    worker_pid: int | None


def job_state(client: redis.Redis, remedy: Remedy, k: Keys = DEFAULT_KEYS) -> JobState:
    """Status, failed/started registry membership and whether its worker still runs it (one round trip)."""
    assert remedy.job_id
    job_id = _b(remedy.job_id)
    queue = _b(remedy.queue or "")
    with client.pipeline(transaction=False) as pipe:
        pipe.hget(k.base + b"job:" + job_id, "status")
        pipe.zscore(k.base + b"failed:" + queue, job_id)
        pipe.zscore(k.base + b"wip:" + queue, _b(remedy.member or remedy.job_id))
        worker = k.base + b"worker:" + _b(remedy.worker or "")
        pipe.hmget(worker, "current_job", "pid")
        pipe.smembers(worker + b":executions")
        status, failed, started, (current, pid), executions = pipe.execute()
    runs = current == job_id or any(m.startswith(job_id + b":") for m in executions or ())
    return JobState(_s(status), failed is not None, started is not None, bool(remedy.worker) and runs,
                    int(pid) if pid and pid.isdigit() else None)


def worker_pids(client: redis.Redis, host: str, k: Keys = DEFAULT_KEYS) -> set[int]:
    """Pids of the registered workers on ``host`` (read now, for the never-signal-a-worker check)."""
    keys = list(client.smembers(k.base + b"workers"))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "pid", "hostname")
        replies = pipe.execute() if keys else []
    return {int(pid) for pid, hostname in replies if pid and pid.isdigit() and _s(hostname) == host}
