"""Job-hash scan for ``stuck``: every ``rq:job:*`` hash that says queued/started, and where it is held.

Read-only and bounded: SCAN with COUNT (at most :data:`SCAN_LIMIT` keys, stopping at the deadline, the
coverage stated), HMGET of the plain fields only (never ``data``), pipelined per SCAN batch. Known
ids (Frappe's ``<site>::scheduled_job::<method>``) are looked up directly, whatever the scan reaches.
Each candidate is then checked against its ``origin``'s queue and ``:intermediate`` lists (each read once),
its started registry, ZSCORE in its scheduled and deferred registries, with its status read again: a status
that changed meanwhile is left unchecked (no verdict).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from rqdoctor.deadline import Deadline
from rqdoctor.jobids import method_of, site_of, split_member
from rqdoctor.model import JobHash, JobScan, ProbeError, RedisState
from rqdoctor.probes.redis_rq import _failures, _text, _ts, _where
from rqdoctor.redact import redact_text
from rqdoctor.rqkeys import Keys

PROBE = "jobscan"
SCAN_COUNT = 1000
SCAN_LIMIT = 200_000
"""Keys read at most; a bigger keyspace gives a partial scan (said so), plus the direct lookups."""
FIELDS = ("status", "origin", "description", "created_at", "enqueued_at", "started_at", "worker_name")
LIVE = {"queued", "started"}
LIST_LIMIT = 100_000
"""A queue list longer than this is not read: its queued candidates stay unchecked (no verdict)."""
_SUFFIXES = (b":dependents", b":dependencies")


def scan_jobs(client: redis.Redis, state: RedisState, queue_filter: str | None, deadline: Deadline,
              errors: list[ProbeError], known_ids: Iterable[str] = (), limit: int = SCAN_LIMIT,
              keys: Keys | None = None) -> JobScan:
    """Scan job hashes and check where each queued/started one is held (see the module docstring)."""
    with _failures(_where(client)):
        return _scan(client, state, queue_filter, deadline, errors, known_ids, limit, keys or Keys())


def _scan(client: redis.Redis, state: RedisState, queue_filter: str | None, deadline: Deadline,
          errors: list[ProbeError], known_ids: Iterable[str], limit: int, k: Keys) -> JobScan:
    scan = JobScan(limit=limit)
    found: dict[bytes, JobHash] = {}
    cursor = 0
    while True:
        if deadline.expired():
            scan.stopped_by = "deadline"
            break
        cursor, keys = client.scan(cursor=cursor, match=k.job_prefix + b"*", count=SCAN_COUNT)
        keys = [key for key in keys if not key.endswith(_SUFFIXES) and not key.startswith(k.job_prefix + b":")]
        scan.keys_seen += len(keys)
        _read(client, k, keys, found, queue_filter, direct=False)
        if cursor == 0:
            scan.complete = True
            break
        if scan.keys_seen >= limit:
            scan.stopped_by = "limit"
            break
    direct = [k.job_prefix + i.encode() for i in dict.fromkeys(known_ids)]
    _read(client, k, [key for key in direct if key not in found], found, queue_filter, direct=True)
    if not deadline.expired():
        _check(client, k, state, found)
    else:
        errors.append(ProbeError(PROBE, "timeout", "job hashes found but not checked against their queues "
                                 "within the deadline: no zombie verdict", "raise --timeout"))
    if not scan.complete:
        errors.append(ProbeError(PROBE, "truncated", f"job-hash scan stopped by the {scan.stopped_by} after "
                                 f"{scan.keys_seen} keys: zombie job hashes beyond them were not seen",
                                 "raise --timeout" if scan.stopped_by == "deadline" else ""))
    scan.jobs = sorted(found.values(), key=lambda j: j.job_id)
    return scan


def _read(client: redis.Redis, k: Keys, keys: list[bytes], found: dict[bytes, JobHash], queue_filter: str | None,
          direct: bool) -> None:
    if not keys:
        return
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, list(FIELDS))
        replies = pipe.execute(raise_on_error=False)
    for key, values in zip(keys, replies, strict=True):
        if not isinstance(values, list):
            continue  # not a hash (WRONGTYPE): not a job
        fields = {n: _text(v) for n, v in zip(FIELDS, values, strict=True) if v is not None}
        status, origin = fields.get("status"), fields.get("origin") or None
        if status not in LIVE or (queue_filter and not (origin or "").startswith(queue_filter)):
            continue
        job_id = _text(key[len(k.job_prefix):])
        description = fields.get("description")
        found[key] = JobHash(
            job_id=job_id, status=status, origin=origin, description=redact_text(description) if description else None,
            created_at=_ts(fields.get("created_at")), enqueued_at=_ts(fields.get("enqueued_at")),
            started_at=_ts(fields.get("started_at")), worker_name=fields.get("worker_name") or None,
            site=site_of(job_id, description), method=method_of(description, job_id), direct=direct)


def _check(client: redis.Redis, k: Keys, state: RedisState, found: dict[bytes, JobHash]) -> None:
    """Where each candidate is held: queue lists, registries, workers; its status read again.

    Each origin's lists are read once (LRANGE, up to :data:`LIST_LIMIT` ids; a longer list leaves its
    queued candidates unchecked), never one LPOS per candidate, which is quadratic on a long backlog.
    """
    running = {j: w.name for w in state.workers for j in _worker_jobs(w.current_job, w.executions)}
    origins = sorted({j.origin for j in found.values() if j.origin})
    keys = {o: (k.queue_prefix + o.encode(), k.queue_prefix + o.encode() + b":intermediate") for o in origins}
    with client.pipeline(transaction=False) as pipe:
        for origin in origins:
            pipe.llen(keys[origin][0])
            pipe.llen(keys[origin][1])
        lengths = pipe.execute(raise_on_error=False)
    readable = {o for n, o in enumerate(origins)
                if all(isinstance(x, int) and x <= LIST_LIMIT for x in lengths[2 * n: 2 * n + 2])}
    with client.pipeline(transaction=False) as pipe:
        for origin in origins:
            pipe.zrange(k.registries["started"] + origin.encode(), 0, -1)
            for key in keys[origin]:
                if origin in readable:
                    pipe.lrange(key, 0, LIST_LIMIT)
                else:
                    pipe.echo(b"")  # keeps the reply slots in step
        for key, job in found.items():
            raw = key[len(k.job_prefix):]
            q = (job.origin or "").encode()
            pipe.hget(key, "status")
            pipe.zscore(k.registries["scheduled"] + q, raw)
            pipe.zscore(k.registries["deferred"] + q, raw)
        replies = pipe.execute(raise_on_error=False)
    places: dict[str, dict[str, set[str]]] = {}
    for n, origin in enumerate(origins):
        wip, queued, inter = replies[3 * n: 3 * n + 3]
        if origin in readable and all(isinstance(r, list) for r in (wip, queued, inter)):
            places[origin] = {"started": {split_member(_text(m))[0] for m in wip},
                              "queue": {_text(m) for m in queued}, "intermediate": {_text(m) for m in inter}}
    rest = replies[3 * len(origins):]
    for n, job in enumerate(found.values()):
        status, scheduled, deferred = rest[3 * n: 3 * n + 3]
        where = places.get(job.origin or "")
        if where is None or any(isinstance(a, redis.RedisError) for a in (status, scheduled, deferred)) \
                or _text(status) != job.status:
            continue  # unreadable, too long to read, or changed meanwhile: no verdict
        held = [name for name in ("queue", "intermediate", "started") if job.job_id in where[name]]
        held += [name for name, hit in (("scheduled", scheduled), ("deferred", deferred)) if hit is not None]
        if job.job_id in running:
            held.append(f"worker {running[job.job_id]}")
        job.held_by, job.checked = held, True


def _worker_jobs(current: str | None, executions: list[str]) -> set[str]:
    return {split_member(e)[0] for e in executions} | ({current} if current else set())
