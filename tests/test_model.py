"""The snapshot contract: JSON round trip, schema version, unknown keys, malformed input (pure units).

Besides a hand-written snapshot, a generator fills *every* field of every dataclass reachable
from :class:`Snapshot` (following the type hints, so fields added later are covered too) with a
non-default value, including ints in float fields and None in optional ones.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union

import pytest

from rqdoctor import model
from rqdoctor.model import (
    SCHEMA_VERSION,
    Connection,
    DatabaseState,
    DbSession,
    Frame,
    JobInfo,
    LockWait,
    ProbeError,
    ProcessInfo,
    ProcessStacks,
    QueueInfo,
    RedisState,
    SiteInfo,
    Snapshot,
    StackSample,
    TargetInfo,
    ThreadStack,
    WorkerInfo,
)


def fill(hint: Any, path: str, variant: int) -> Any:
    """A non-default value for ``hint``; ``variant`` picks between None, ints-as-floats and plain values."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if variant % 3 == 2 else fill(inner, path, variant)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [fill(item, f"{path}[{i}]", variant + i) for i in range(2)]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {f"{path}.k{i}": fill(item, f"{path}.v{i}", variant + i) for i in range(2)}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: fill(hints[f.name], f"{path}.{f.name}", variant + n)
                       for n, f in enumerate(dataclasses.fields(hint))})
    if hint is bool:
        return variant % 2 == 0
    if hint is int:
        return 1000 + len(path) + variant
    if hint is float:
        return 7 + variant if variant % 2 else 7.25 + variant  # an int in a float field, half of the time
    if hint is str:
        return f"{path}#{variant}"
    raise AssertionError(f"{path}: no generator for {hint!r}: teach fill() about it")


def full_snapshot(variant: int) -> Snapshot:
    snapshot = fill(Snapshot, "snapshot", variant)
    snapshot.schema_version = SCHEMA_VERSION
    return snapshot


def handmade() -> Snapshot:
    """A realistic snapshot: Frappe bench, busy worker with a horse, lock wait, probe errors."""
    error = ProbeError("stacks", "permission", "py-spy: Permission denied", "run as the bench user", "pid 4242")
    frame = Frame("wait", "/usr/lib/python3.11/threading.py", 331, "threading", {"self": "<Condition>"},
                  "waiter.acquire()")
    return Snapshot(
        host="erp-1", generated_at=1_700_000_000, rqdoctor_version="0.1.0",
        target=TargetInfo("redis://:***@127.0.0.1:11000", "common_site_config.json redis_queue", "/home/frappe/bench",
                          "current directory", "home-frappe-bench", "derived from the bench path", "home-frappe-bench:",
                          {"short": 300, "default": 300, "long": 1500, "big": -1},
                          [SiteInfo("site1.local", "mariadb", "127.0.0.1", 3306, "", "_abc", "_abc"), SiteInfo("s2")],
                          ["mysql://root:***@127.0.0.1:3306"]),
        redis=RedisState(server_time=1_700_000_001, redis_version="7.2.4", suspended=False,
                         workers=[WorkerInfo("w1", "rq:worker:w1", "erp-1", 4000, None, "busy",
                                             ["home-frappe-bench:long"], "site1.local::abc", 12, [], 1_699_999_000,
                                             1_700_000_000.5, None, None, "1.15.1", "3.11.2", 3, 0, 40.5, 420, True,
                                             "hash")],
                         queues=[QueueInfo("home-frappe-bench:long", 2, "site1.local::def", 1_699_999_990, 1, 0, 5)],
                         jobs=[JobInfo("site1.local::abc", "home-frappe-bench:long", None, 1_700_000_060, True,
                                       "started", "home-frappe-bench:long", "execute_job(password='***')", 1500,
                                       1_699_999_900, None, 1_699_999_950, None, "w1", "site1.local",
                                       "app.tasks.run")],
                         round_trips=3, commands=27),
        processes=[ProcessInfo(4000, 1, 4000, 4000, 1_699_999_000, ["python", "-m", "frappe.utils.bench_helper"],
                               "/home/frappe/bench/sites", "sleeping", "frappe", 0, 1, 52_000_000, 3,
                               "frappe-worker-long", True,
                               [Connection("127.0.0.1:50000", "127.0.0.1:3306", "ESTABLISHED")]),
                   ProcessInfo(4242, ppid=4000)],
        stacks=[ProcessStacks(4242, [StackSample(1_700_000_000, [ThreadStack(1, "MainThread", True, False, [frame],
                                                                             4242, "futex_wait_queue")], 2)],
                              "nonblocking", False, None),
                ProcessStacks(4343, error=error)],
        database=DatabaseState(["mysql://root:***@127.0.0.1:3306"],
                               [DbSession("mysql://root:***@127.0.0.1:3306", 17, "_abc", "_abc", "127.0.0.1", 50000,
                                          4242, query="UPDATE tabBin SET x=1", time_s=31, idle_in_transaction=True)],
                               [LockWait("mysql://root:***@127.0.0.1:3306", 17, 18, "row", "tabBin", "X", 31)], []),
        errors=[error, ProbeError("database", "limited", "site account", subject="site:s2")],
    )


def round_trip(snapshot: Snapshot) -> Snapshot:
    return Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))


def float_fields_are_floats(value: Any, path: str = "snapshot") -> None:
    """Every value in a float-typed field is a float after loading (not an int)."""
    if not dataclasses.is_dataclass(value):
        return
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        item, hint = getattr(value, f.name), hints[f.name]
        if hint in (float, float | None) and item is not None:
            assert type(item) is float, f"{path}.{f.name} = {item!r}"
        for child in item if isinstance(item, list) else [item]:
            float_fields_are_floats(child, f"{path}.{f.name}")


@pytest.mark.parametrize("variant", range(6))
def test_generated_full_snapshot_round_trips(variant: int) -> None:
    snapshot = full_snapshot(variant)
    loaded = round_trip(snapshot)
    assert loaded == snapshot
    assert loaded.to_dict() == snapshot.to_dict()
    float_fields_are_floats(loaded)


@pytest.mark.parametrize("variant", range(6))
def test_to_dict_is_what_dataclasses_asdict_gives(variant: int) -> None:
    snapshot = full_snapshot(variant)  # every dataclass of the model, every field filled
    assert snapshot.to_dict() == dataclasses.asdict(snapshot)
    assert json.dumps(snapshot.to_dict(), default=str) == json.dumps(dataclasses.asdict(snapshot), default=str)


def test_every_dataclass_is_reached_by_the_generator() -> None:
    reached: set[type] = set()

    def walk(value: Any) -> None:
        if dataclasses.is_dataclass(value):
            reached.add(type(value))
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for variant in range(3):
        walk(full_snapshot(variant))
    declared = {obj for obj in vars(model).values()
                if dataclasses.is_dataclass(obj) and obj.__module__ == model.__name__}
    assert declared <= reached, declared - reached


def test_handmade_snapshot_round_trips() -> None:
    snapshot = handmade()
    loaded = round_trip(snapshot)
    assert loaded == snapshot
    float_fields_are_floats(loaded)
    assert isinstance(loaded.stacks[1].error, ProbeError) and loaded.stacks[0].error is None
    assert loaded.stacks[0].samples[0].threads[0].frames[0].locals == {"self": "<Condition>"}
    assert loaded.target.queue_timeouts["big"] == -1 and type(loaded.target.queue_timeouts["big"]) is int
    assert loaded.redis is not None and loaded.redis.workers[0].ip_address is None


def test_minimal_snapshot_uses_defaults() -> None:
    data = {"schema_version": SCHEMA_VERSION, "host": "h", "generated_at": 1,
            "target": {"redis_url": "redis://127.0.0.1:6379", "redis_url_source": "default"}}
    loaded = Snapshot.from_dict(data)
    assert loaded == Snapshot("h", 1.0, TargetInfo("redis://127.0.0.1:6379", "default"))
    assert loaded.redis is None and loaded.processes == [] and loaded.errors == []


@pytest.mark.parametrize("version", [0, -1, SCHEMA_VERSION + 1, "1", 1.5, None, True, [1]])
def test_wrong_schema_version_is_a_value_error(version: Any) -> None:
    data = handmade().to_dict()
    data["schema_version"] = version
    with pytest.raises(ValueError, match="schema_version"):
        Snapshot.from_dict(data)


def test_missing_schema_version_is_a_value_error() -> None:
    data = handmade().to_dict()
    del data["schema_version"]
    with pytest.raises(ValueError, match="schema_version"):
        Snapshot.from_dict(data)


def test_unknown_keys_are_ignored_at_every_level() -> None:
    def add_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {**{k: add_keys(v) for k, v in value.items()}, "from_the_future": {"x": [1, 2]}}
        if isinstance(value, list):
            return [add_keys(v) for v in value]
        return value

    snapshot = handmade()
    data = add_keys(json.loads(json.dumps(snapshot.to_dict())))
    # dicts that are values (not dataclasses) keep their keys: drop the ones added to them
    frame = data["stacks"][0]["samples"][0]["threads"][0]["frames"][0]
    for mapping in (data["target"]["queue_timeouts"], frame["locals"]):
        del mapping["from_the_future"]
    assert Snapshot.from_dict(data) == snapshot


@pytest.mark.parametrize(("path", "bad"), [
    (("target",), "redis://x"),
    (("target",), None),
    (("target", "sites"), 5),
    (("target", "sites"), "abc"),
    (("target", "queue_timeouts"), ["short"]),
    (("redis", "workers"), {"w": 1}),
    (("redis", "workers", 0), "w1"),
    (("redis", "workers", 0, "pid"), "4000"),
    (("processes", 0, "pid"), 4000.5),
    (("processes", 0, "cmdline"), "python -m x"),
    (("host",), 3),
    (("generated_at",), "yesterday"),
    (("errors", 0), {"probe": "x"}),
])
def test_malformed_snapshot_is_a_value_error(path: tuple[Any, ...], bad: Any) -> None:
    data = json.loads(json.dumps(handmade().to_dict()))
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = bad
    with pytest.raises(ValueError) as err:
        Snapshot.from_dict(data)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(".".join(k for k in path if isinstance(k, str))), str(err.value)


@pytest.mark.parametrize("data", [[], "snapshot", 1, None])
def test_from_dict_of_a_non_object(data: Any) -> None:
    with pytest.raises(ValueError):
        Snapshot.from_dict(data)
