"""The process probe on real processes: a hand-made worker/horse tree and real rq workers."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import redis

from rqdoctor.diagnose.link import link
from rqdoctor.model import JobInfo, ProbeError, ProcessInfo, RedisState, Snapshot, TargetInfo, WorkerInfo
from rqdoctor.probes import processes
from rqdoctor.probes.processes import is_worker_argv, probe_processes, recheck_gone, redact_argv
from rqdoctor.probes.redis_rq import connect, read_rq_state
from tests.harness.bench import Bench
from tests.harness.venvs import RQ_FLAVOURS
from tests.harness.workers import Workers, enqueue, wait_for_job_started, wait_for_worker_registered

HOST = socket.gethostname()

# A "worker" that forks a "horse" (own process group, like rq 2.x) which spins briefly and runs `sleep`.
FAKE_WORKER = r"""
import json, os, socket, subprocess, sys, time
port = int(sys.argv[1])
redis_like = socket.create_connection(("127.0.0.1", port))   # inherited by the horse, like rq's connection
r, w = os.pipe()
horse = os.fork()
if horse == 0:
    os.setpgrp()
    own = socket.create_connection(("127.0.0.1", port))
    child = subprocess.Popen(["sleep", "30"])
    os.write(w, json.dumps({"horse": os.getpid(), "child": child.pid,
                            "own_port": own.getsockname()[1]}).encode() + b"\n")
    end = time.monotonic() + 5
    while time.monotonic() < end:   # busy, so cpu_percent must show it
        pass
    child.wait()
    os._exit(0)
info = json.loads(os.read(r, 4096))
info["worker_port"] = redis_like.getsockname()[1]
print(json.dumps(info), flush=True)
os.waitpid(horse, 0)
"""
FAKE_ARGV = ["frappe.utils.bench_helper", "frappe", "worker", "--queue", "short", "--rq-password", "s3cr3t"]


@dataclass
class FakeTree:
    worker: int
    horse: int
    child: int
    port: int
    worker_port: int
    horse_port: int


def _signal_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextmanager
def fake_tree(argv: list[str] = FAKE_ARGV) -> Iterator[FakeTree]:
    """Start the fake worker tree; kill exactly its two process groups afterwards."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {**os.environ, "SUPERVISOR_PROCESS_NAME": "bench-frappe-short-worker-0"}
    proc = subprocess.Popen([sys.executable, "-c", FAKE_WORKER, str(port), *argv], stdout=subprocess.PIPE,
                            env=env, start_new_session=True)
    horse = None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "fake worker did not report its tree"
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        horse = info["horse"]
        # Popen returns once the child's exec has replaced its memory, a moment before the kernel has set its
        # arguments: until then /proc/<pid>/cmdline reads empty
        end = time.monotonic() + 10
        while psutil.Process(info["child"]).cmdline() != ["sleep", "30"]:
            assert time.monotonic() < end, "the horse's child did not exec sleep"
            time.sleep(0.01)
        yield FakeTree(proc.pid, horse, info["child"], port, info["worker_port"], info["own_port"])
    finally:
        if horse:
            _signal_group(horse)
        _signal_group(proc.pid)
        proc.wait(timeout=10)
        listener.close()


def _by_pid(infos: list[ProcessInfo]) -> dict[int, ProcessInfo]:
    return {p.pid: p for p in infos}


def _mine(errors: list[ProbeError], tree: FakeTree) -> list[ProbeError]:
    """Errors about the fake tree (other people's workers on this host may come and go meanwhile)."""
    pids = {str(tree.worker), str(tree.horse), str(tree.child)}
    return [e for e in errors if pids & set(e.subject.replace(",", " ").split())]


# --- argv recognition and redaction (pure) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"], True),
        (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker-pool", "--num-workers", "2"], True),
        (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "schedule"], False),
        (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "--site", "worker", "serve"], False),
        (["/v/bin/python", "/v/bin/rq", "worker", "-u", "redis://x", "q"], True),
        (["rq", "worker-pool", "-n", "3", "q"], True),
        (["rq", "info"], False),
        (["python", "-m", "rq.cli", "worker", "q"], True),
        (["python", "manage.py", "rqworker", "default"], True),
        (["rq:worker:abc:", "Processing", "f", "from", "q", "since", "1"], True),
        (["rq:worker:abc: Listening on q"], True),
        (["/usr/bin/sleep", "30"], False),
        ([], False),
    ],
)
def test_is_worker_argv(argv: list[str], expected: bool) -> None:
    assert is_worker_argv(argv) is expected


def test_redact_argv_masks_option_values_and_urls() -> None:
    argv = ["rq", "worker", "-u", "redis://:hunter2@h:6379/0", "--rq-password", "s3cr3t", "--token=abc", "--queue", "q"]
    out = redact_argv(argv)
    assert "hunter2" not in " ".join(out) and "s3cr3t" not in out and "abc" not in " ".join(out)
    assert out[-2:] == ["--queue", "q"] and out[4] == "--rq-password"


# --- a hand-made worker → horse → sleep tree -------------------------------------------------------


def _counting_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits the process probe makes (its CPU window): one per call, whatever the process count."""
    import rqdoctor.probes.processes as probe

    waits: list[float] = []
    real = time.sleep
    monkeypatch.setattr(probe, "time", type("T", (), {"sleep": staticmethod(lambda s: (waits.append(s), real(s))),
                                                      "monotonic": staticmethod(time.monotonic)}))
    return waits


@pytest.mark.integration
def test_fake_worker_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = _counting_sleeps(monkeypatch)
    with fake_tree() as tree:
        errors: list[ProbeError] = []
        started = time.monotonic()
        infos = _by_pid(probe_processes([], HOST, errors, cpu_window=0.3))
        elapsed = time.monotonic() - started
        assert _mine(errors, tree) == []
        worker, horse, child = infos[tree.worker], infos[tree.horse], infos[tree.child]

        assert worker.worker_like and horse.worker_like and not child.worker_like
        assert (worker.pgid, worker.sid) == (tree.worker, tree.worker)
        assert (horse.ppid, horse.pgid, horse.sid) == (tree.worker, tree.horse, tree.worker)
        assert (child.ppid, child.pgid) == (tree.horse, tree.horse)
        assert child.cmdline == ["sleep", "30"]
        assert "s3cr3t" not in worker.cmdline and "--rq-password" in worker.cmdline

        assert horse.cpu_percent is not None and horse.cpu_percent > 20
        assert horse.cpu_time is not None and horse.cpu_time > 0
        assert worker.cpu_percent is not None and worker.cpu_percent < 20
        assert len(waits) == 1 and waits[0] <= 0.3 and elapsed >= 0.3  # one shared window, not one per process

        assert worker.supervisor_program == horse.supervisor_program == "bench-frappe-short-worker-0"
        assert worker.cwd == os.getcwd() and worker.username and worker.rss and worker.num_threads == 1
        assert worker.create_time is not None and abs(worker.create_time - time.time()) < 60
        peer = f"127.0.0.1:{tree.port}"
        horse_conns = {(c.laddr, c.raddr, c.status) for c in horse.connections}
        assert (f"127.0.0.1:{tree.horse_port}", peer, "ESTABLISHED") in horse_conns
        assert (f"127.0.0.1:{tree.worker_port}", peer, "ESTABLISHED") in horse_conns  # inherited from the worker
        assert {c.laddr for c in worker.connections} == {f"127.0.0.1:{tree.worker_port}"}
        assert child.connections == []


@pytest.mark.integration
def test_without_a_cpu_window_nothing_waits_and_no_cpu_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """``queues`` shows no CPU: its probe neither waits for a window nor claims a CPU figure."""
    waits = _counting_sleeps(monkeypatch)
    with fake_tree() as tree:
        infos = _by_pid(probe_processes([], HOST, [], cpu_window=None))
    horse = infos[tree.horse]
    assert waits == [] and horse.cpu_percent is None and horse.cpu_time is None
    assert horse.worker_like and horse.pgid == tree.horse and horse.connections  # the rest is read as ever


@pytest.mark.integration
def test_non_worker_pid_named_by_redis_is_collected_but_neither_expanded_nor_linked() -> None:
    """A Redis pid whose process is no RQ worker by argv or title: collected (link says what it is), no more."""
    with fake_tree(["plain", "script"]) as tree:
        birth = time.time()
        redis_worker = WorkerInfo(name="w", key="rq:worker:w", hostname=HOST, pid=tree.worker, birth=birth,
                                  state="busy", current_job="j", version="2.6.1", queues=["q"])
        remote = WorkerInfo(name="r", key="rq:worker:r", hostname="elsewhere", pid=tree.worker)
        errors: list[ProbeError] = []
        infos = _by_pid(probe_processes([redis_worker, remote], HOST, errors, cpu_window=0.0))
        assert tree.worker in infos and not infos[tree.worker].worker_like
        assert not {tree.horse, tree.child} & set(infos)
        assert _mine(errors, tree) == []
        snapshot = Snapshot(host=HOST, generated_at=time.time(), target=TargetInfo("redis://x", "test"),
                            redis=RedisState(server_time=time.time(), workers=[redis_worker, remote],
                                             jobs=[JobInfo("j", "q", status="started", worker_name="w")]),
                            processes=list(infos.values()))
        links = link(snapshot)
        assert links.jobs[0].runner is None and links.worker_for(links.local(tree.worker)) is None
        assert [wl.location for wl in links.workers] == ["not-found", "remote"]
        assert links.workers[0].problems[0].startswith("not a worker:")


@pytest.mark.integration
@pytest.mark.parametrize("born_ago", [3600.0, -10.0])
def test_reused_pid_is_collected_but_not_expanded(born_ago: float) -> None:
    """Our own pid (no RQ worker) as a Redis worker: collected so link can say what holds it, never expanded."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        claimed = WorkerInfo(name="w", key="rq:worker:w", hostname=HOST, pid=os.getpid(),
                             birth=time.time() - born_ago)
        infos = _by_pid(probe_processes([claimed], HOST, [], cpu_window=0.0))
    finally:
        bystander.kill()
        bystander.wait(timeout=10)
    assert os.getpid() in infos  # collected either way, so link can flag a reused pid or a stranger
    assert bystander.pid not in infos  # not an RQ worker's child, whatever the birth


@pytest.mark.integration
def test_a_hundred_descendants_stay_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = _counting_sleeps(monkeypatch)
    code = "import subprocess, time\nkids = [subprocess.Popen(['sleep', '60']) for _ in range(100)]\ntime.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code, "rq", "worker", "q"], start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while len(psutil.Process(parent.pid).children()) < 100:
            assert time.monotonic() < deadline, "the 100 children did not start"
            time.sleep(0.05)
        started = time.monotonic()
        infos = probe_processes([], HOST, [], cpu_window=0.2)
        elapsed = time.monotonic() - started
    finally:
        _signal_group(parent.pid)
        parent.wait(timeout=10)
    assert sum(1 for p in infos if p.ppid == parent.pid) == 100
    assert len(waits) == 1  # one CPU window for all 101 processes
    assert elapsed < 10  # a loose bound for a loaded 2-core machine; benchmarks/ holds the real figures


# --- the host scan: /proc read directly, as psutil reads it -----------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("data", "argv"), [
    ("python\x00-m\x00rq.cli\x00worker\x00", ["python", "-m", "rq.cli", "worker"]),
    ("rq:worker:abc: Listening on short,default since 1 s\x00", ["rq:worker:abc:", "Listening", "on",
                                                                  "short,default", "since", "1", "s"]),
    ("rq:worker:abc: Processing j1 from short since 1 s", ["rq:worker:abc:", "Processing", "j1", "from", "short",
                                                           "since", "1", "s"]),
    ("sleep\x0030\x00", ["sleep", "30"]),
    ("", []),
])
def test_cmdline_is_split_as_psutil_splits_it(data: str, argv: list[str]) -> None:
    """NUL-separated, or space-separated after a setproctitle (rq's titles); a zombie has none."""
    assert processes.split_cmdline(data) == argv


@pytest.mark.integration
def test_the_scan_sees_every_process_as_psutil_does() -> None:
    with fake_tree() as tree:
        scanned = processes._scan()
        seen = {p.pid: (p.info["ppid"], p.info["cmdline"] or [])
                for p in psutil.process_iter(["ppid", "cmdline"], ad_value=None)}
        again = processes._scan()
    assert {tree.worker, tree.horse, tree.child} <= set(scanned)
    stable = {pid for pid in set(scanned) & set(seen) if pid in again and again[pid] == scanned[pid]}
    assert {tree.worker, tree.horse, tree.child} <= stable  # other processes come, exec and go meanwhile
    assert {pid: (scanned[pid].ppid, scanned[pid].argv) for pid in stable} == {pid: seen[pid] for pid in stable}


@pytest.mark.unit
def test_one_environ_value_is_read_as_psutils_whole_environ_reads_it() -> None:
    """Every block of up to four entries among the awkward ones (no ``=``, empty key, repeats, an empty entry,
    an unterminated tail) gives what ``psutil.Process.environ().get`` would."""
    from psutil._common import parse_environ_block

    name = "SUPERVISOR_PROCESS_NAME"
    entries = ["A=1", f"{name}=x", f"{name}=y=z", f"{name}=", "=v", "noeq", "", f"{name}X=q", name.lower() + "=l"]
    for count in range(5):
        for combo in itertools.product(entries, repeat=count):
            for tail in ("", "\0", "garbage"):
                block = "".join(e + "\0" for e in combo) + tail
                assert processes.environ_value(block, name) == parse_environ_block(block).get(name), repr(block)


@pytest.mark.integration
def test_supervisor_program_of_a_live_process_is_psutils() -> None:
    env = {**os.environ, "SUPERVISOR_PROCESS_NAME": "first", "OTHER": "1"}
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env) as child:
        try:
            proc = psutil.Process(child.pid)
            assert processes._environ_value(proc, "SUPERVISOR_PROCESS_NAME") == proc.environ().get(
                "SUPERVISOR_PROCESS_NAME") == "first"
            assert processes._environ_value(proc, "NOT_SET_ANYWHERE") is None
        finally:
            child.kill()


# --- connections: one TCP table for all the processes ---------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("field", "family", "expected"), [
    ("0100007F:1538", socket.AF_INET, "127.0.0.1:5432"),
    ("0500000A:0016", socket.AF_INET, "10.0.0.5:22"),
    ("00000000:0000", socket.AF_INET, ""),
    ("00000000000000000000000001000000:1111", socket.AF_INET6, "[::1]:4369"),
    ("0000000000000000FFFF00000100007F:9E49", socket.AF_INET6, "[::ffff:127.0.0.1]:40521"),
    ("B80D0120000000000000000001000000:01BB", socket.AF_INET6, "[2001:db8::1]:443"),
])
def test_proc_net_tcp_addresses_are_written_as_psutil_writes_them(field: str, family: int, expected: str) -> None:
    from rqdoctor.probes.sockets import _proc_address

    if sys.byteorder != "little":
        pytest.skip("the fields above are as a little-endian kernel prints them")
    assert _proc_address(field, family) == expected


def _psutil_connections(pid: int) -> set[tuple[str, str, str, int]]:
    """What psutil itself says of a process's TCP connections, written as the probe writes them."""
    def text(addr: Any) -> str:
        return "" if not addr else f"[{addr.ip}]:{addr.port}" if ":" in addr.ip else f"{addr.ip}:{addr.port}"

    return {(text(c.laddr), text(c.raddr), c.status, c.fd) for c in psutil.Process(pid).net_connections("tcp")}


@pytest.mark.integration
def test_connections_are_psutils_and_the_tcp_table_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listeners, IPv4 and IPv6 peers of several processes: as psutil reads them, from one read of the table."""
    opened: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(("/net/tcp", "/net/tcp6")):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    held = [socket.create_server(("127.0.0.1", 0))]
    if socket.has_ipv6 and os.path.exists("/proc/net/tcp6"):
        server6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        held += [server6, socket.create_connection(("::1", server6.getsockname()[1]))]
    with fake_tree() as tree:
        monkeypatch.setattr("builtins.open", counting_open)
        infos = _by_pid(probe_processes([], HOST, [], cpu_window=0.0, extra_pids=[os.getpid()]))
        monkeypatch.undo()
        pids = [tree.worker, tree.horse, tree.child, os.getpid()]
        expected = {pid: _psutil_connections(pid) for pid in pids}
    names = [sock.getsockname()[1] for sock in held]
    for sock in held:
        sock.close()
    assert sorted(opened) == ["/proc/net/tcp", "/proc/net/tcp6"][:len(opened)] and len(opened) >= 1
    for pid in pids:
        assert {(c.laddr, c.raddr, c.status, c.fd) for c in infos[pid].connections} == expected[pid], pid
    mine = {(c.laddr, c.raddr) for c in infos[os.getpid()].connections}
    assert (f"127.0.0.1:{names[0]}", "") in mine  # a listener: no peer
    if len(held) > 1:
        assert (f"[::1]:{names[2]}", f"[::1]:{names[1]}") in mine


# --- vanishing processes ---------------------------------------------------------------------------------


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.integration
@pytest.mark.parametrize("targeted", [True, False], ids=["worker-of-redis", "not-a-target"])
@pytest.mark.parametrize("when", ["before_read", "during_cpu_window"])
def test_vanishing_process_does_not_raise(when: str, targeted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that exits while read is marked vanished; it is an error only when the report is about it."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "rq", "worker", "q"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not any(p.pid == victim.pid for p in probe_processes([], HOST, [], cpu_window=0.0)):
            assert time.monotonic() < deadline, "victim never showed up as worker-like"
            time.sleep(0.05)
        if when == "before_read":
            real_select = processes._select

            def select_then_kill(*args: Any) -> list[int]:
                pids = real_select(*args)
                _kill_and_reap(victim)
                return pids

            monkeypatch.setattr(processes, "_select", select_then_kill)
        else:

            def sleep_then_kill(seconds: float) -> None:
                _kill_and_reap(victim)
                time.sleep(seconds)

            monkeypatch.setattr(processes, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep_then_kill))
        errors: list[ProbeError] = []
        workers = [WorkerInfo("w", "rq:worker:w", hostname=HOST, pid=victim.pid)] if targeted else []
        infos = _by_pid(probe_processes(workers, HOST, errors, cpu_window=0.05))
    finally:
        if victim.poll() is None:
            _kill_and_reap(victim)
    gone = infos[victim.pid]
    assert gone.status == "vanished" and gone.cpu_percent is None
    mine = [(e.probe, e.kind) for e in errors if str(victim.pid) in e.subject.split()]
    assert mine == ([("processes", "vanished")] if targeted else [])


def test_targets_are_this_hosts_redis_worker_pids_their_children_and_asked_pids() -> None:
    """Whose exit mid-scan is an error: not a horse's child, nor a worker hash of another host."""
    rows = {pid: processes._Row(None, ppid, [], None) for pid, ppid in  # type: ignore[arg-type]
            {10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 1}.items()}
    workers = [WorkerInfo("w", "rq:worker:w", hostname=HOST, pid=10),
               WorkerInfo("far", "rq:worker:far", hostname="elsewhere", pid=20)]
    assert processes._targets(rows, workers, HOST, [30]) == {10, 11, 30}


def _probe_as_nobody() -> dict[str, Any]:
    """Fork, drop to uid/gid 65534 (nobody) in the child, probe, and hand the result back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, always os._exit
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            errors: list[ProbeError] = []
            infos = probe_processes([], HOST, errors, cpu_window=0.0)
            data = {"infos": [asdict(i) for i in infos], "errors": [asdict(e) for e in errors]}
            with os.fdopen(w, "w") as out:
                json.dump(data, out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text, "the unprivileged probe failed"
    return json.loads(text)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied_gives_partial_data() -> None:
    """Probing root's fake worker as `nobody`: no cwd/environ/connections, one summarising error."""
    with fake_tree() as tree:
        result = _probe_as_nobody()
    infos = {i["pid"]: i for i in result["infos"]}
    horse = infos[tree.horse]
    assert horse["ppid"] == tree.worker and horse["pgid"] == tree.horse and horse["worker_like"]
    assert horse["cpu_time"] is not None and horse["create_time"] is not None
    assert horse["cwd"] is None and horse["supervisor_program"] is None and horse["connections"] == []
    (error,) = [e for e in result["errors"] if e["kind"] == "permission"]
    assert "cwd" in error["message"] and error["hint"]
    assert str(tree.horse) in error["subject"].removeprefix("pids ").split(",")


# --- real rq workers -----------------------------------------------------------------------------------


def _snapshot(url: str, bench: Bench) -> Snapshot:
    """What `collect` gathers, minus stacks and databases; other benches' workers may run on this host."""
    errors: list[ProbeError] = []
    client = connect(url, 5.0)
    try:
        state = read_rq_state(client, None, errors)
    finally:
        client.close()
    procs = probe_processes(state.workers, HOST, errors, cpu_window=0.1)
    assert [e for e in errors if e.kind not in ("vanished",)] == []
    target = TargetInfo(url, "test", bench_path=str(bench.root))
    return Snapshot(host=HOST, generated_at=time.time(), target=target, redis=state,
                    processes=procs, errors=errors)


def _wait_for_job_body(horse: psutil.Process, flavour: str) -> None:
    """Wait until the horse has spawned the job's `sleep` and, with setproctitle, retitled itself."""
    deadline = time.monotonic() + 15
    while True:
        titled = " ".join(horse.cmdline()).startswith("rq:worker:") and ": Processing" in " ".join(horse.cmdline())
        if horse.children() and titled is RQ_FLAVOURS[flavour].setproctitle:
            return
        assert time.monotonic() < deadline, "the job body did not start in its horse"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("rq_flavour", ["rq115", "rq116", "rq26", "rq30"])
def test_real_frappe_worker_job_runs_in_its_horse(
    rq_flavour: str, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str
) -> None:
    worker = workers.frappe(bench, rq_flavour, queues=("short",))
    (name,) = wait_for_worker_registered(redis_client, worker)
    job_id = enqueue(rq_flavour, redis_url, bench.queue("short"), "rqdoctor.scenarios.wait_child", {"seconds": 30})
    started = wait_for_job_started(redis_client, job_id, worker)
    assert started.horse is not None
    _wait_for_job_body(started.horse, rq_flavour)

    links = link(_snapshot(redis_url, bench))
    (wl,) = [wl for wl in links.workers if wl.worker.name == name]
    assert wl.location == "local" and wl.kind == "fork"
    assert wl.process.pid == worker.pid and wl.process.cwd == str(bench.sites_path)  # type: ignore[union-attr]
    assert wl.horse is not None and wl.horse.pid == started.horse.pid
    (jl,) = [jl for jl in links.jobs if jl.job.job_id == job_id]
    assert jl.runner is not None and jl.runner.pid == started.horse.pid and jl.runner_role == "horse"
    assert [c.cmdline[0] for c in jl.children] == ["sleep"]
    assert jl.location == "local" and links.orphans == []
    assert links.job_for(links.local(jl.children[0].pid)) is jl
    assert jl.matched_by == ("executions" if rq_flavour == "rq30" else "current_job")
    titled = " ".join(jl.runner.cmdline).startswith(f"rq:worker:{name}: Processing")
    assert titled is RQ_FLAVOURS[rq_flavour].setproctitle


@pytest.mark.slow
@pytest.mark.parametrize("rq_flavour", ["rq26"])
def test_real_simple_worker_runs_job_in_process(
    rq_flavour: str, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str
) -> None:
    worker = workers.frappe(bench, rq_flavour, queues=("short",), simple=True)
    wait_for_worker_registered(redis_client, worker)
    job_id = enqueue(rq_flavour, redis_url, bench.queue("short"), "rqdoctor.scenarios.sleep_for", {"seconds": 30})
    wait_for_job_started(redis_client, job_id, worker)

    links = link(_snapshot(redis_url, bench))
    (jl,) = [jl for jl in links.jobs if jl.job.job_id == job_id]
    assert jl.runner is not None and jl.runner.pid == worker.pid and jl.runner_role == "worker"


@pytest.mark.slow
@pytest.mark.parametrize("rq_flavour", ["rq26"])
def test_real_worker_pool(
    rq_flavour: str, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str
) -> None:
    pool = workers.frappe(bench, rq_flavour, queues=("short",), pool_size=2)
    wait_for_worker_registered(redis_client, pool, count=2)
    job_id = enqueue(rq_flavour, redis_url, bench.queue("short"), "rqdoctor.scenarios.sleep_for", {"seconds": 30})
    started = wait_for_job_started(redis_client, job_id, pool)

    links = link(_snapshot(redis_url, bench))
    members = [wl for wl in links.workers if wl.pool_parent is not None and wl.pool_parent.pid == pool.pid]
    assert len(members) == 2 and {wl.kind for wl in members} == {"pool"}
    (jl,) = [jl for jl in links.jobs if jl.job.job_id == job_id]
    assert jl.runner is not None and jl.runner.pid == started.horse.pid  # type: ignore[union-attr]
    assert jl.worker_process is not None and jl.worker_process.ppid == pool.pid
    assert links.orphans == []


@pytest.mark.slow
@pytest.mark.parametrize(("rq_flavour", "matched_by"), [("rq115", "started_at"), ("rq116", "title")])
def test_real_orphaned_horse(
    rq_flavour: str, matched_by: str, bench: Bench, workers: Workers, redis_client: redis.Redis, redis_url: str
) -> None:
    """SIGKILL the worker: its horse lives on, re-parented, and is still matched to the job."""
    worker = workers.frappe(bench, rq_flavour, queues=("short",))
    wait_for_worker_registered(redis_client, worker)
    job_id = enqueue(rq_flavour, redis_url, bench.queue("short"), "rqdoctor.scenarios.wait_child", {"seconds": 30})
    started = wait_for_job_started(redis_client, job_id, worker)
    assert started.horse is not None
    _wait_for_job_body(started.horse, rq_flavour)
    os.kill(worker.pid, signal.SIGKILL)
    worker.popen.wait(timeout=10)

    links = link(_snapshot(redis_url, bench))
    (wl,) = [wl for wl in links.workers if wl.worker.name == started.worker_name]
    assert wl.location == "dead" and wl.process is None
    assert started.horse.pid in [p.pid for p in links.orphans]
    (jl,) = [jl for jl in links.jobs if jl.job.job_id == job_id]
    assert jl.runner is not None and jl.runner.pid == started.horse.pid
    assert (jl.runner_role, jl.matched_by, jl.location) == ("orphaned-horse", matched_by, "local")
    assert [c.cmdline[0] for c in jl.children] == ["sleep"]


@pytest.mark.integration
def test_extra_pid_is_described_and_a_process_that_exits_later_is_marked_vanished() -> None:
    """``stack <pid>`` of any process: it is collected; once it exits (zombie, then reaped) it is gone."""
    sleeper = subprocess.Popen(["sleep", "30"])
    keep = subprocess.Popen(["sleep", "30"])
    try:
        errors: list[ProbeError] = []
        infos = probe_processes([], HOST, errors, cpu_window=0.0, extra_pids=[sleeper.pid, keep.pid])
        by_pid = _by_pid(infos)
        assert by_pid[sleeper.pid].cmdline == ["sleep", "30"] and not by_pid[sleeper.pid].worker_like
        sleeper.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        recheck_gone(infos, [sleeper.pid, keep.pid], errors)  # not reaped yet: a zombie
        assert by_pid[sleeper.pid].status == "vanished" and by_pid[keep.pid].status != "vanished"
        ours = {f"pid {sleeper.pid}", f"pid {keep.pid}"}  # other workers on this host may vanish meanwhile
        assert [e.subject for e in errors if e.kind == "vanished" and e.subject in ours] == [f"pid {sleeper.pid}"]
    finally:
        for p in (sleeper, keep):
            p.kill()
            p.wait(timeout=10)


# --- the CPU window left open while other probes run -----------------------------------------------------------


@pytest.mark.integration
def test_cpu_window_closed_late_waits_for_nothing_and_measures_the_whole_window(monkeypatch: pytest.MonkeyPatch,
                                                                                  ) -> None:
    """``start_processes`` reads everything but CPU; the window, closed after other work, needs no more wait."""
    with fake_tree() as tree:
        window = processes.start_processes([], HOST, cpu_window=0.1)
        infos = _by_pid(window.infos)
        horse, worker = infos[tree.horse], infos[tree.worker]
        assert horse.worker_like and horse.connections and horse.status != "vanished"  # read already
        assert horse.cpu_percent is None and horse.cpu_time is None  # not yet
        time.sleep(0.3)  # the stacks, the databases…
        waits = _counting_sleeps(monkeypatch)
        errors: list[ProbeError] = []
        window.finish(window.read(), errors)
    assert waits == [0.0] and _mine(errors, tree) == []
    assert horse.cpu_percent is not None and horse.cpu_percent > 20  # busy all along the window
    assert horse.cpu_time is not None and horse.cpu_time > 0
    assert worker.cpu_percent is not None and worker.cpu_percent < 20


@pytest.mark.integration
def test_cpu_window_never_waits_past_what_it_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``read(max_wait)``: the deadline caps the wait; the CPU is read all the same, over a shorter window."""
    with fake_tree() as tree:
        window = processes.start_processes([], HOST, cpu_window=30.0)
        waits = _counting_sleeps(monkeypatch)
        readings = window.read(max_wait=0.0)
    assert waits == [0.0] and readings[tree.horse].failure is None and readings[tree.horse].seconds is not None


@pytest.mark.integration
@pytest.mark.parametrize("how", ["gone", "gone-reported", "rechecked"])
def test_a_target_gone_before_the_window_closes_is_vanished_with_one_error(how: str) -> None:
    """Gone at the late read: ``vanished`` and an error (a target), unless another probe reported it (``reported``)
    or :func:`recheck_gone` marked it already (its error only)."""
    victim = subprocess.Popen(["sleep", "30"])
    try:
        window = processes.start_processes([], HOST, cpu_window=0.0, extra_pids=[victim.pid])
        gone = _by_pid(window.infos)[victim.pid]
        assert gone.status != "vanished"
        _kill_and_reap(victim)
        errors: list[ProbeError] = []
        if how == "rechecked":
            recheck_gone(window.infos, [victim.pid], errors)
        window.finish(window.read(), errors, reported={victim.pid} if how == "gone-reported" else ())
    finally:
        if victim.poll() is None:
            _kill_and_reap(victim)
    assert gone.status == "vanished" and gone.cpu_percent is None and gone.cpu_time is None
    mine = [(e.probe, e.kind) for e in errors if str(victim.pid) in e.subject.split()]
    assert mine == ([] if how == "gone-reported" else [("processes", "vanished")])


@pytest.mark.integration
def test_collect_closes_the_cpu_window_after_the_callers_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``collect(then=…)``: ``then`` runs with the window open (no CPU yet, no wait for it); the window closes
    after it, under the deadline, and a target that exited meanwhile is vanished with the probe's error."""
    from rqdoctor.collect import CollectOptions, collect
    from rqdoctor.config import Target

    keep, victim = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    seen: list[float | None] = []

    def then(snapshot: Snapshot) -> None:
        seen.extend(p.cpu_percent for p in snapshot.processes)
        _kill_and_reap(victim)
        time.sleep(0.2)  # longer than the window

    try:
        waits = _counting_sleeps(monkeypatch)
        options = CollectOptions(timeout=30, redis=False, stack_pids=[keep.pid, victim.pid], cpu_window=0.1,
                                 since_process_start=False)
        snapshot = collect(Target("redis://127.0.0.1:1", "test"), options, then=then)
    finally:
        for p in (keep, victim):
            if p.poll() is None:
                _kill_and_reap(p)
    infos = _by_pid(snapshot.processes)
    assert seen and all(cpu is None for cpu in seen)
    assert waits == [0.0]
    assert infos[keep.pid].cpu_percent is not None and infos[keep.pid].cpu_time is not None
    assert infos[victim.pid].status == "vanished" and infos[victim.pid].cpu_percent is None
    ours = {f"pid {keep.pid}", f"pid {victim.pid}"}
    assert [(e.probe, e.subject) for e in snapshot.errors if e.kind == "vanished" and e.subject in ours] == [
        ("processes", f"pid {victim.pid}")]
