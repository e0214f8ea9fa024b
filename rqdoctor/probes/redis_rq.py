"""Redis probe: RQ's workers, queues and started jobs, read from raw keys, read-only, pipelined.

It never imports ``rq`` (its reads clean registries, prune worker sets and rewrite socket
timeouts, and its 2.x job-id checks reject Frappe ids) and never reads a job's pickled ``data``.
Reads are batched into pipelines (``transaction=False``), each scheduled from what the previous
one revealed, so the number of round trips does not grow with workers, queues or jobs:

1. TIME, INFO server, SMEMBERS ``rq:workers`` and ``rq:queues``, EXISTS ``rq:suspended``;
2. per worker TYPE, HGETALL, TTL and SMEMBERS ``rq:worker:<name>:executions`` (rq 3.0);
   per queue LLEN of the list and its ``:intermediate`` list, LINDEX 0, ZCARD of the six
   registries, ZRANGE WITHSCORES of ``rq:wip:<q>`` and TTL of ``rq:clean_registries:<q>`` (the
   maintenance lock); per queue the filter hides, LLEN and ZCARD of ``rq:wip:<q>`` (to say what the
   filter hid);
3. HMGET of the plain fields of every started job (wip members, ``current_job``, executions)
   and of its ``rq:execution:`` hash (rq >= 2), ``enqueued_at`` of each queue's oldest job, and
   the queue reads of step 2 for queues that workers listen on but ``rq:queues`` lacks;
4. and 5., only when step 3 found some: jobs of those queues, and workers named by a job's
   ``worker_name`` that are missing from ``rq:workers`` (``in_worker_set=False``).

Run history rides along: with each queue's reads, ZREVRANGEBYSCORE of the newest live entries of
``rq:finished:<q>`` and ``rq:failed:<q>``; in the next round that has a started job to judge (3, or 4
for queues found in step 3), HMGET of ``status``, ``started_at``, ``ended_at`` and ``description`` of
each of those jobs, kept as durations per method in :class:`RunHistory`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqdoctor.errors import ConfigError, ProbeFailure
from rqdoctor.jobids import method_of, site_of, split_member
from rqdoctor.model import HiddenQueue, HiddenWorker, JobInfo, ProbeError, QueueInfo, RedisState, RunHistory, WorkerInfo
from rqdoctor.redact import redact_reason, redact_text, shown_url
from rqdoctor.rqkeys import Keys

JOB_FIELDS = ("status", "origin", "description", "timeout", "created_at", "enqueued_at", "started_at",
              "last_heartbeat", "worker_name")
"""Plain-text fields of ``rq:job:<id>`` (never ``data``, ``meta`` or ``exc_info``)."""
HISTORY_REGISTRIES = ("finished", "failed")
HISTORY_PER_REGISTRY = 100
"""Newest live entries read per queue from each of the finished and failed registries."""
HISTORY_FIELDS = ("status", "started_at", "ended_at", "description")
MAX_ROUNDS = 5
"""Safety net: the dependencies between reads end by round 5 (see the module docstring)."""
HINT = "check --redis-url (run `rqdoctor target` to see which Redis rqdoctor uses and why)"

_JobKey = tuple[bytes, str | None]


def connect(url: str, timeout: float) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix://, ``?db=``) that fails within ``timeout``.

    Socket and connect timeouts are ``timeout`` (even if the URL says otherwise), there are no
    retries, replies stay bytes, and it speaks RESP2 without ``HELLO`` or ``CLIENT SETINFO``
    (old servers, no connection metadata written). It PINGs once so that an unreachable server
    or bad credentials raise :class:`ProbeFailure` here.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
        "decode_responses": False,
    }
    options.update(_quiet_options())
    try:
        client = redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {shown_url(url)}: {redact_reason(exc)}", HINT) from None
    client.connection_pool.connection_kwargs.update(options)  # URL query options must not win
    try:
        with _failures(_where(client)):
            client.ping()
    except ProbeFailure:
        client.close()
        raise
    return client


def _quiet_options() -> dict[str, Any]:
    """Options that keep redis-py >= 5 on RESP2 without ``HELLO`` and without ``CLIENT SETINFO``."""
    params = inspect.signature(redis.Redis.__init__).parameters
    if "driver_info" in params:  # redis-py >= 7.1 (lib_name/lib_version deprecated)
        return {"driver_info": None, "protocol": 2}
    if "lib_name" in params:  # redis-py 5 to 7.0
        return {"lib_name": None, "lib_version": None, "protocol": 2}
    return {}  # redis-py 4.x sends neither


def read_rq_state(client: redis.Redis, queue_filter: str | None, errors: list[ProbeError],
                  keys: Keys | None = None) -> RedisState:
    """Read workers, queues and started jobs without changing anything.

    ``queue_filter`` keeps only queues whose name starts with it, and only workers that listen
    on at least one such queue or run one of the jobs shown, plus workers with no known queues
    at all (ghost hashes, stale ``rq:workers`` members, corrupt keys), which cannot be told
    apart from this bench's own. ``None`` keeps everything. ``keys`` names the keys (default: prefix ``rq``).
    Odd or corrupt keys become :class:`ProbeError` entries in ``errors``; a lost connection raises
    :class:`ProbeFailure`.
    """
    reader = _Reader(client, queue_filter, errors, keys or Keys())
    reader.first_round()
    while reader.next_round():
        pass
    return reader.result()


class _Round:
    """Commands sent in one pipeline; :meth:`add` returns the slot of the reply."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.replies: list[Any] = []

    def add(self, command: str, *args: Any, **kwargs: Any) -> int:
        self.calls.append((command, args, kwargs))
        return len(self.calls) - 1


class _Reader:
    """One read of RQ's keys: what is known so far and what the next round must fetch."""

    def __init__(self, client: redis.Redis, queue_filter: str | None, errors: list[ProbeError], keys: Keys) -> None:
        self.client = client
        self.k = keys
        self.queue_filter = queue_filter
        self.errors = errors
        self.where = _where(client)
        self.state = RedisState(server_time=0.0)
        self.reported: set[tuple[str, str]] = set()
        self.workers: dict[bytes, WorkerInfo] = {}
        self.queues: dict[bytes, QueueInfo] = {}
        self.jobs: dict[_JobKey, JobInfo] = {}
        self.execution_ids: dict[bytes, set[str | None]] = {}
        self.todo_workers: dict[bytes, bool] = {}
        """Worker key -> listed in ``rq:workers``."""
        self.todo_queues: dict[bytes, bool] = {}
        """Queue name -> listed in ``rq:queues``."""
        self.todo_jobs: list[_JobKey] = []
        self.todo_oldest: dict[bytes, bytes] = {}
        """Queue name -> id of its oldest queued job."""
        self.todo_history: dict[tuple[str, bytes], None] = {}
        """(registry, job id) of recent runs, read once some started job is known."""
        self.hidden: dict[str, HiddenQueue] = {}
        self.todo_hidden: list[bytes] = []

    def run(self, rnd: _Round) -> bool:
        """Send one round; False when there was nothing to send."""
        if not rnd.calls or self.state.round_trips >= MAX_ROUNDS:
            return False
        with _failures(self.where), self.client.pipeline(transaction=False) as pipe:
            for command, args, kwargs in rnd.calls:
                getattr(pipe, command)(*args, **kwargs)
            rnd.replies = pipe.execute(raise_on_error=False)
        self.state.round_trips += 1
        self.state.commands += len(rnd.calls)
        return True

    def reply(self, rnd: _Round, slot: int, subject: bytes, default: Any) -> Any:
        """The reply in ``slot``, or ``default`` (and a ProbeError) when that command failed."""
        value = rnd.replies[slot]
        if isinstance(value, redis.RedisError):
            error = _command_error(value, subject)
            if (error.kind, error.subject) not in self.reported:  # one error per key, not per command
                self.reported.add((error.kind, error.subject))
                self.errors.append(error)
            return default
        return value

    def wanted(self, queue: str) -> bool:
        return self.queue_filter is None or queue.startswith(self.queue_filter)

    def first_round(self) -> None:
        rnd = _Round()
        slots = (rnd.add("time"), rnd.add("info", "server"), rnd.add("smembers", self.k.workers),
                 rnd.add("smembers", self.k.queues), rnd.add("exists", self.k.suspended))
        self.run(rnd)
        now, info, workers, queues, suspended = (
            self.reply(rnd, slots[0], b"TIME", None),
            self.reply(rnd, slots[1], b"INFO server", {}),
            self.reply(rnd, slots[2], self.k.workers, set()),
            self.reply(rnd, slots[3], self.k.queues, set()),
            self.reply(rnd, slots[4], self.k.suspended, 0),
        )
        self.state.server_time = now[0] + now[1] / 1e6 if now else time.time()
        version = info.get("redis_version")
        self.state.redis_version = None if version is None else str(version)
        run_id = info.get("run_id")
        self.state.run_id = None if run_id is None else str(run_id)
        self.state.suspended = bool(suspended)
        self.todo_workers = dict.fromkeys(sorted(workers), True)
        prefix = self.k.queue_prefix
        for member in sorted(queues):
            name = member[len(prefix):]
            if not member.startswith(prefix):
                self.errors.append(_corrupt(self.k.queues, f"member {_text(member)!r} is not a {_text(prefix)} key"))
            elif self.wanted(_text(name)):
                self.todo_queues[name] = True
            else:
                self.hidden[_text(name)] = HiddenQueue(_text(name))
                self.todo_hidden.append(name)

    def next_round(self) -> bool:
        """Fetch everything the last round revealed; False when nothing was left to fetch."""
        rnd = _Round()
        queues = [(name, registered, _add_queue(rnd, self.k, name))
                  for name, registered in self.todo_queues.items()]
        workers = [(key, in_set, _add_worker(rnd, key)) for key, in_set in self.todo_workers.items()]
        jobs = [(key, _add_job(rnd, self.k, *key)) for key in self.todo_jobs]
        oldest = [(name, job_id, rnd.add("hmget", self.k.job_prefix + job_id, ["enqueued_at"]))
                  for name, job_id in self.todo_oldest.items()]
        ranges = _add_history_ranges(rnd, self.k, list(self.todo_queues), self.state.server_time)
        runs = self.add_history_jobs(rnd)
        wip = self.k.registries["started"]
        hidden = [(name, rnd.add("llen", self.k.queue_prefix + name), rnd.add("zcard", wip + name))
                  for name in self.todo_hidden]
        self.todo_queues, self.todo_workers, self.todo_jobs, self.todo_oldest = {}, {}, [], {}
        self.todo_hidden = []
        if not self.run(rnd):
            return False
        for name, registered, slots in queues:  # before workers: wip entries carry execution ids
            self.read_queue(rnd, name, registered, slots)
        for key, in_set, slots in workers:
            self.read_worker(rnd, key, in_set, slots)
        for key, slots in jobs:
            self.read_job(rnd, key, slots)
        for name, job_id, slot in oldest:
            values = self.reply(rnd, slot, self.k.job_prefix + job_id, [None])
            self.queues[name].oldest_enqueued_at = _ts(_text(values[0]))
        self.read_history_ranges(rnd, ranges)
        _read_history_jobs(rnd, runs, self.state.history)
        for name, queued, started in hidden:
            queue = self.hidden[_text(name)]
            queue.queued = _int(self.reply(rnd, queued, self.k.queue_prefix + name, None))
            queue.started = _int(self.reply(rnd, started, self.k.registries["started"] + name, None))
        return True

    def add_history_jobs(self, rnd: _Round) -> list[tuple[str, bytes, int]]:
        """HMGETs of the recent runs found so far, once a started job makes them worth reading."""
        if not self.jobs or not self.todo_history:
            return []
        runs = [(registry, job_id, rnd.add("hmget", self.k.job_prefix + job_id, list(HISTORY_FIELDS)))
                for registry, job_id in self.todo_history]
        self.todo_history = {}
        self.state.history.per_registry = HISTORY_PER_REGISTRY
        return runs

    def read_history_ranges(self, rnd: _Round, ranges: list[tuple[str, int]]) -> None:
        """Schedule the members of each registry range (a reply that is not a list is skipped)."""
        for registry, slot in ranges:
            members = rnd.replies[slot]
            if isinstance(members, list):
                for member in members:
                    self.todo_history[(registry, _split_raw(member)[0])] = None

    def read_queue(self, rnd: _Round, name: bytes, registered: bool, slots: dict[str, int]) -> None:
        key = self.k.queue_prefix + name
        queue = QueueInfo(name=_text(name), registered=registered)
        queue.queued = _int(self.reply(rnd, slots["queued"], key, 0)) or 0
        queue.intermediate = _int(self.reply(rnd, slots["intermediate"], key + b":intermediate", 0)) or 0
        for registry, prefix in self.k.registries.items():
            setattr(queue, registry, _int(self.reply(rnd, slots[registry], prefix + name, 0)) or 0)
        lock_ttl = _int(self.reply(rnd, slots["clean_lock"], self.k.clean_lock_prefix + name, None))
        queue.clean_lock_ttl = lock_ttl if lock_ttl is not None and lock_ttl >= 0 else None
        oldest = self.reply(rnd, slots["oldest"], key, None)
        if oldest is not None:
            queue.oldest_queued_job = _text(oldest)
            self.todo_oldest[name] = oldest
        self.queues[name] = queue
        for member, score in self.reply(rnd, slots["wip"], self.k.registries["started"] + name, []):
            job_id, execution_id = _split_raw(member)
            self.add_job(job_id, execution_id, queue.name, score)

    def read_worker(self, rnd: _Round, key: bytes, in_set: bool, slots: tuple[int, ...]) -> None:
        name = key[len(self.k.worker_prefix):] if key.startswith(self.k.worker_prefix) else key
        worker = WorkerInfo(name=_text(name), key=_text(key), in_worker_set=in_set)
        worker.key_type = _text(rnd.replies[slots[0]]) if isinstance(rnd.replies[slots[0]], bytes) else "unknown"
        worker.ttl = _int(self.reply(rnd, slots[2], key, None))
        if worker.key_type == "hash":
            _fill_worker(worker, self.reply(rnd, slots[1], key, {}))
        elif worker.key_type != "none":
            self.errors.append(_corrupt(key, f"worker key is a {worker.key_type}, not a hash"))
        elif not in_set:
            return  # named by a job but gone: nothing to add
        executions = self.reply(rnd, slots[3], key + b":executions", set())
        worker.executions = sorted(_text(member) for member in executions)
        self.workers[key] = worker
        if not in_set:
            return
        if not self.shown(worker):
            for queue in worker.queues:
                self.hidden.setdefault(queue, HiddenQueue(queue, registered=False))
            return
        for queue in worker.queues:
            raw = queue.encode()
            if self.wanted(queue) and raw not in self.queues and raw not in self.todo_queues:
                self.todo_queues[raw] = False
        if worker.current_job:
            self.add_job(worker.current_job.encode(), None, "", None)
        for member in executions:
            self.add_job(*_split_raw(member), "", None)

    def read_job(self, rnd: _Round, key: _JobKey, slots: tuple[int, int | None]) -> None:
        job = self.jobs[key]
        values = self.reply(rnd, slots[0], self.k.job_prefix + key[0], None)
        fields = {name: _text(v) for name, v in zip(JOB_FIELDS, values or (), strict=False) if v is not None}
        job.exists = bool(fields)
        description = fields.get("description")
        job.status = fields.get("status") or None
        job.origin = fields.get("origin") or None
        job.description = redact_text(description) if description else None
        job.timeout = _int(fields.get("timeout"))
        job.created_at, job.enqueued_at, job.started_at, job.last_heartbeat = (
            _ts(fields.get(name)) for name in ("created_at", "enqueued_at", "started_at", "last_heartbeat"))
        job.worker_name = fields.get("worker_name") or None
        job.queue = job.queue or job.origin or ""
        job.site = site_of(job.job_id, description)
        job.method = method_of(description, job.job_id)
        if slots[1] is not None:
            execution = self.reply(rnd, slots[1], _execution_key(self.k, *key), [None, None])
            job.execution_created_at, job.execution_last_heartbeat = (_ts(_text(v)) for v in execution)
        worker_key = self.k.worker_prefix + job.worker_name.encode() if job.worker_name else None
        if worker_key and worker_key not in self.workers and worker_key not in self.todo_workers:
            self.todo_workers[worker_key] = False

    def add_job(self, job_id: bytes, execution_id: str | None, queue: str, score: float | None) -> None:
        """Schedule a started job once; a registry entry supersedes a worker's plain ``current_job``."""
        known = self.execution_ids.setdefault(job_id, set())
        existing = self.jobs.get((job_id, execution_id))
        if existing is not None:
            if score is not None and existing.registry_expires_at is None:
                existing.queue, existing.registry_expires_at = queue, score
            return
        if execution_id is None and known:
            return
        plain = self.jobs.get((job_id, None))
        if plain is not None and plain.registry_expires_at is None and score is not None:
            del self.jobs[(job_id, None)]  # read again below, with its execution and registry entry
            known.discard(None)
            if (job_id, None) in self.todo_jobs:
                self.todo_jobs.remove((job_id, None))
        known.add(execution_id)
        self.jobs[(job_id, execution_id)] = JobInfo(
            job_id=_text(job_id), queue=queue, execution_id=execution_id, registry_expires_at=score)
        self.todo_jobs.append((job_id, execution_id))

    def shown(self, worker: WorkerInfo) -> bool:
        return not worker.in_worker_set or not worker.queues or any(self.wanted(q) for q in worker.queues)

    def result(self) -> RedisState:
        state = self.state
        named = {job.worker_name for job in self.jobs.values()}
        state.workers = sorted((w for w in self.workers.values() if self.shown(w) or w.name in named),
                               key=lambda w: w.name)
        state.queues = sorted(self.queues.values(), key=lambda q: q.name)
        state.jobs = sorted(self.jobs.values(), key=lambda j: (j.queue, j.job_id, j.execution_id or ""))
        shown = {w.key for w in state.workers}
        state.hidden_workers = [HiddenWorker(w.name, w.state, list(w.queues))
                                for w in sorted(self.workers.values(), key=lambda w: w.name)
                                if w.in_worker_set and w.key not in shown]
        state.hidden_queues = sorted(self.hidden.values(), key=lambda q: q.name)
        state.hidden_counted = True
        return state


def _add_queue(rnd: _Round, k: Keys, name: bytes) -> dict[str, int]:
    key = k.queue_prefix + name
    slots = {"queued": rnd.add("llen", key), "oldest": rnd.add("lindex", key, 0),
             "intermediate": rnd.add("llen", key + b":intermediate")}
    for registry, prefix in k.registries.items():
        slots[registry] = rnd.add("zcard", prefix + name)
    slots["wip"] = rnd.add("zrange", k.registries["started"] + name, 0, -1, withscores=True)
    slots["clean_lock"] = rnd.add("ttl", k.clean_lock_prefix + name)
    return slots


def _add_history_ranges(rnd: _Round, k: Keys, names: list[bytes], now: float) -> list[tuple[str, int]]:
    """The newest live (score >= now: not yet expired) entries of each queue's finished and failed registry."""
    return [(registry, rnd.add("zrevrangebyscore", k.registries[registry] + name, "+inf", now,
                               start=0, num=HISTORY_PER_REGISTRY))
            for name in names for registry in HISTORY_REGISTRIES]


def _read_history_jobs(rnd: _Round, runs: list[tuple[str, bytes, int]], history: RunHistory) -> None:
    """Durations of the runs whose hash still describes that run; anything else is counted as skipped."""
    for registry, job_id, slot in runs:
        history.entries += 1
        values = rnd.replies[slot]
        fields = dict(zip(HISTORY_FIELDS, map(_text, values), strict=False)) if isinstance(values, list) else {}
        started, ended = _ts(fields.get("started_at")), _ts(fields.get("ended_at"))
        method = method_of(fields.get("description"), _text(job_id))
        if fields.get("status") != registry or started is None or ended is None or ended < started or not method:
            history.skipped += 1
            continue
        runs = history.runs(method)
        (runs.finished if registry == "finished" else runs.failed).append(round(ended - started, 3))


def _add_worker(rnd: _Round, key: bytes) -> tuple[int, ...]:
    return (rnd.add("type", key), rnd.add("hgetall", key), rnd.add("ttl", key),
            rnd.add("smembers", key + b":executions"))


def _add_job(rnd: _Round, k: Keys, job_id: bytes, execution_id: str | None) -> tuple[int, int | None]:
    fields = rnd.add("hmget", k.job_prefix + job_id, list(JOB_FIELDS))
    if execution_id is None:
        return fields, None
    return fields, rnd.add("hmget", _execution_key(k, job_id, execution_id), ["created_at", "last_heartbeat"])


def _execution_key(k: Keys, job_id: bytes, execution_id: str | None) -> bytes:
    return k.execution_prefix + job_id + b":" + (execution_id or "").encode()


def _fill_worker(worker: WorkerInfo, raw: dict[bytes, bytes]) -> None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    worker.hostname = fields.get("hostname") or None
    worker.pid = _int(fields.get("pid"))
    worker.ip_address = fields.get("ip_address") or None
    worker.state = fields.get("state") or None
    worker.queues = [q for q in (fields.get("queues") or "").split(",") if q]
    worker.current_job = fields.get("current_job") or None
    worker.current_job_working_time = _float(fields.get("current_job_working_time"))
    worker.birth = _ts(fields.get("birth"))
    worker.last_heartbeat = _ts(fields.get("last_heartbeat"))
    worker.death = _ts(fields.get("death"))
    worker.shutdown_requested = _ts(fields.get("shutdown_requested_date"))
    worker.version = fields.get("version") or None
    worker.python_version = fields.get("python_version") or None
    worker.successful_job_count = _int(fields.get("successful_job_count"))
    worker.failed_job_count = _int(fields.get("failed_job_count"))
    worker.total_working_time = _float(fields.get("total_working_time"))


def _split_raw(member: bytes) -> tuple[bytes, str | None]:
    """:func:`split_member` on raw bytes, keeping the job id byte-exact for later key names."""
    _, execution_id = split_member(_text(member))
    return (member[: -len(execution_id) - 1], execution_id) if execution_id else (member, None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _float(value: str | None) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: Any) -> int | None:
    number = _float(_text(value)) if not isinstance(value, int) else value
    return None if number is None else int(number)


def _ts(value: str | None) -> float | None:
    """Epoch seconds from rq's ``2024-01-31T12:00:00[.123456]Z`` or from an epoch float (rq 2.x executions)."""
    if not value:
        return None
    number = _float(value)
    if number is not None:
        return number
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()


def _corrupt(key: bytes, message: str) -> ProbeError:
    return ProbeError("redis", "corrupt", f"{_text(key)}: {message}", "inspect the key with redis-cli", _text(key))


def _command_error(exc: redis.RedisError, subject: bytes) -> ProbeError:
    message = " ".join(str(exc).split())
    if message.startswith("WRONGTYPE"):
        return _corrupt(subject, "holds the wrong kind of value for RQ")
    kind = "permission" if isinstance(exc, redis.exceptions.NoPermissionError) else "protocol"
    return ProbeError("redis", kind, f"{_text(subject)}: {redact_text(message)}", HINT, _text(subject))


def _where(client: redis.Redis) -> str:
    """Where ``client`` points, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if issubclass(client.connection_pool.connection_class, redis.SSLConnection) else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


@contextmanager
def _failures(where: str) -> Iterator[None]:
    """Turn redis-py's connection-level errors into one-line :class:`ProbeFailure`s."""
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise _failure("auth", where, "authentication failed", exc) from None
    except redis.TimeoutError as exc:
        raise _failure("timeout", where, "no answer in time", exc) from None
    except redis.ConnectionError as exc:
        if "SSL" in str(exc):
            raise _failure("protocol", where, "TLS handshake failed (redis:// vs rediss://?)", exc) from None
        raise _failure("unreachable", where, "cannot connect", exc) from None
    except redis.ResponseError as exc:
        if any(word in str(exc) for word in ("NOAUTH", "WRONGPASS", "AUTH", "NOPERM")):
            raise _failure("auth", where, "authentication failed", exc) from None
        raise _failure("protocol", where, "unexpected reply", exc) from None
    except redis.RedisError as exc:
        raise _failure("protocol", where, "not speaking the Redis protocol", exc) from None


def _failure(kind: str, where: str, what: str, exc: Exception) -> ProbeFailure:
    reason = redact_text(" ".join(str(exc).split())) or type(exc).__name__
    return ProbeFailure("redis", kind, f"Redis at {where}: {what}: {reason}", HINT)
