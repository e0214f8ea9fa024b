"""RQ's key prefix (rq 3.0 ``RQ_KEY_PREFIX``): key names, discovery, advice and RQD507, pure."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rqdoctor.actions import redis_moves
from rqdoctor.config import discover
from rqdoctor.diagnose.advice import rq_key, rqdoctor_cli
from rqdoctor.diagnose.run import diagnose
from rqdoctor.errors import ConfigError
from rqdoctor.keyprefix import PrefixChoice, find_prefix
from rqdoctor.model import QueueInfo, RedisState, Snapshot, TargetInfo, WorkerInfo
from rqdoctor.render import header
from rqdoctor.rqkeys import Keys

pytestmark = pytest.mark.unit


def target(prefix: str = "rq", source: str = "default") -> TargetInfo:
    return TargetInfo(redis_url="redis://127.0.0.1:6379/0", redis_url_source="--redis-url",
                      key_prefix=prefix, key_prefix_source=source)


def snapshot(tgt: TargetInfo, workers: list[WorkerInfo] | None = None, others: list[str] | None = None) -> Snapshot:
    state = RedisState(server_time=1_800_000_000.0, workers=workers or [], queues=[QueueInfo(name="default")],
                       other_prefixes=others or [], hidden_counted=True)
    return Snapshot(host="vm", generated_at=1_800_000_000.0, target=tgt, redis=state)


def test_keys_follow_the_prefix_as_rq_30_names_them() -> None:
    k = Keys("myapp")
    assert (k.workers, k.queues, k.suspended) == (b"myapp:workers", b"myapp:queues", b"myapp:suspended")
    assert k.worker_prefix + b"w1" + b":executions" == b"myapp:worker:w1:executions"
    assert k.registries["started"] == b"myapp:wip:" and k.registries["canceled"] == b"myapp:canceled:"
    assert k.clean_lock_prefix == b"myapp:clean_registries:" and k.execution_prefix == b"myapp:execution:"
    assert k.s("job:", "abc") == "myapp:job:abc"
    assert Keys().job_prefix == b"rq:job:"


def test_flag_then_environment_then_workers_environment() -> None:
    assert find_prefix("myapp", {"RQ_KEY_PREFIX": "other"}, True) == PrefixChoice("myapp", "--key-prefix")
    assert find_prefix(None, {"RQ_KEY_PREFIX": "other"}, True) == PrefixChoice("other", "env RQ_KEY_PREFIX")
    choice = find_prefix(None, {}, False)
    assert (choice.prefix, choice.candidates) == ("rq", ["rq"]) and choice.source.startswith("default")


def test_a_set_prefix_of_running_workers_comes_first_and_rq_stays_a_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rqdoctor.keyprefix.workers_prefixes", lambda: ({"rq": [10], "myapp": [20, 21]}, [], []))
    choice = find_prefix(None, {}, True)
    assert choice.prefix == "myapp" and choice.candidates == ["myapp", "rq"]
    assert choice.source == "RQ_KEY_PREFIX of running workers (pid 20, 21)"


def test_unreadable_worker_environment_is_said_in_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rqdoctor.keyprefix.workers_prefixes", lambda: ({}, [30], []))
    choice = find_prefix(None, {}, True)
    assert choice.prefix == "rq" and "pid 30 is not readable" in choice.source and "--key-prefix" in choice.source


def test_workers_known_by_title_only_are_kept_for_the_redis_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rqdoctor.keyprefix.workers_prefixes", lambda: ({}, [], ["w1"]))
    choice = find_prefix(None, {}, True)
    assert (choice.prefix, choice.titled) == ("rq", ["w1"]) and "process titles" in choice.source


@pytest.mark.parametrize("bad", ["my app", "a/b", "ü"])
def test_an_invalid_prefix_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid key prefix"):
        find_prefix(bad, {}, False)


def test_discover_records_the_prefix_in_the_target_info() -> None:
    info = discover(redis_url="redis://127.0.0.1:1/0", env={}, scan_processes=False, key_prefix="myapp").info()
    assert (info.key_prefix, info.key_prefix_source) == ("myapp", "--key-prefix")


def test_advice_and_header_use_the_prefix() -> None:
    tgt = target("myapp", "--key-prefix")
    assert rq_key(tgt, "job:", "j1") == "myapp:job:j1"
    assert rqdoctor_cli(tgt, "hangs").endswith("--key-prefix myapp")
    assert "--key-prefix" not in rqdoctor_cli(target(), "hangs")
    lines = dict(header.facts(snapshot(tgt, workers=[WorkerInfo(name="w", key="myapp:worker:w")])))
    assert lines["key prefix"] == "myapp (--key-prefix)"
    assert "key prefix" not in dict(header.facts(snapshot(target(), workers=[WorkerInfo(name="w", key="rq:worker:w")])))


def test_suspended_finding_names_the_prefixed_key() -> None:
    snap = snapshot(target("myapp", "--key-prefix"))
    assert snap.redis is not None
    snap.redis.suspended = True
    (finding,) = [f for f in diagnose(snap).findings if f.code == "RQD502"]
    assert finding.subject == "redis myapp:suspended"
    assert finding.commands[0].endswith("DEL myapp:suspended")


def test_rqd507_fires_when_no_worker_is_under_the_prefix_but_another_prefix_has_a_workers_set() -> None:
    snap = snapshot(target("rq", "default: no running workers to ask"), others=["myapp"])
    (finding,) = [f for f in diagnose(snap).findings if f.code == "RQD507"]
    assert finding.severity == "warning"
    evidence = "\n".join(finding.evidence)
    assert "no worker registered in rq:workers" in evidence and "myapp:workers" in evidence
    assert "--key-prefix myapp" in finding.commands[0]
    assert "no worker under it" in dict(header.facts(snap))["key prefix"]


def test_rqd507_near_miss_workers_under_the_prefix_read() -> None:
    snap = snapshot(target(), workers=[WorkerInfo(name="w", key="rq:worker:w")], others=["myapp"])
    assert "RQD507" not in [f.code for f in diagnose(snap).findings]
    assert "RQD507" not in [f.code for f in diagnose(snapshot(target())).findings]


class _Pipe:
    """Records the keys a transaction body touches (enough for the zombie-hash writes)."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def call(*args: object, **kwargs: object) -> None:
            self.keys += [a for a in args[:1] if isinstance(a, bytes)]
        return call


def test_the_writes_of_stuck_kill_use_the_prefix() -> None:
    pipe = _Pipe()
    changes = redis_moves._fail_writes(Keys("myapp"), pipe, b"j1", b"default", None, "why", 1_800_000_000.0)
    assert pipe.keys and all(k.startswith(b"myapp:") for k in pipe.keys)
    assert all("myapp:" in c for c in changes)
    pipe = _Pipe()
    changes = redis_moves._execution_writes(Keys("myapp"), pipe, b"j1", "e1", "w1")
    assert pipe.keys == [b"myapp:execution:j1:e1", b"myapp:executions:j1", b"myapp:worker:w1:executions"]
