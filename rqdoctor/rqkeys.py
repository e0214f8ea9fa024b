"""RQ's Redis key names under a key prefix (``RQ_KEY_PREFIX``, rq 3.0; ``rq`` before and by default).

The one home of key names: probes read, rules advise and actions write through :class:`Keys`.
Process titles are not keys: they stay literal ``rq:worker:<name>`` whatever the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

DEFAULT_PREFIX = "rq"
PREFIX_ENV = "RQ_KEY_PREFIX"
VALID_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]+")
"""What rq 3.0's ``defaults.py`` accepts."""
REGISTRY_KEYS = {"started": "wip", "failed": "failed", "finished": "finished", "deferred": "deferred",
                 "scheduled": "scheduled", "canceled": "canceled"}
"""Registry name -> the word in its key (``<p>:wip:<queue>``...)."""


def valid_prefix(prefix: str) -> bool:
    return VALID_PREFIX.fullmatch(prefix) is not None


@dataclass(frozen=True)
class Keys:
    """Key names under ``prefix``; ``b`` gives bytes (for the probes and actions), ``s`` text (for advice)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> bytes:
        """``<prefix>:`` as bytes: every key starts with it."""
        return self.prefix.encode() + b":"

    def b(self, *parts: str | bytes) -> bytes:
        """``<prefix>:<part><part>…`` as bytes (parts are joined as given, so put the colons in them)."""
        return self.base + b"".join(p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape")
                                    for p in parts)

    def s(self, *parts: str) -> str:
        """``<prefix>:<part><part>…`` as text."""
        return f"{self.prefix}:" + "".join(parts)

    @property
    def workers(self) -> bytes:
        return self.b("workers")

    @property
    def queues(self) -> bytes:
        return self.b("queues")

    @property
    def suspended(self) -> bytes:
        return self.b("suspended")

    @property
    def worker_prefix(self) -> bytes:
        return self.b("worker:")

    @property
    def queue_prefix(self) -> bytes:
        return self.b("queue:")

    @property
    def job_prefix(self) -> bytes:
        return self.b("job:")

    @property
    def execution_prefix(self) -> bytes:
        return self.b("execution:")

    @property
    def clean_lock_prefix(self) -> bytes:
        return self.b("clean_registries:")

    @cached_property
    def registries(self) -> dict[str, bytes]:
        """Registry name -> key prefix (``<p>:wip:``…), in the order rq lists them."""
        return {name: self.b(word, ":") for name, word in REGISTRY_KEYS.items()}
