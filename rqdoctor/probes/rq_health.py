"""Bench health: rq's cron schedulers, the named client connections, recent failures, OOM kills (cgroup
``memory.events`` and the kernel log).

Read-only and raw (never the rq library, which prunes: ``CronScheduler.all()`` cleans ``rq:cron_schedulers``
by default). ``exc_info`` is zlib-decompressed text (or the newest ``rq:results:<id>`` entry's base64
``exc_string``): job data is never unpickled. Bounded: :data:`MAX_CRON`, :data:`PER_QUEUE`, :data:`MAX_FAILED`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import zlib
from pathlib import Path
from typing import Any

import redis

from rqdoctor.jobids import method_of
from rqdoctor.model import CronSchedulerInfo, FailedJob, HealthState, ProbeError, ProcessInfo, RedisState
from rqdoctor.probes.redis_rq import _text, _ts
from rqdoctor.redact import redact_text
from rqdoctor.rqkeys import Keys

PROBE = "health"
MAX_CRON = 50
PER_QUEUE = 20
"""Newest entries read from each queue's failed registry."""
MAX_FAILED = 200
TAIL_LINES = 3
CRON_JOB_FIELDS = ("func_name", "queue_name", "cron", "interval", "latest_enqueue_time", "next_enqueue_time")


def read_redis_health(client: redis.Redis, state: RedisState, health: HealthState, errors: list[ProbeError],
                      keys: Keys | None = None) -> None:
    """Fill ``health`` with the cron schedulers, client names and recent failures (each part on its own)."""
    for part in (_cron, _clients, _failed):
        try:
            part(client, state, health, keys or Keys())
        except redis.ResponseError as exc:
            errors.append(ProbeError(PROBE, "permission" if "NOPERM" in str(exc) else "error",
                                     f"{part.__name__.strip('_')}: Redis refused a read ({exc})", ""))
        except redis.RedisError as exc:
            errors.append(ProbeError(PROBE, "error", f"{part.__name__.strip('_')}: {exc}", ""))


def _cron(client: redis.Redis, state: RedisState, health: HealthState, keys: Keys) -> None:
    entries = client.zrange(keys.b("cron_schedulers"), 0, MAX_CRON - 1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for name, _ in entries:
        pipe.hgetall(keys.b("cron_scheduler:", name))
    for (name, score), raw in zip(entries, pipe.execute() if entries else [], strict=True):
        info = CronSchedulerInfo(_text(name), last_heartbeat=float(score), hash_exists=bool(raw))
        fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
        info.hostname = fields.get("hostname") or None
        info.pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else None
        info.created_at = _ts(fields.get("created_at"))
        try:
            jobs = json.loads(fields.get("cron_jobs") or "[]")
        except json.JSONDecodeError:
            jobs = []
        info.jobs = [{k: str(j.get(k)) for k in CRON_JOB_FIELDS if j.get(k) is not None}
                     for j in jobs if isinstance(j, dict)][:100]
        health.cron_schedulers.append(info)
    health.cron_read = True


def _clients(client: redis.Redis, state: RedisState, health: HealthState, keys: Keys) -> None:
    health.client_names = sorted({_text(c.get("name")) for c in client.client_list() if c.get("name")})


def _failed(client: redis.Redis, state: RedisState, health: HealthState, keys: Keys) -> None:
    queues = [q for q in state.queues if q.failed]
    health.failed_total = sum(q.failed for q in state.queues)
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.zrevrange(keys.b("failed:", q.name), 0, PER_QUEUE - 1)
    ids = [(q.name, job_id) for q, members in zip(queues, pipe.execute() if queues else [], strict=True)
           for job_id in members][:MAX_FAILED]
    pipe = client.pipeline(transaction=False)
    for _, job_id in ids:
        pipe.hmget(keys.b("job:", job_id), "description", "ended_at", "exc_info")
        pipe.xrevrange(keys.b("results:", job_id), count=1)
    replies = pipe.execute() if ids else []
    for n, (queue, job_id) in enumerate(ids):
        (description, ended, exc_info), results = replies[2 * n], replies[2 * n + 1]
        text = _result_error(results) or decompress(exc_info)
        health.failed.append(FailedJob(_text(job_id), queue, method_of(_text(description) if description else None,
                                                                         _text(job_id)),
                                       _ts(_text(ended)) if ended else None, exists=description is not None,
                                       error_tail=tail(text)))
    health.failed_read = True


def decompress(raw: bytes | None) -> str:
    """``exc_info`` as rq stores it: zlib-compressed text, or plain text from old writers."""
    if not raw:
        return ""
    try:
        return zlib.decompress(raw).decode("utf-8", "replace")
    except zlib.error:
        return raw.decode("utf-8", "replace")


def _result_error(results: list[Any]) -> str:
    """The ``exc_string`` of the newest result entry (rq >= 1.12: base64 of zlib), when it is a failure."""
    if not results:
        return ""
    _, fields = results[0]
    value = fields.get(b"exc_string")
    if not value:
        return ""
    try:
        return decompress(base64.b64decode(value))
    except (binascii.Error, ValueError):
        return decompress(value)


def tail(text: str) -> list[str]:
    """The last :data:`TAIL_LINES` non-empty lines, each cut to 300 characters, secrets masked."""
    lines = [redact_text(line.rstrip()[:300]) for line in text.splitlines() if line.strip()]
    return lines[-TAIL_LINES:]


def oom_kills(processes: list[ProcessInfo], root: Path = Path("/sys/fs/cgroup")) -> dict[str, int]:
    """``oom_kill`` of the cgroup v2 ``memory.events`` of each worker process's cgroup (readable ones only)."""
    out: dict[str, int] = {}
    for p in processes:
        if not p.worker_like:
            continue
        try:
            lines = Path(f"/proc/{p.pid}/cgroup").read_text(encoding="ascii", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("0::"):
                continue
            events = root / line[3:].lstrip("/") / "memory.events"
            if str(events) in out:
                continue
            try:
                counts = dict(row.split() for row in events.read_text(encoding="ascii").splitlines() if " " in row)
                out[str(events)] = int(counts.get("oom_kill", 0))
            except (OSError, ValueError):
                continue
    return out


KMSG_RECORDS = 100_000
OOM_WORDS = ("Out of memory", "Killed process", "oom-kill")


def kernel_oom(window_s: float = 3600, path: str = "/dev/kmsg") -> list[str] | None:
    """The kernel log's OOM lines of the last ``window_s`` seconds (at most 20), or None when it cannot be read.

    ``/dev/kmsg`` is read non-blocking from its oldest record to the end, one record per read, bounded by
    :data:`KMSG_RECORDS`; a record's time is microseconds since boot (compared with ``/proc/uptime``).
    """
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    found: list[str] = []
    try:
        for _ in range(KMSG_RECORDS):
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # overwritten while reading: go on with the next one
                break  # EAGAIN: the end
            if not record:
                break  # end of a plain file (tests)
            head, _, message = record.partition(";")
            fields = head.split(",")
            if len(fields) < 3 or not fields[2].isdigit():
                continue
            if uptime - int(fields[2]) / 1e6 <= window_s and any(w in message for w in OOM_WORDS):
                found.append(redact_text(message.strip().splitlines()[0][:300]))
    finally:
        os.close(fd)
    return found[-20:]


def read_kernel_oom(health: HealthState) -> None:
    """Fill ``health.kernel_oom`` when the kernel log can be read."""
    lines = kernel_oom()
    if lines is not None:
        health.kernel_log_read, health.kernel_oom = True, lines
