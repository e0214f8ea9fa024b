"""The stack probe: py-spy JSON parsing (recorded dumps) and real py-spy on real processes."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from rqdoctor import scenarios
from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.activity import Activity, classify, classify_threads
from rqdoctor.model import Connection, ProcessInfo, ProcessStacks
from rqdoctor.probes import stacks as stacks_probe
from rqdoctor.probes.stacks import find_py_spy, parse_dump, probe_stacks, py_spy_command

DATA = Path(__file__).parent / "data" / "stacks"
TARGETS = DATA / "targets.py"
PY_SPY = find_py_spy()
needs_py_spy = pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")
real_processes = pytest.mark.integration


def _dump(name: str) -> list:
    return json.loads(next((DATA.parent / "frappe-15.54.1").glob(f"pyspy-{name}-*.json")).read_text())


# --- parsing (pure) -----------------------------------------------------------------------


def test_parse_recorded_worker_dump() -> None:
    threads = parse_dump(_dump("worker-long"))
    assert [t.name for t in threads] == ["Thread-1", "MainThread"]
    main = threads[1]
    assert main.os_thread_id == 18622 and not main.active and not main.owns_gil
    assert (main.frames[0].name, main.frames[0].line) == ("Worker.wait_for_horse", 951)
    assert main.frames[0].filename.endswith("site-packages/rq/worker.py")
    assert main.frames[-1].filename == "<frozen runpy>"
    assert all(f.locals is None and f.code is None for t in threads for f in t.frames)


def test_parse_recorded_horse_dump_keeps_frame_order() -> None:
    (thread,) = parse_dump(_dump("horse-lockwait"))
    names = [f.name for f in thread.frames[:3]]
    assert names == ["SocketIO.readinto", "Connection._read_bytes", "Connection._read_packet"]
    assert thread.wchan is None  # only the live probe reads /proc


def test_parse_redacts_locals() -> None:
    raw = [{
        "thread_id": 1, "thread_name": "MainThread", "os_thread_id": 7, "active": False, "owns_gil": False,
        "frames": [{
            "name": "send", "filename": "/app/mail.py", "module": None, "short_filename": "mail.py", "line": 3,
            "locals": [
                {"name": "smtp_password", "addr": 1, "arg": True, "repr": '"hunter2"'},
                {"name": "url", "addr": 2, "arg": False, "repr": '"redis://u:s3cret@h:6379/0"'},
                {"name": "n", "addr": 3, "arg": False, "repr": "3"},
                {"name": "obj", "addr": 4, "arg": False, "repr": None},
            ],
        }],
    }]  # fmt: skip
    (frame,) = parse_dump(raw)[0].frames
    assert frame.locals == {"smtp_password": "***", "url": '"redis://u:***@h:6379/0"', "n": "3", "obj": ""}


@pytest.mark.parametrize("bad", [{"not": "a list"}, [{"thread_id": 1}], ["x"]])
def test_parse_rejects_foreign_json(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_dump(bad)


def test_command_line_options() -> None:
    assert py_spy_command("py-spy", 5, False, False, False) == [
        "py-spy",
        "dump",
        "--json",
        "--pid",
        "5",
        "--nonblocking",
    ]
    assert "--native" not in py_spy_command("py-spy", 5, False, True, False)  # py-spy rejects native+nonblocking
    assert py_spy_command("py-spy", 5, True, True, True)[-2:] == ["--native", "--locals"]
    assert "--nonblocking" not in py_spy_command("py-spy", 5, True, False, False)


def test_find_py_spy_prefers_the_interpreters_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_py_spy() == str(fake)
    fake.unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert find_py_spy() is None


# --- real processes -----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


def _start(name: str, *args: str) -> Target:
    popen = subprocess.Popen(
        [sys.executable, str(TARGETS), name, *args], stdout=subprocess.PIPE, start_new_session=True
    )
    target = Target(name, popen)
    ready, _, _ = select.select([popen.stdout], [], [], 20)
    if not (ready and popen.stdout.readline().strip() == b"ready"):
        _stop(target)
        pytest.fail(f"target {name} did not start")
    return target


def _stop(target: Target) -> None:
    """Kill the target's own session (it leads it: children such as ``sleep 1000`` go too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target.pid, signal.SIGKILL)
    target.popen.wait(timeout=10)


@pytest.fixture
def sleeper() -> Iterator[Target]:
    target = _start("sleep")
    yield target
    _stop(target)


def _process_info(pid: int) -> tuple[ProcessInfo, list[ProcessInfo]]:
    """What the processes probe would record: TCP connections and children."""
    proc = psutil.Process(pid)
    conns = [
        Connection(f"{c.laddr.ip}:{c.laddr.port}", f"{c.raddr.ip}:{c.raddr.port}" if c.raddr else "", c.status)
        for c in proc.net_connections(kind="tcp")
    ]
    children = [ProcessInfo(pid=c.pid, ppid=pid, cmdline=c.cmdline(), status=c.status()) for c in proc.children()]
    return ProcessInfo(pid=pid, connections=conns), children


@dataclass
class Probed:
    stacks: dict[str, ProcessStacks]
    main: dict[str, Activity]
    threads: dict[str, list[Activity]]
    tarpit_port: int
    elapsed: float


@pytest.fixture(scope="module")
def probed() -> Iterator[Probed]:
    """Six real targets, probed together once with the default options, then classified."""
    if PY_SPY is None:
        pytest.skip("py-spy is not installed")
    with scenarios.tarpit() as pit:
        started: list[Target] = []
        try:
            for args in (("sleep",), ("cpu", "30"), ("recv", str(pit.port)), ("child",), ("deadlock",),
                         ("http", pit.url)):  # fmt: skip
                started.append(_start(*args))
            until = time.monotonic() + 10
            while len(pit.connections) < 2 and time.monotonic() < until:  # recv and http
                time.sleep(0.05)
            time.sleep(0.3)  # let the deadlock and the HTTP request settle
            begin = time.monotonic()
            result, errors = probe_stacks([t.pid for t in started], Deadline(20))
            elapsed = time.monotonic() - begin
            assert errors == []
            by_name = {t.name: s for t, s in zip(started, result, strict=True)}
            main, threads = {}, {}
            for t in started:
                info, children = _process_info(t.pid)
                main[t.name] = classify(by_name[t.name], info, children)
                threads[t.name] = classify_threads(by_name[t.name], info, children)
        finally:
            for t in started:
                _stop(t)
        yield Probed(by_name, main, threads, pit.port, elapsed)


@real_processes
@needs_py_spy
def test_samples_carry_time_cpu_wchan_and_source(probed: Probed) -> None:
    stacks = probed.stacks["sleep"]
    assert stacks.mode == "nonblocking" and stacks.error is None and not stacks.resumed_stopped
    assert len(stacks.samples) == 3
    times = [s.taken_at for s in stacks.samples]
    assert times == sorted(times) and 0.6 <= times[-1] - times[0] <= 2.0
    assert all(s.cpu_time is not None for s in stacks.samples)
    main = stacks.samples[-1].threads[0]
    assert main.wchan and "nanosleep" in main.wchan
    assert main.frames[0].code == "time.sleep(1000)"
    assert probed.elapsed < 5, "six processes are sampled in parallel rounds"


@real_processes
@needs_py_spy
def test_sleeping_process(probed: Probed) -> None:
    a = probed.main["sleep"]
    assert (a.kind, a.progress, a.evidence) == ("sleep", "blocked", "source")
    assert a.where is not None and a.where.name == "nap"
    assert a.cpu_percent is not None and a.cpu_percent < 5


@real_processes
@needs_py_spy
def test_cpu_loop(probed: Probed) -> None:
    a = probed.main["cpu"]
    assert (a.kind, a.progress) == ("cpu", "spinning")
    assert a.cpu_percent is not None and a.cpu_percent > 10  # a shared 2-core machine may give it less than a core
    assert a.where is not None and a.where.name == "spin"


@real_processes
@needs_py_spy
def test_socket_recv_against_tarpit(probed: Probed) -> None:
    a = probed.main["recv"]
    assert (a.kind, a.progress) == ("socket", "blocked")
    assert a.peer == f"127.0.0.1:{probed.tarpit_port}"
    assert a.where is not None and a.where.name == "read_tarpit"


@real_processes
@needs_py_spy
def test_http_without_timeout(probed: Probed) -> None:
    a = probed.main["http"]
    assert (a.kind, a.progress) == ("http", "blocked")
    assert a.peer == f"127.0.0.1:{probed.tarpit_port}"
    assert "urllib.request" in a.detail
    assert a.where is not None and a.where.name == "http_no_timeout"


@real_processes
@needs_py_spy
def test_waiting_on_child(probed: Probed) -> None:
    a = probed.main["child"]
    assert (a.kind, a.progress) == ("subprocess", "blocked")
    assert a.child_pid is not None and f"child pid {a.child_pid} `sleep 1000`" in a.detail


@real_processes
@needs_py_spy
def test_thread_deadlock(probed: Probed) -> None:
    main, *partners = probed.threads["deadlock"]
    assert (main.thread_name, main.kind, main.progress) == ("MainThread", "lock", "blocked")
    assert "Thread.join" in main.detail
    assert sorted(p.thread_name for p in partners) == ["deadlock-a", "deadlock-b"]
    for p in partners:
        assert (p.kind, p.progress) == ("lock", "blocked")
        assert p.where is not None and p.where.name.endswith("grab") and p.where.code == "with second:"


@real_processes
@needs_py_spy
def test_default_mode_never_stops_the_target(sleeper: Target) -> None:
    seen: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        probe_stacks([sleeper.pid], Deadline(10), samples=4, interval=0.2)
        done.set()

    worker = threading.Thread(target=sample)
    worker.start()
    proc = psutil.Process(sleeper.pid)
    while not done.is_set():
        seen.add(proc.status())
    worker.join()
    assert seen and not seen & {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}


@real_processes
@needs_py_spy
def test_blocking_native_dump_with_locals(sleeper: Target) -> None:
    (stacks,), errors = probe_stacks([sleeper.pid], Deadline(15), samples=1, blocking=True, native=True,
                                     with_locals=True)  # fmt: skip
    assert errors == [] and stacks.mode == "blocking+native"
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED
    frames = stacks.samples[0].threads[0].frames
    assert any(f.module and "nanosleep" in f.name for f in frames), "native frames are merged"
    nap = next(f for f in frames if f.name == "nap")
    assert nap.locals == {"password": "***", "dsn": '"redis://app:***@127.0.0.1:6379/0"'}
    activity = classify(stacks)
    assert (activity.kind, activity.evidence) == ("sleep", "frames")


@real_processes
@needs_py_spy
def test_a_pid_that_does_not_exist_vanished() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (stacks,), errors = probe_stacks([gone.pid], Deadline(5), samples=2)
    assert [e.kind for e in errors] == ["vanished"] and stacks.error is errors[0]
    assert errors[0].subject == str(gone.pid) and errors[0].hint


@real_processes
@needs_py_spy
def test_not_a_python_process() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        (stacks,), errors = probe_stacks([proc.pid], Deadline(5))
    finally:
        proc.kill()
        proc.wait()
    assert [e.kind for e in errors] == ["unsupported"]
    assert "py-spy" in errors[0].hint and stacks.samples == []


@real_processes
@needs_py_spy
def test_one_failing_pid_does_not_affect_the_others(sleeper: Target) -> None:
    result, errors = probe_stacks([sleeper.pid, 999_999_999], Deadline(10), samples=2, interval=0.1)
    # a reading py-spy had no stack near is dropped (a loaded machine): at least one, not exactly two
    assert 1 <= len(result[0].samples) <= 2 and result[0].error is None
    assert result[1].error is not None and [e.kind for e in errors] == ["vanished"]


def test_missing_py_spy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks_probe, "find_py_spy", lambda: None)
    result, errors = probe_stacks([os.getpid(), 1], Deadline(5))
    assert [e.kind for e in errors] == ["missing_tool"]
    assert "pip install py-spy" in errors[0].hint
    assert all(s.error is errors[0] and not s.samples for s in result)


@real_processes
def test_expired_deadline_runs_nothing(sleeper: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no dump may start after the deadline"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("no recorder may start after the deadline"))
    deadline = Deadline(0.001)
    time.sleep(0.01)
    for samples in (1, 3):  # one dump; a recorder
        (stacks,), errors = probe_stacks([sleeper.pid], deadline, samples=samples)
        assert [e.kind for e in errors] == ["timeout"] and stacks.samples == []


def _fake_py_spy(directory: Path, body: str) -> str:
    path = directory / "py-spy"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@real_processes
def test_hung_py_spy_is_killed_at_the_deadline(
    sleeper: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """py-spy itself hanging (benfred/py-spy#565) ends as a timeout error, with no process left behind."""
    monkeypatch.setattr(stacks_probe, "find_py_spy", lambda: _fake_py_spy(tmp_path, "exec sleep 60"))
    begin = time.monotonic()
    (stacks,), errors = probe_stacks([sleeper.pid], Deadline(0.5))
    assert time.monotonic() - begin < 3
    assert [e.kind for e in errors] == ["timeout"] and "within" in errors[0].message
    assert stacks.error is errors[0] and stacks.samples == []
    assert not [p for p in psutil.Process().children(recursive=True) if "sleep 60" in " ".join(p.cmdline())]


@real_processes
def test_blocking_dump_that_leaves_the_target_stopped_is_resumed(
    sleeper: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benfred/py-spy#390: a dump that exits with its target in state T; rqdoctor sends SIGCONT."""
    monkeypatch.setattr(stacks_probe, "find_py_spy", lambda: _fake_py_spy(tmp_path, 'kill -STOP "$4"; echo "[]"'))
    (stacks,), errors = probe_stacks([sleeper.pid], Deadline(5), samples=1, blocking=True)
    assert stacks.resumed_stopped
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED
    assert errors == [] and stacks.samples[0].threads == []


@real_processes
@needs_py_spy
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_permission_denied(sleeper: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real py-spy, run as nobody against a root-owned process."""
    assert PY_SPY is not None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)
        copy = directory / "py-spy-real"
        shutil.copy(PY_SPY, copy)
        copy.chmod(copy.stat().st_mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        wrapper = _fake_py_spy(directory, f'exec setpriv --reuid=65534 --regid=65534 --clear-groups {copy} "$@"')
        monkeypatch.setattr(stacks_probe, "find_py_spy", lambda: wrapper)
        (stacks,), errors = probe_stacks([sleeper.pid], Deadline(10))
    assert [e.kind for e in errors] == ["permission"] and stacks.error is errors[0]
    assert "CAP_SYS_PTRACE" in errors[0].hint and "ptrace_scope" in errors[0].hint and "root" in errors[0].hint
