"""Bulk-load a realistic RQ state into a Redis DB, and count commands with MONITOR."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from dataclasses import dataclass, field

import redis

HOSTS = 25
WORKER_QUEUES = (("short", "default"), ("long", "default", "short"), ("short",), ("default",), ("long",))
"""Queue types of worker i, cycling (Frappe's usual `bench worker --queue …` mixes)."""
QUEUE_TYPES = ("short", "default", "long")
FAILURE_TTL = 7 * 24 * 3600
BATCH = 5_000


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_workers(r: redis.Redis, bench_id: str, count: int, now: float) -> None:
    """``count`` idle rq 2.6 worker hashes on remote hosts, ``rq:workers`` and ``rq:workers:<q>``."""
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        key = f"rq:worker:{uuid.UUID(int=i + 1).hex}"
        queues = [f"{bench_id}:{q}" for q in WORKER_QUEUES[i % len(WORKER_QUEUES)]]
        pipe.hset(key, mapping={
            "birth": _iso(now - 86400), "last_heartbeat": _iso(now - i % 30), "queues": ",".join(queues),
            "pid": 10_000 + i, "hostname": f"bench-host-{i % HOSTS:02d}", "ip_address": f"10.0.0.{i % HOSTS}:5{i:04d}",
            "version": "2.6.1", "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
            "state": "idle", "successful_job_count": i * 7, "failed_job_count": i % 3,
            "total_working_time": f"{i * 1.5:.6f}", "current_job_working_time": "0",
        })
        pipe.expire(key, 3600)
        pipe.sadd("rq:workers", key)
        for q in queues:
            pipe.sadd(f"rq:workers:{q}", key)
    pipe.sadd("rq:queues", *(f"rq:queue:{bench_id}:{q}" for q in QUEUE_TYPES))
    pipe.execute()


def add_jobs(r: redis.Redis, bench_id: str, queued: range, failed: range, now: float) -> None:
    """Queued job ids (with their plain-field job hashes, no pickled data) and failed ids (ids only)."""
    for chunk in _chunks(queued):
        pipe = r.pipeline(transaction=False)
        by_queue: dict[str, list[str]] = {}
        for i in chunk:
            job_id, queue = f"site{i % 4 + 1}.local::queued-{i:08d}", f"{bench_id}:{QUEUE_TYPES[i % 3]}"
            by_queue.setdefault(queue, []).append(job_id)
            stamp = _iso(now - 3600 + i / 1000)
            pipe.hset(f"rq:job:{job_id}", mapping={
                "status": "queued", "origin": queue, "created_at": stamp, "enqueued_at": stamp, "timeout": "300",
                "description": _frappe_call(i),
                "failure_ttl": str(FAILURE_TTL), "result_ttl": "600",
            })
        for queue, ids in by_queue.items():
            pipe.rpush(f"rq:queue:{queue}", *ids)
        pipe.execute()
    for chunk in _chunks(failed):
        pipe = r.pipeline(transaction=False)
        by_registry: dict[str, dict[str, float]] = {}
        for i in chunk:
            registry = f"rq:failed:{bench_id}:{QUEUE_TYPES[i % 3]}"
            by_registry.setdefault(registry, {})[f"site{i % 4 + 1}.local::failed-{i:08d}"] = now + FAILURE_TTL
        for registry, members in by_registry.items():
            pipe.zadd(registry, members)
        pipe.execute()


def add_history(r: redis.Redis, bench_id: str, finished: range, now: float) -> None:
    """Finished runs (job hashes with start and end times, live registry entries) and one started job.

    The started job (no worker, no process) makes the probe read the run history: without a running
    job it reads only the registry ranges. Scores are an hour ahead, so ``rq info`` cleans nothing.
    """
    for chunk in _chunks(finished):
        pipe = r.pipeline(transaction=False)
        by_registry: dict[str, dict[str, float]] = {}
        for i in chunk:
            job_id, queue = f"site{i % 4 + 1}.local::finished-{i:08d}", f"{bench_id}:{QUEUE_TYPES[i % 3]}"
            by_registry.setdefault(f"rq:finished:{queue}", {})[job_id] = now + 3600
            started = now - 3000 + i / 1000
            pipe.hset(f"rq:job:{job_id}", mapping={
                "status": "finished", "origin": queue, "started_at": _iso(started),
                "ended_at": _iso(started + 0.5 + i % 10), "description": _frappe_call(i), "result_ttl": "3600",
            })
        for registry, members in by_registry.items():
            pipe.zadd(registry, members)
        pipe.execute()
    if finished:
        job_id = "site1.local::running-00000000"
        r.zadd(f"rq:wip:{bench_id}:long", {job_id: now + 3600})
        r.hset(f"rq:job:{job_id}", mapping={"status": "started", "origin": f"{bench_id}:long", "timeout": "1500",
                                            "started_at": _iso(now - 60), "description": _frappe_call(0)})


def _frappe_call(i: int) -> str:
    method = f"erpnext.tasks.job_{i % 50}"
    return (f"frappe.utils.background_jobs.execute_job(event=None, is_async=True, job_name='{method}', "
            f"kwargs={{}}, method='{method}', site='site{i % 4 + 1}.local', user='Administrator')")


def _chunks(ids: range) -> list[range]:
    return [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]


def fingerprint(r: redis.Redis, bench_id: str) -> tuple[int, ...]:
    """Key count and the sizes that ``rq info`` could change (to show it changed nothing)."""
    pipe = r.pipeline(transaction=False)
    pipe.dbsize()
    pipe.scard("rq:workers")
    for q in QUEUE_TYPES:
        pipe.llen(f"rq:queue:{bench_id}:{q}")
        pipe.zcard(f"rq:failed:{bench_id}:{q}")
        pipe.scard(f"rq:workers:{bench_id}:{q}")
    return tuple(pipe.execute())


@dataclass
class MonitorCount:
    """Counts the commands Redis executes in DB ``db`` (any client) while the block runs.

    MONITOR sees every command of the server; those of other DBs are ignored. On exit a
    sentinel ECHO is sent and counting stops when MONITOR shows it, so nothing is missed.
    """

    url: str
    db: int
    commands: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> MonitorCount:
        self._sentinel = f"rqd-bench-sentinel-{uuid.uuid4().hex}"
        self._poker = redis.Redis.from_url(self.url)
        self._poker.ping()
        self._client = redis.Redis.from_url(self.url, socket_timeout=60)
        self._monitor = self._client.monitor().__enter__()
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()
        return self

    def _count(self) -> None:
        for entry in self._monitor.listen():
            if int(entry["db"]) != self.db:
                continue
            if self._sentinel in entry["command"]:
                return
            name = entry["command"].split(" ", 1)[0].upper()
            self.commands[name] = self.commands.get(name, 0) + 1

    def __exit__(self, *exc: object) -> None:
        self._poker.echo(self._sentinel)
        self._thread.join(timeout=60)
        self._monitor.__exit__()
        self._client.close()
        self._poker.close()

    @property
    def total(self) -> int:
        return sum(self.commands.values())
