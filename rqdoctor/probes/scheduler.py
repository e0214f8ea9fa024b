"""The Frappe scheduler of a bench: its config keys, its lock file and its ``frappe schedule`` process.

Read-only. ``config/scheduler_process`` is probed the way Frappe v16's ``is_schduler_process_running`` does: one
non-blocking ``flock`` attempt on a read-only descriptor (the lock ``filelock.FileLock`` takes on Linux), released
at once, never held and never waited for. ``/proc/locks`` is read first: when it already names a holder, no
attempt is made at all. A missing file is never created.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import psutil

from rqdoctor.config import COMMON_CONFIG
from rqdoctor.model import ConfigFlag, ProbeError, ProcessInfo, SchedulerLock, SiteScheduler
from rqdoctor.probes.processes import _subcommand, redact_argv
from rqdoctor.probes.procfs import locks_of

PROBE = "scheduler"
FLAGS = ("maintenance_mode", "pause_scheduler", "disable_scheduler")
"""The config keys that make Frappe's ``is_scheduler_inactive()`` true for a site."""


def probe_lock(bench: Path) -> SchedulerLock:
    """The state of ``<bench>/config/scheduler_process`` (see the module docstring)."""
    path = bench / "config" / "scheduler_process"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return SchedulerLock(str(path), "missing", "no such file: no Frappe v15+ scheduler ever ran here")
    except OSError as exc:
        return SchedulerLock(str(path), "unreadable", f"cannot stat ({exc.strerror or exc})")
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    holders = [lock for lock in locks_of(st.st_ino, dev) if not lock.blocked]
    if holders:
        return SchedulerLock(str(path), "held", "/proc/locks names its holder", holders)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return SchedulerLock(str(path), "unreadable", f"cannot open ({exc.strerror or exc})")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return SchedulerLock(str(path), "held", "a non-blocking flock attempt failed: another process holds "
                                     "it", locks_of(st.st_ino, dev))
            return SchedulerLock(str(path), "unreadable", f"flock failed ({exc.strerror or exc})")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return SchedulerLock(str(path), "free", "a non-blocking flock attempt succeeded (released at once): no "
                             "process holds it")
    finally:
        os.close(fd)


def is_schedule_argv(argv: list[str]) -> bool:
    """``… frappe.utils.bench_helper frappe schedule`` (what ``bench schedule`` execs into) or ``bench schedule``."""
    for i, arg in enumerate(argv):
        if arg == "frappe.utils.bench_helper":
            rest = argv[i + 1:]
            return bool(rest) and rest[0] == "frappe" and _subcommand(rest[1:]) == "schedule"
        if os.path.basename(arg) == "bench" and i <= 1:
            return _subcommand(argv[i + 1:]) == "schedule"
    return False


def schedule_processes(bench: Path, errors: list[ProbeError]) -> list[ProcessInfo]:
    """The ``frappe schedule`` processes whose cwd is this bench (``<bench>/sites`` or the bench itself).

    One whose cwd cannot be read is kept with ``cwd`` None: it may be this bench's.
    """
    roots = {os.path.realpath(bench), os.path.realpath(bench / "sites")}
    out = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time", "status", "username"]):
        argv = proc.info.get("cmdline") or []
        if not is_schedule_argv(argv):
            continue
        try:
            cwd: str | None = os.path.realpath(proc.cwd())
        except psutil.AccessDenied:
            cwd = None
        except psutil.Error:
            continue  # gone meanwhile
        if cwd is not None and cwd not in roots:
            continue  # another bench's scheduler
        info = proc.info
        out.append(ProcessInfo(pid=info["pid"], ppid=info.get("ppid"), create_time=info.get("create_time"),
                               cmdline=redact_argv(argv), cwd=cwd, status=info.get("status"),
                               username=info.get("username")))
    if any(p.cwd is None for p in out):
        errors.append(ProbeError(PROBE, "permission", "the working directory of a `frappe schedule` process could "
                                 "not be read: it may belong to another bench",
                                 "run rqdoctor as root or the bench user"))
    return out


def site_flags(bench: Path, site: str, errors: list[ProbeError]) -> SiteScheduler:
    """The scheduler keys of a site as Frappe merges them (the site's file wins over the common one)."""
    state = SiteScheduler(site)
    found: dict[str, ConfigFlag] = {}
    for path in (bench / COMMON_CONFIG, bench / "sites" / site / "site_config.json"):
        data = _read(path, errors)
        for key in FLAGS:
            if key in data:
                found[key] = ConfigFlag(key, json.dumps(data[key]), str(path), bool(data[key]))
    state.flags = [found[k] for k in FLAGS if k in found]
    return state


def _read(path: Path, errors: list[ProbeError]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        errors.append(ProbeError(PROBE, "corrupt", f"{path}: cannot read its scheduler keys ({exc})", "", str(path)))
        return {}
    return data if isinstance(data, dict) else {}


def common_numbers(bench: Path) -> dict[str, int]:
    """``scheduler_tick_interval``, ``scheduler_interval`` and ``background_workers`` when set as integers."""
    try:
        data = json.loads((bench / COMMON_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    out = {}
    for key in ("scheduler_tick_interval", "scheduler_interval", "background_workers"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = value
    return out
