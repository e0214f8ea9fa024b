"""The /proc facts of real blocked processes: their system call, the fds it waits on, /proc/locks."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rqdoctor import scenarios
from rqdoctor.model import ThreadStack
from rqdoctor.probes.procfs import record_syscall
from tests.harness.services import read_line

pytestmark = pytest.mark.integration

WAITS = {
    "recvfrom": "s.recv(1)",
    "poll": "s.settimeout(300); s.recv(1)",
    "pselect6": "import select; select.select([s], [], [])",
    "epoll_wait": "import selectors; sel = selectors.EpollSelector(); sel.register(s, 1); sel.select()",
}


@pytest.fixture(scope="module")
def pit() -> Iterator[scenarios.Tarpit]:
    with scenarios.tarpit() as t:
        yield t


def blocked(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    read_line(proc, "ready")
    time.sleep(0.3)  # from print() to the blocking call
    return proc


def facts(pid: int) -> ThreadStack:
    thread = ThreadStack(thread_id=1, name="MainThread")
    record_syscall(pid, pid, thread)
    return thread


@pytest.mark.parametrize("syscall", sorted(WAITS))
def test_blocked_socket_wait_names_its_socket(pit: scenarios.Tarpit, syscall: str) -> None:
    code = (f"import socket; s = socket.create_connection(('127.0.0.1', {pit.port})); "
            f"print('ready', s.fileno(), flush=True); {WAITS[syscall]}")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        fd = int(read_line(proc, "ready").split()[1])
        time.sleep(0.3)
        thread = facts(proc.pid)
        assert thread.syscall == syscall and thread.wait_fds_exact, thread
        assert [w.fd for w in thread.wait_fds] == [fd] and thread.wait_fds[0].target.startswith("socket:[")
    finally:
        proc.kill()
        proc.wait()


def test_sleep_has_no_fd() -> None:
    proc = blocked("import time; print('ready', flush=True); time.sleep(300)")
    try:
        thread = facts(proc.pid)
        assert (thread.syscall, thread.wait_fds, thread.wait_fds_exact) == ("clock_nanosleep", [], False)
    finally:
        proc.kill()
        proc.wait()


def test_flock_wait_names_the_holder_from_proc_locks(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    take = f"import fcntl; f = open({str(path)!r}, 'a'); print('ready', flush=True); fcntl.flock(f, fcntl.LOCK_EX)"
    holder = blocked(take.replace("print('ready', flush=True); ", "") + "; print('ready', flush=True); "
                     "import time; time.sleep(300)")
    waiter = blocked(take)
    try:
        thread = facts(waiter.pid)
        assert thread.syscall == "flock", thread
        (wait,) = thread.wait_fds
        assert wait.target == str(path) and wait.inode == path.stat().st_ino
        by_pid = {lock.pid: lock for lock in wait.locks}
        assert not by_pid[holder.pid].blocked and by_pid[waiter.pid].blocked
        assert by_pid[holder.pid].cmdline[:2] == [sys.executable, "-c"]
    finally:
        for p in (waiter, holder):
            p.kill()
            p.wait()
