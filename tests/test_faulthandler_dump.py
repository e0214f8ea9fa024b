"""Stacks without ptrace: the process's own faulthandler dump on SIGUSR1 (parser pure; the probe on live processes).

py-spy's permission failure is simulated at the boundary: a stand-in ``py-spy`` that answers as py-spy does
when ptrace is refused. The processes are real: one registers faulthandler on SIGUSR1 with stderr in a file,
one has no SIGUSR1 handler and must never be signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rqdoctor.deadline import Deadline
from rqdoctor.probes import faulthandler_dump, stacks

DUMP = """\
Thread 0x00007f3a1c9ff6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 327 in wait
  File "/usr/lib/python3.11/threading.py", line 629 in wait

Current thread 0x00007f3a2a0b7740 (most recent call first):
  File "/srv/bench/apps/frappe/frappe/utils/background_jobs.py", line 231 in execute_job
  File "/srv/env/lib/python3.11/site-packages/rq/job.py", line ??? in perform
"""

TARGET = r"""
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, file=sys.__stderr__)
print("ready", file=sys.stderr, flush=True)
def hang_here():
    time.sleep(120)
hang_here()
"""
NO_HANDLER = "import sys, time; print('ready', file=sys.stderr, flush=True); time.sleep(120)"


@pytest.mark.unit
def test_parse_reads_every_thread_innermost_first() -> None:
    threads = faulthandler_dump.parse("some earlier log line\n" + DUMP + "a later log line\n")
    assert [t.thread_id for t in threads] == [0x00007F3A1C9FF6C0, 0x00007F3A2A0B7740]
    assert threads[1].name == "current thread"
    assert [(f.name, f.line) for f in threads[1].frames] == [("execute_job", 231), ("perform", 0)]
    assert threads[0].frames[0].filename == "/usr/lib/python3.11/threading.py"


@pytest.mark.unit
def test_parse_single_thread_dump_and_garbage() -> None:
    threads = faulthandler_dump.parse('Stack (most recent call first):\n  File "/a.py", line 3 in f\n')
    assert [(t.thread_id, t.frames[0].name) for t in threads] == [(0, "f")]
    assert faulthandler_dump.parse("Traceback (most recent call last):\n  nothing here\n") == []


def _start(code: str, stderr: Path) -> subprocess.Popen[bytes]:
    with open(stderr, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    deadline = time.monotonic() + 30
    while b"ready" not in stderr.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
        time.sleep(0.05)
    return proc


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]]:
    log = tmp_path / "worker.error.log"
    with_handler = _start(TARGET, log)
    without = _start(NO_HANDLER, tmp_path / "other.log")
    try:
        yield with_handler, without, log
    finally:
        for proc in (with_handler, without):
            proc.kill()
            proc.wait(10)


@pytest.fixture
def refused_py_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A py-spy that fails as py-spy does without ptrace permission."""
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Permission Denied (os error 13)' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(stacks, "find_py_spy", lambda: str(fake))


@pytest.mark.integration
def test_the_own_dump_replaces_a_refused_py_spy_and_the_unhandled_one_is_left_alone(
        targets: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path], refused_py_spy: None) -> None:
    with_handler, without, log = targets
    assert faulthandler_dump.catches_sigusr1(with_handler.pid)
    assert not faulthandler_dump.catches_sigusr1(without.pid)
    before = log.stat().st_size
    started = psutil.Process(without.pid).create_time()
    results, errors = stacks.probe_stacks([with_handler.pid, without.pid], Deadline(30), samples=1)
    by_pid = {r.pid: r for r in results}
    [sample] = by_pid[with_handler.pid].samples
    assert sample.source == "faulthandler"
    names = [f.name for t in sample.threads for f in t.frames]
    assert "hang_here" in names and "<module>" in names
    assert sample.threads[0].syscall is not None  # the one thread's kernel facts, from /proc
    assert log.stat().st_size > before  # it wrote its dump there
    # the process without a SIGUSR1 handler: never signalled, still alive, py-spy's error stands
    assert without.poll() is None and psutil.Process(without.pid).create_time() == started
    assert by_pid[without.pid].samples == [] and by_pid[without.pid].error is not None
    assert by_pid[without.pid].error.kind == "permission"
    assert [e.subject for e in errors] == [str(without.pid)]


@pytest.mark.integration
def test_stderr_not_a_file_is_never_signalled(tmp_path: Path, refused_py_spy: None) -> None:
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and b"ready" in proc.stderr.readline()
        assert faulthandler_dump.catches_sigusr1(proc.pid)
        assert faulthandler_dump.stderr_file(proc.pid) is None  # a pipe cannot be read back
        results, _ = stacks.probe_stacks([proc.pid], Deadline(30), samples=1)
        assert results[0].samples == [] and results[0].error is not None
        os.set_blocking(proc.stderr.fileno(), False)
        assert not proc.stderr.read()  # nothing was dumped: it was not signalled
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
