"""Which key prefix the target Redis holds: pick among discovered candidates, spot other prefixes. Read-only."""

from __future__ import annotations

import redis

from rqdoctor.rqkeys import Keys, valid_prefix

SCAN_COUNT = 1000
SCAN_CALLS = 10
"""At most this many SCAN calls (about ``SCAN_CALLS * SCAN_COUNT`` keys looked at) when looking for other prefixes."""
MAX_OTHERS = 5


def choose_prefix(client: redis.Redis, candidates: list[str]) -> str | None:
    """The first candidate whose ``<p>:workers`` set has members on this Redis (None: none has)."""
    if not candidates:
        return None
    with client.pipeline(transaction=False) as pipe:
        for prefix in candidates:
            pipe.scard(Keys(prefix).workers)
        counts = pipe.execute(raise_on_error=False)
    return next((p for p, n in zip(candidates, counts, strict=True) if isinstance(n, int) and n > 0), None)


def other_prefixes(client: redis.Redis, prefix: str) -> list[str]:
    """Prefixes other than ``prefix`` that have a ``<p>:workers`` key here (a bounded SCAN; may miss some)."""
    found: set[str] = set()
    cursor = 0
    for _ in range(SCAN_CALLS):
        cursor, keys = client.scan(cursor, match=b"*:workers", count=SCAN_COUNT)
        for key in keys:
            other = key[: -len(b":workers")].decode("utf-8", "replace")
            if other != prefix and valid_prefix(other) and client.type(key) == b"set":
                found.add(other)
        if not cursor or len(found) >= MAX_OTHERS:
            break
    return sorted(found)[:MAX_OTHERS]


def prefix_listing(client: redis.Redis, prefixes: list[str], names: list[str]) -> tuple[str, str] | None:
    """The first prefix whose ``<p>:workers`` lists ``<p>:worker:<name>`` for one of ``names``, and that name."""
    pairs = [(p, n) for p in prefixes for n in names]
    if not pairs:
        return None
    with client.pipeline(transaction=False) as pipe:
        for prefix, name in pairs:
            pipe.sismember(Keys(prefix).workers, Keys(prefix).b("worker:", name))
        hits = pipe.execute(raise_on_error=False)
    return next((pair for pair, hit in zip(pairs, hits, strict=True) if hit is True or hit == 1), None)
