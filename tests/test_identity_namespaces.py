"""Process identity across PID namespaces: the worker-hash resolver, link on container workers, the namespace
probe on this process, the kill plan's wording and re-verification, and the v1 -> v2 snapshot migration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rqdoctor import schema
from rqdoctor.actions.identity import _namespace_changed
from rqdoctor.actions.plan import Step, describe
from rqdoctor.diagnose.findings import Remedy
from rqdoctor.diagnose.identity import resolve
from rqdoctor.diagnose.link import link
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    SCHEMA_VERSION,
    JobInfo,
    ProcessIdentity,
    ProcessInfo,
    RedisState,
    Snapshot,
    TargetInfo,
    WorkerInfo,
)
from rqdoctor.probes.namespaces import NamespaceReader, _etc_hostname, container_id, last_nspid, ns_inode

pytestmark = pytest.mark.unit

HOST = "vm"
T0 = 1_800_000_000.0
NS = 4026532180
ARGV = ["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"]
V1 = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"


def _proc(pid: int, ppid: int, ns_pid: int | None = None, uts: str | None = None, **kw: object) -> ProcessInfo:
    ident = ProcessIdentity(HOST, pid, T0, ns_pid or pid, NS if ns_pid else 1, ns_pid is not None, uts,
                            "ab" * 32 if ns_pid else None, uts)
    return ProcessInfo(pid=pid, ppid=ppid, pgid=kw.pop("pgid", pid), create_time=T0, cmdline=ARGV,  # type: ignore[arg-type]
                       status="sleeping", worker_like=True, identity=ident, **kw)  # type: ignore[arg-type]


def _snapshot(workers: list[WorkerInfo], jobs: list[JobInfo], processes: list[ProcessInfo]) -> Snapshot:
    return Snapshot(host=HOST, generated_at=T0 + 100, target=TargetInfo("redis://127.0.0.1:6379/0", "test"),
                    redis=RedisState(server_time=T0 + 100, workers=workers, jobs=jobs), processes=processes)


def _worker(hostname: str, pid: int) -> WorkerInfo:
    return WorkerInfo(name=f"w-{hostname}", key=f"rq:worker:w-{hostname}", hostname=hostname, pid=pid,
                      state="busy", current_job="j1", birth=T0 + 1, queues=["short"])


# --- the resolver ---------------------------------------------------------------------------------


def test_a_hash_of_this_host_resolves_to_the_host_pid_in_our_namespace() -> None:
    ours, theirs = _proc(40, 1), _proc(41, 30, ns_pid=40, uts="ctr")
    found = resolve(HOST, 40, HOST, [ours, theirs])
    assert found.local and found.process is ours and found.container is None


def test_a_container_hash_resolves_through_its_uts_hostname_and_namespace_pid() -> None:
    # GIVEN host pid 40 in our namespace and host pid 5001 that is pid 1 in container "ctr"
    ours, theirs = _proc(40, 1), _proc(5001, 5000, ns_pid=1, uts="ctr")
    # THEN ("ctr", 1) is host pid 5001, never the host's pid 1 or 40
    found = resolve("ctr", 1, HOST, [ours, theirs])
    assert found.local and found.process is theirs and found.container == "ctr"


def test_near_miss_a_hostname_no_namespace_here_has_is_remote() -> None:
    theirs = _proc(5001, 5000, ns_pid=1, uts="ctr")
    assert not resolve("elsewhere", 1, HOST, [theirs]).local
    assert resolve("ctr", 2, HOST, [theirs]).process is None  # local container, no such pid in it
    assert resolve("ctr", 2, HOST, [theirs]).local


def test_near_miss_a_bare_pid_never_matches_a_process_of_another_namespace() -> None:
    # a container process whose namespace pid equals a host hash's pid is not that worker
    theirs = _proc(5001, 5000, ns_pid=40, uts="ctr")
    assert resolve(HOST, 40, HOST, [theirs]).process is None
    assert resolve(HOST, 5001, HOST, [theirs]).process is None  # its host pid is not in our namespace's view


# --- link ------------------------------------------------------------------------------------------


def test_link_runs_a_container_workers_job_in_its_horse_by_host_pid() -> None:
    worker, horse = _proc(5001, 5000, ns_pid=1, uts="ctr"), _proc(5002, 5001, ns_pid=7, uts="ctr")
    job = JobInfo(job_id="j1", queue="short", status="started", started_at=T0 + 50, worker_name="w-ctr")
    links = link(_snapshot([_worker("ctr", 1)], [job], [worker, horse]))
    [wl], [jl] = links.workers, links.jobs
    assert wl.location == "local" and wl.process is worker and wl.horse is horse and wl.container == "ctr"
    assert jl.location == "local" and jl.runner is horse and jl.runner_role == "horse"


def test_a_worker_like_parent_outside_the_namespace_is_no_pool_parent() -> None:
    # GIVEN `unshare … frappe worker` (worker-like argv) in our namespace, parent of the container's worker
    launcher = _proc(5000, 1)
    worker, horse = _proc(5001, 5000, ns_pid=1, uts="ctr", pgid=5000), _proc(5002, 5001, ns_pid=7, uts="ctr")
    job = JobInfo(job_id="j1", queue="short", status="started", started_at=T0 + 50, worker_name="w-ctr")
    [wl] = link(_snapshot([_worker("ctr", 1)], [job], [launcher, worker, horse])).workers
    assert wl.pool_parent is None and wl.kind == "fork" and wl.horse is horse
    # near miss: a worker-like parent in the worker's own namespace is its pool
    pool = _proc(5000, 4999, ns_pid=1, uts="ctr")
    inner = _proc(5001, 5000, ns_pid=2, uts="ctr")
    [wl] = link(_snapshot([_worker("ctr", 2)], [], [pool, inner])).workers
    assert wl.pool_parent is pool and wl.kind == "pool"


def test_link_near_miss_a_container_whose_pid_is_gone_is_dead_not_remote() -> None:
    links = link(_snapshot([_worker("ctr", 9)], [], [_proc(5001, 5000, ns_pid=1, uts="ctr")]))
    [wl] = links.workers
    assert wl.location == "dead" and wl.problems == ["process missing: no process 9 in container ctr on vm"]


def test_findings_and_plan_name_the_host_pid_and_the_container() -> None:
    worker, horse = _proc(5001, 5000, ns_pid=1, uts="ctr"), _proc(5002, 5001, ns_pid=7, uts="ctr")
    job = JobInfo(job_id="j1", queue="short", status="started", started_at=T0 - 4000, timeout=60,
                  worker_name="w-ctr", last_heartbeat=T0 + 99)
    result = diagnose(_snapshot([_worker("ctr", 1)], [job], [worker, horse]))
    lines = [line for f in result.findings if f.job_id == "j1" for line in f.evidence]
    assert "pid 5002 (horse) in container ctr (abababababab) pid 7 of worker w-ctr" in lines, lines
    remedies = [f.remedy for f in result.findings if f.remedy is not None and f.remedy.pid == 5002]
    assert remedies and remedies[0].ns_pid == 7 and remedies[0].pid_ns == NS
    text = describe(Step(remedies[0], "RQD101", "job j1"), 10, False)
    assert text.startswith("stop work-horse pid 5002 (container ctr (abababababab) pid 7) of worker w-ctr")


# --- the probe on real /proc, and re-verification ----------------------------------------------------


def test_the_namespace_reader_sees_this_process_in_its_own_namespace() -> None:
    ident = NamespaceReader(HOST).identity(os.getpid(), None, True)
    assert ident.pid == os.getpid() and ident.ns_pid == last_nspid(os.getpid())
    assert not ident.foreign_ns and ident.pid_ns == ns_inode("self", "pid") and ident.uts_hostname is None


def test_near_miss_etc_hostname_of_a_process_with_our_root_is_not_its_uts_name() -> None:
    # unshare without a new root: /proc/<pid>/root/etc/hostname is this host's file, not the namespace's name
    assert _etc_hostname(os.getpid()) is None


def test_reverification_refuses_another_namespace_or_namespace_pid() -> None:
    me = os.getpid()
    same = Remedy("stop_horse", "r", pid=me, ns_pid=last_nspid(me), pid_ns=ns_inode(me, "pid"), container_name="c")
    assert _namespace_changed(same) is None
    other_ns = Remedy("stop_horse", "r", pid=me, ns_pid=last_nspid(me), pid_ns=1, container_name="c")
    assert "no longer in the PID namespace of container c" in (_namespace_changed(other_ns) or "")
    other_pid = Remedy("stop_horse", "r", pid=me, ns_pid=-5, pid_ns=ns_inode(me, "pid"), container_name="c")
    assert "no longer pid -5 in container c" in (_namespace_changed(other_pid) or "")
    assert _namespace_changed(Remedy("stop_horse", "r", pid=me)) is None


def test_container_id_is_read_from_docker_and_kubernetes_cgroup_paths(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cid = "0123456789abcdef" * 4
    real_open = open
    paths = {"docker": f"0::/system.slice/docker-{cid}.scope\n",
             "k8s": f"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope\n",
             "cgroup1": f"12:memory:/docker/{cid}\n", "none": "0::/user.slice/session-1.scope\n"}
    for kind, text in paths.items():
        (tmp_path / kind).write_text(text)
    for kind in paths:
        monkeypatch.setattr("builtins.open", lambda p, *a, _k=kind, **k: real_open(tmp_path / _k, *a, **k)
                            if str(p).endswith("/cgroup") else real_open(p, *a, **k))
        assert container_id(1) == (None if kind == "none" else cid), kind


# --- schema v1 -> v2 ---------------------------------------------------------------------------------


def test_a_v1_snapshot_migrates_to_v2_with_plain_identities_and_diagnoses_the_same() -> None:
    data = json.loads(V1.read_text())
    data = data.get("snapshot", data)
    assert data["schema_version"] == 1
    upgraded = schema.upgrade(data)
    assert upgraded["schema_version"] == SCHEMA_VERSION == 2
    snapshot = Snapshot.from_dict(upgraded)
    assert snapshot.processes
    for p in snapshot.processes:
        assert p.identity == ProcessIdentity(data["host"], p.pid, p.create_time, p.pid)
    # the same findings as a by-hand v1 reading (identities missing: plain host ones)
    bare = Snapshot.from_dict({**data, "schema_version": SCHEMA_VERSION})
    assert all(p.identity is None for p in bare.processes)
    codes = sorted((f.code, f.subject) for f in diagnose(snapshot).findings)
    assert codes and codes == sorted((f.code, f.subject) for f in diagnose(bare).findings)


def test_the_migration_keeps_what_it_cannot_read_and_fills_a_bare_process() -> None:
    data = {"schema_version": 1, "host": "h", "generated_at": 1, "target": {"redis_url": "r", "redis_url_source": "t"},
            "processes": [{"pid": 7}, "junk"]}
    upgraded = schema.upgrade(data)
    assert upgraded["processes"] == [{"pid": 7, "identity": {"host": "h", "pid": 7, "create_time": None,
                                                             "ns_pid": 7}}, "junk"]
    assert schema.upgrade({"schema_version": 1, "host": "h"}) == {"schema_version": 2, "host": "h"}
