"""Saved snapshots across rqdoctor versions: an older schema is migrated step by step, a newer one refused.

A snapshot (or a whole JSON report holding one) carries ``schema_version``. Adding a field with a default
needs no new version (an older snapshot simply lacks it); renaming, moving or re-typing one does: bump
``model.SCHEMA_VERSION`` and add the step from the previous version to :data:`MIGRATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rqdoctor import model

FIRST_VERSION = 1
"""The schema of the first released rqdoctor; nothing older exists."""

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 gives every process an ``identity``; a v1 snapshot's processes were all in rqdoctor's own PID
    namespace on ``host`` (v1 matched workers by hostname and pid only), so each gets that plain one."""
    host = data.get("host")
    processes = data.get("processes")
    if not isinstance(processes, list):
        return data
    out = []
    for p in processes:
        if isinstance(p, dict) and p.get("identity") is None and "pid" in p:
            p = {**p, "identity": {"host": host, "pid": p["pid"], "create_time": p.get("create_time"),
                                   "ns_pid": p["pid"]}}
        out.append(p)
    return {**data, "processes": out}


MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}
"""``n`` -> the step that turns a snapshot of schema ``n`` into one of schema ``n + 1``."""


class NewerSchema(ValueError):
    """The snapshot was written by a newer rqdoctor."""


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` at :data:`rqdoctor.model.SCHEMA_VERSION`: migrated when older, as it is when current.

    Raises :class:`NewerSchema` for a newer schema, ``ValueError`` for a missing or impossible one.
    """
    version = data.get("schema_version")
    current = model.SCHEMA_VERSION
    if type(version) is not int:
        raise ValueError(f"no schema_version (found {version!r}): not an rqdoctor snapshot")
    if version > current:
        raise NewerSchema(f"snapshot schema_version {version} is newer than this rqdoctor's ({current})")
    if version < FIRST_VERSION:
        raise ValueError(f"unsupported snapshot schema_version {version!r} (the first one is {FIRST_VERSION})")
    while version < current:
        data = {**MIGRATIONS[version](data), "schema_version": version + 1}
        version += 1
    return data
