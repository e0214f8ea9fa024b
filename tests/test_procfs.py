"""The /proc facts of real blocked processes: their system call, the fds it waits on, /proc/locks."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rqdoctor import scenarios
from rqdoctor.deadline import Deadline
from rqdoctor.model import ThreadStack
from rqdoctor.probes.procfs import record_syscall
from rqdoctor.probes.stacks import find_py_spy, probe_stacks
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


_FAKE_FILELOCK = '''
import fcntl, os, time

class FileLock:
    """Polls like the real package: a nonblocking flock, the fd closed on failure, then a sleep."""

    def __init__(self, lock_file, timeout=-1):
        self.lock_file, self.timeout, self.fd = lock_file, timeout, None

    def acquire(self, poll_interval=0.05):
        lock_filename = self.lock_file
        while self.fd is None:
            fd = os.open(lock_filename, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
            except OSError:
                os.close(fd)
                time.sleep(poll_interval)
'''


@pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")
def test_polling_filelock_gets_the_bench_lock_files_and_their_holder(tmp_path: Path) -> None:
    # GIVEN a bench whose site lock is held by a plain process, and a process polling for it in filelock code
    lib = tmp_path / "lib" / "python3.11" / "site-packages" / "filelock"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text(_FAKE_FILELOCK)
    sites = tmp_path / "bench" / "sites"
    (sites / "site1.local" / "locks").mkdir(parents=True)
    (tmp_path / "bench" / "config").mkdir()
    lock = sites / "site1.local" / "locks" / "bench_migrate.lock"
    other = tmp_path / "bench" / "config" / "unheld.lock"
    other.touch()
    hold = ("import fcntl, time; f = open('site1.local/locks/bench_migrate.lock', 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('ready', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=sites, stdout=subprocess.PIPE, text=True)
    read_line(holder, "ready")
    wait = (f"import sys; sys.path.insert(0, {str(lib.parent)!r}); import filelock; print('ready', flush=True); "
            "filelock.FileLock('site1.local/locks/bench_migrate.lock').acquire()")
    waiter = subprocess.Popen([sys.executable, "-c", wait], cwd=sites, stdout=subprocess.PIPE, text=True)
    try:
        read_line(waiter, "ready")
        time.sleep(0.3)
        # WHEN its stacks are sampled
        (stacks,), _ = probe_stacks([waiter.pid], Deadline(20), samples=2, interval=0.2)
        # THEN the held lock file and its holder are recorded beside the filelock frames
        thread = stacks.samples[-1].threads[0]
        assert any("/filelock/" in f.filename for f in thread.frames), thread.frames
        (found,) = thread.lock_files
        assert found.path == str(lock) and found.inode == lock.stat().st_ino
        assert [(lk.pid, lk.blocked) for lk in found.locks] == [(holder.pid, False)]
    finally:
        for p in (waiter, holder):
            p.kill()
            p.wait()
