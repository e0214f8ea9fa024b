"""The head of every report: what was diagnosed and how it was found (bench, Redis, queue filter, what it hid).

One source for every format: :func:`facts` builds the lines, :func:`fact_rows` hands them to a report
document, :func:`as_dict` is the JSON report's ``target``.
"""

from __future__ import annotations

import time
from typing import Any

from rqdoctor.model import HostSnapshot, ProbeError, RedisState, Snapshot
from rqdoctor.render.document import Fact


def redis_error(snapshot: Snapshot) -> ProbeError | None:
    """Why Redis could not be read at all (None when it was read, or not asked for)."""
    if snapshot.redis is not None:
        return None
    return next((e for e in snapshot.errors if e.probe == "redis"), None)


def hidden_counts(redis: RedisState) -> dict[str, int]:
    """How much the queue filter hid: queues, the jobs they hold, workers and busy workers."""
    return {
        "queues": len(redis.hidden_queues),
        "queued": sum(q.queued or 0 for q in redis.hidden_queues),
        "started": sum(q.started or 0 for q in redis.hidden_queues),
        "workers": len(redis.hidden_workers),
        "busy_workers": sum(1 for w in redis.hidden_workers if w.state == "busy"),
    }


def hidden_line(counts: dict[str, int]) -> str:
    """``12 queues (30 queued, 4 started) and 4 workers (4 busy) of other benches hidden; --all-queues shows them``."""
    if not counts["queues"] and not counts["workers"]:
        return "nothing else in this Redis"
    jobs = ", ".join(f"{counts[k]} {k}" for k in ("queued", "started") if counts[k])
    queues = f"{counts['queues']} queue(s)" + (f" ({jobs})" if jobs else "")
    workers = f"{counts['workers']} worker(s)" + (f" ({counts['busy_workers']} busy)" if counts["busy_workers"] else "")
    return f"{queues} and {workers} of other benches hidden; --all-queues shows them"


def hosts_line(snapshot: Snapshot) -> str:
    """A merged snapshot's hosts, each with when it was collected; the one whose Redis state is shown first."""
    def one(h: HostSnapshot) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h.generated_at))
        used = (["its Redis state is the one shown, the newest"] if h.redis_used else []) + \
            (["its scheduler health"] if h.health_used else [])
        return f"{h.name} ({when}" + "".join(f"; {u}" for u in used) + ")"
    return ", ".join(one(h) for h in sorted(snapshot.hosts, key=lambda h: not h.redis_used))


def facts(snapshot: Snapshot) -> list[tuple[str, str]]:
    """(label, line) pairs: host, bench and why, bench id, Redis and where it came from, queue filter and hidden."""
    t = snapshot.target
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.generated_at))
    rows = [("host", f"{snapshot.host}, {when}")] if not snapshot.hosts else [("hosts", hosts_line(snapshot))]
    paths = {h.name: h.bench_path for h in snapshot.hosts if h.bench_path}
    if len(set(paths.values())) > 1:  # a merge of hosts whose benches sit at different paths: each its own
        rows.append(("bench", ", ".join(f"{path} on {host}" for host, path in paths.items())))
    elif t.bench_path:
        rows.append(("bench", f"{t.bench_path} (from {t.bench_source or '?'})"))
    else:
        rows.append(("bench", t.bench_source or "none"))
    if t.bench_id:
        rows.append(("bench id", f"{t.bench_id} ({t.bench_id_source})"))
    redis = f"{t.redis_url} (from {t.redis_url_source})"
    error = redis_error(snapshot)
    if error is not None:
        redis += f"; NOT READ: {error.message}; RQ jobs and workers could not be joined"
    rows.append(("redis", redis))
    others = snapshot.redis.other_prefixes if snapshot.redis is not None else []
    if t.key_prefix != "rq" or others:
        line = f"{t.key_prefix} ({t.key_prefix_source or '?'})"
        if others:
            line += f"; no worker under it, but this Redis has workers sets of: {', '.join(others)} (try --key-prefix)"
        rows.append(("key prefix", line))
    if t.queue_filter:
        queues = f"{t.queue_filter}* only"
        if snapshot.redis is not None and snapshot.redis.hidden_counted:
            queues += f"; {hidden_line(hidden_counts(snapshot.redis))}"
        elif snapshot.redis is not None:
            queues += "; what it hid was not recorded (a snapshot of an older rqdoctor); --all-queues shows all"
    else:
        queues = "all (--all-queues)" if t.all_queues else "all (no bench chosen, so no bench id to filter by)"
    rows.append(("queues", queues))
    return rows


def fact_rows(snapshot: Snapshot) -> tuple[Fact, ...]:
    """The facts as a report document's target (a line saying what was not read or was hidden stands out)."""
    return tuple(Fact(label, (line,), alert="NOT READ" in line or "hidden;" in line or "no worker under it" in line)
                 for label, line in facts(snapshot))


def as_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON report's ``target``: the facts, the hidden counts (None without a filter or Redis) and the lines."""
    t = snapshot.target
    redis = snapshot.redis
    counts = hidden_counts(redis) if redis is not None and redis.hidden_counted and t.queue_filter else None
    return {
        "bench_path": t.bench_path, "bench_source": t.bench_source, "bench_id": t.bench_id,
        "bench_id_source": t.bench_id_source, "redis_url": t.redis_url, "redis_url_source": t.redis_url_source,
        "redis_read": snapshot.redis is not None, "queue_filter": t.queue_filter, "all_queues": t.all_queues,
        "hidden": counts, "key_prefix": t.key_prefix, "lines": [f"{label}: {line}" for label, line in facts(snapshot)],
    }
