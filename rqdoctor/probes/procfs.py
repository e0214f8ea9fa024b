"""What a blocked thread waits on, from ``/proc``: its system call, the fds it waits on, file locks.

``/proc/PID/task/TID/syscall`` gives the call's number and arguments (root or the same user;
``running`` when on CPU). For calls with an fd argument the fd is read from the arguments;
for ``poll``/``ppoll``/``select``/``pselect6`` the set lives in the target's memory and is read
from ``/proc/PID/mem`` (bounded, only where the kernel allows it); for ``epoll_wait`` the
registered fds are listed in ``/proc/PID/fdinfo/EPFD``. Each fd is resolved through
``/proc/PID/fd/FD``; for a ``flock``/``fcntl`` wait the ``/proc/locks`` lines of the file's inode
are recorded with their owners' command lines. Raw facts only: which socket is "the peer" and
who holds a lock is judged in :mod:`rqdoctor.diagnose`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import struct
from pathlib import Path
from typing import NamedTuple

import psutil

from rqdoctor.model import FileLock, LockFile, ThreadStack, WaitFd
from rqdoctor.probes.processes import redact_argv
from rqdoctor.redact import redact_text

MAX_FDS = 64
"""At most this many fds of one poll/select/epoll set are read and resolved."""
MAX_LOCK_LINES = 10_000
"""``/proc/locks`` is read up to this many lines."""
MAX_LOCK_FILES = 500
"""At most this many of a bench's lock files are looked at."""
_FILELOCK_CODE = ("/filelock/", "/frappe/utils/synchronization.py")
"""Frames of code that waits for a file lock by polling (``filelock``'s nonblocking flock, then a sleep)."""
_LOCK_GLOBS = ("*/locks/*.lock", "../config/*.lock", "sites/*/locks/*.lock", "config/*.lock")
"""Frappe's lock files, relative to a worker's cwd (``<bench>/sites``) or the bench root."""
_FD, _POLL, _SELECT, _EPOLL, _NONE = "fd", "poll", "select", "epoll", ""

# name: (x86_64 number, aarch64 number, how its fds are found)
_SYSCALLS: dict[str, tuple[int | None, int | None, str]] = {
    "read": (0, 63, _FD), "write": (1, 64, _FD), "readv": (19, 65, _FD), "pread64": (17, 67, _FD),
    "poll": (7, None, _POLL), "ppoll": (271, 73, _POLL), "select": (23, None, _SELECT),
    "pselect6": (270, 72, _SELECT), "epoll_wait": (232, None, _EPOLL), "epoll_pwait": (281, 22, _EPOLL),
    "epoll_pwait2": (441, 441, _EPOLL), "connect": (42, 203, _FD), "accept": (43, 202, _FD),
    "accept4": (288, 242, _FD), "sendto": (44, 206, _FD), "recvfrom": (45, 207, _FD),
    "sendmsg": (46, 211, _FD), "recvmsg": (47, 212, _FD), "recvmmsg": (299, 243, _FD),
    "flock": (73, 32, _FD), "fcntl": (72, 25, _FD), "wait4": (61, 260, _NONE), "waitid": (247, 95, _NONE),
    "futex": (202, 98, _NONE), "nanosleep": (35, 101, _NONE), "clock_nanosleep": (230, 115, _NONE),
}  # fmt: skip
_COLUMN = {"x86_64": 0, "amd64": 0, "aarch64": 1, "arm64": 1}
LOCK_SYSCALLS = frozenset({"flock", "fcntl"})


class Syscall(NamedTuple):
    """The system call one thread is in."""

    name: str
    nr: int | None
    fds: list[WaitFd]
    exact: bool


def syscall_table(machine: str | None = None) -> dict[int, tuple[str, str]]:
    """Syscall number -> (name, how its fds are found) for this machine (empty when unknown)."""
    column = _COLUMN.get((machine or platform.machine()).lower())
    if column is None:
        return {}
    return {nums[column]: (name, nums[2]) for name, nums in _SYSCALLS.items() if nums[column] is not None}


def record_syscall(pid: int, tid: int | None, thread: ThreadStack) -> None:
    """Fill the thread's ``syscall``, ``syscall_nr``, ``wait_fds`` and ``wait_fds_exact`` (unreadable: left unset)."""
    if tid is None:
        return
    try:
        text = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
    except OSError:
        return
    found = read_syscall(pid, text)
    if found is not None:
        thread.syscall, thread.syscall_nr, thread.wait_fds, thread.wait_fds_exact = found


def read_syscall(pid: int, fields: list[str], machine: str | None = None) -> Syscall | None:
    """Decode the fields of ``/proc/PID/task/TID/syscall`` and resolve the fds the call waits on."""
    if not fields:
        return None
    if fields[0] == "running":
        return Syscall("running", None, [], False)
    try:
        nr, args = int(fields[0]), [int(a, 16) for a in fields[1:7]]
    except ValueError:
        return None
    if nr < 0:
        return Syscall("none", nr, [], False)
    name, how = syscall_table(machine).get(nr, (f"nr {nr}", _NONE))
    fd_numbers: list[int] | None = []
    if how == _FD and args:
        fd_numbers = [_signed32(args[0])]
    elif how == _POLL and len(args) >= 2:
        fd_numbers = _poll_fds(pid, args[0], args[1])
    elif how == _SELECT and len(args) >= 3:
        fd_numbers = _select_fds(pid, args[0], args[1], args[2])
    elif how == _EPOLL and args:
        fd_numbers = _epoll_fds(pid, _signed32(args[0]))
    if fd_numbers is None:
        return Syscall(name, nr, [], False)
    fds = [_resolve(pid, fd, lock=name in LOCK_SYSCALLS) for fd in fd_numbers if fd >= 0][:MAX_FDS]
    return Syscall(name, nr, fds, how != _NONE and len(fd_numbers) <= MAX_FDS)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _read_mem(pid: int, address: int, size: int) -> bytes | None:
    """``size`` bytes of the target's memory, or None (not allowed, unmapped, or the process is gone)."""
    if address == 0 or size <= 0:
        return None
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            data = mem.read(size)
    except (OSError, OverflowError, ValueError):
        return None
    return data if len(data) == size else None


def _poll_fds(pid: int, address: int, nfds: int) -> list[int] | None:
    """The fds of a ``struct pollfd`` array (``int fd; short events, revents``)."""
    if nfds > MAX_FDS:
        return None
    data = _read_mem(pid, address, 8 * nfds)
    if data is None:
        return None
    return [fd for (fd, _, _) in struct.iter_unpack("ihh", data)]


def _select_fds(pid: int, nfds: int, readfds: int, writefds: int) -> list[int] | None:
    """The fds set in a select's read and write ``fd_set`` bitmaps."""
    if not 0 <= nfds <= 1024:
        return None
    size = 8 * ((nfds + 63) // 64)
    found: list[int] = []
    for address in (readfds, writefds):
        if address == 0:
            continue
        data = _read_mem(pid, address, size)
        if data is None:
            return None
        bits = int.from_bytes(data, "little")
        found += [fd for fd in range(nfds) if bits >> fd & 1 and fd not in found]
    return found if len(found) <= MAX_FDS else None


def _epoll_fds(pid: int, epfd: int) -> list[int] | None:
    """The fds registered with an epoll instance (``tfd:`` lines of its fdinfo)."""
    try:
        lines = Path(f"/proc/{pid}/fdinfo/{epfd}").read_text().splitlines()
    except OSError:
        return None
    fds = [int(line.split()[1]) for line in lines if line.startswith("tfd:") and line.split()[1].isdigit()]
    return fds if len(fds) <= MAX_FDS else None


def _resolve(pid: int, fd: int, lock: bool) -> WaitFd:
    """What ``fd`` points to; for a file waited on with flock/fcntl, its ``/proc/locks`` lines."""
    wait = WaitFd(fd)
    path = f"/proc/{pid}/fd/{fd}"
    try:
        wait.target = redact_text(os.readlink(path))
    except OSError:
        return wait
    if wait.target.startswith("socket:["):
        wait.inode = int(wait.target[8:-1]) if wait.target[8:-1].isdigit() else None
        return wait
    if wait.target.startswith("/"):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            wait.inode, wait.dev = st.st_ino, f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    if lock and wait.inode is not None:
        wait.locks = locks_of(wait.inode, wait.dev)
    return wait


def record_lock_files(pid: int, thread: ThreadStack) -> None:
    """While the thread runs ``filelock`` code: the bench's lock files that someone holds now, with the holders."""
    if not any(code in f.filename for f in thread.frames for code in _FILELOCK_CODE):
        return
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return
    table = _read_locks()
    held = {inode for _, inode, lock in table if not lock.blocked}
    if not held:
        return
    root = Path(f"/proc/{pid}/root")
    seen: set[str] = set()
    for pattern in _LOCK_GLOBS:
        with contextlib.suppress(OSError, ValueError):
            for path in sorted((root / cwd.relative_to("/")).glob(pattern))[:MAX_LOCK_FILES]:
                plain = os.path.normpath("/" + str(path.relative_to(root)))
                if plain in seen or len(seen) >= MAX_LOCK_FILES:
                    continue
                seen.add(plain)
                with contextlib.suppress(OSError):
                    st = path.stat()
                    if st.st_ino in held:
                        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
                        thread.lock_files.append(LockFile(redact_text(plain), st.st_ino, dev,
                                                          _matching(table, st.st_ino, dev)))


def locks_of(inode: int, dev: str) -> list[FileLock]:
    """The ``/proc/locks`` lines of one file (same inode, and same device when it matches any line)."""
    return _matching(_read_locks(), inode, dev)


def _read_locks(path: str = "/proc/locks") -> list[tuple[str, int, FileLock]]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = [line for _, line in zip(range(MAX_LOCK_LINES), f, strict=False)]
    except OSError:
        return []
    return [p for p in map(parse_lock_line, lines) if p is not None]


def _matching(table: list[tuple[str, int, FileLock]], inode: int, dev: str) -> list[FileLock]:
    parsed = [p for p in table if p[1] == inode]
    same_dev = [p for p in parsed if p[0] == dev]
    locks = [FileLock(**vars(lock)) for _, _, lock in (same_dev or parsed)]
    for lock in locks:
        _describe_owner(lock)
    return locks


def parse_lock_line(line: str) -> tuple[str, int, FileLock] | None:
    """``1: [->] FLOCK ADVISORY WRITE 1234 08:01:5678 0 EOF`` -> (dev, inode, lock); None for other lines."""
    parts = line.split()
    blocked = len(parts) > 1 and parts[1] == "->"
    if blocked:
        parts = [parts[0], *parts[2:]]
    if len(parts) < 6 or parts[1] not in ("FLOCK", "POSIX", "OFDLCK"):
        return None
    dev_inode = parts[5].rsplit(":", 1)
    if len(dev_inode) != 2 or not dev_inode[1].isdigit() or not parts[4].lstrip("-").isdigit():
        return None
    return dev_inode[0], int(dev_inode[1]), FileLock(int(parts[4]), parts[1], parts[3], blocked)


def _describe_owner(lock: FileLock) -> None:
    if lock.pid <= 0:
        return
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(lock.pid)
        lock.cmdline = redact_argv(proc.cmdline())
        lock.create_time = proc.create_time()
