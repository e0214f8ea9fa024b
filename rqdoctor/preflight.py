"""``rqdoctor preflight``: can rqdoctor see what it needs on this host? Each check with its fix.

Checks only read: py-spy's version, this process's credentials and capabilities, the kernel's
Yama setting, the workers' interpreters (from ``/proc``), a PING to Redis and one connection per
database. Every network step is bounded by the run's deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from rqdoctor.config import DbTarget, Target
from rqdoctor.deadline import JOIN_GRACE_S, Background, Deadline
from rqdoctor.model import PreflightCheck as Check
from rqdoctor.model import ProcessStacks
from rqdoctor.probes.processes import is_worker_argv
from rqdoctor.probes.stacks import HINT_MISSING, find_py_spy
from rqdoctor.rqkeys import Keys

OK, WARN, FAIL = "ok", "warning", "failed"
CAP_SYS_PTRACE = 19
PY_SPY_READS = ((0, 4, 2), (3, 14)), ((0, 4, 0), (3, 13)), ((0, 3, 14), (3, 11))
"""Newest CPython minor each py-spy release line reads (anchors.md: 3.12/3.13 need 0.4.0, 3.14 needs 0.4.2)."""
_PYTHON_IN_PATH = re.compile(r"python(3\.\d+)")


def run_checks(target: Target, deadline: Deadline) -> list[Check]:
    """Every check, in report order; a check that raises becomes a failed line, never an exception.

    Redis and the databases are checked in the background meanwhile, each bounded by the deadline.
    """
    redis = Background(lambda: [check_redis(target, deadline)], "rqdoctor-redis-check")
    databases = Background(lambda: check_databases(target, deadline), "rqdoctor-db-check")
    steps: list[tuple[str, Callable[[], Iterable[Check]]]] = [
        ("py-spy", lambda: [check_py_spy(deadline)]),
        ("ptrace", lambda: [check_ptrace()]),
        ("interpreters", lambda: check_interpreters(py_spy_version(deadline))),
        ("bench", lambda: [check_bench(target)]),
        ("redis", lambda: redis.result(deadline.remaining() + 2 * JOIN_GRACE_S)),
        ("databases", lambda: databases.result(deadline.remaining() + 2 * JOIN_GRACE_S)),
    ]
    out: list[Check] = []
    for name, step in steps:
        try:
            out.extend(step())
        except Exception as exc:  # one broken check must not hide the others
            out.append(Check(name, FAIL, f"check failed: {type(exc).__name__}: {exc}"))
    return out


def failed_local_checks(stacks: list[ProcessStacks], deadline: Deadline) -> list[Check]:
    """The local checks that fail for a stack-sampling run (``hangs``, ``stack``), from what its dumps learnt.

    Cheap: py-spy is looked for and the credentials read from ``/proc``; py-spy runs (``--version``) only
    when a dump could not start it, or met a Python it may not read. What the dumps disprove is left out.
    """
    out = []
    if find_py_spy() is None or any(s.error is not None and s.error.kind == "missing_tool" for s in stacks):
        out += [c for c in [check_py_spy(deadline)] if c.status == FAIL]
    denied = [s.pid for s in stacks if s.error is not None and s.error.kind == "permission"]
    ptrace = check_ptrace()
    if ptrace.status != OK and (denied or (not stacks and ptrace.status == FAIL)):
        if denied:
            ptrace.detail += f"; denied for {_pids(denied)}"
        out.append(ptrace)
    found: dict[str, list[int]] = {}
    for s in stacks:
        if s.error is not None and s.error.kind == "unsupported":
            with contextlib.suppress(OSError):
                python = interpreter_version(s.pid)
                if python is not None:
                    found.setdefault(python, []).append(s.pid)
    if found:
        out += [c for c in interpreter_checks(found, py_spy_version(deadline), "process(es)") if c.status == FAIL]
    return out


def _pids(pids: list[int]) -> str:
    return "pid " + ", ".join(map(str, pids[:5])) + (f" and {len(pids) - 5} more" if len(pids) > 5 else "")


# --- py-spy --------------------------------------------------------------------------------


def py_spy_version(deadline: Deadline) -> tuple[int, ...] | None:
    """The installed py-spy's version, or None when it is missing or does not run."""
    exe = find_py_spy()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=deadline.timeout(cap=5.0))
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(g) for g in match.groups()) if match and out.returncode == 0 else None


def check_py_spy(deadline: Deadline) -> Check:
    """py-spy is present and runs."""
    exe = find_py_spy()
    if exe is None:
        return Check("py-spy", FAIL, "py-spy not found next to rqdoctor's Python or on PATH", [HINT_MISSING])
    version = py_spy_version(deadline)
    if version is None:
        return Check("py-spy", FAIL, f"{exe} does not run (`py-spy --version` failed)",
                     ["pip install --force-reinstall py-spy"])
    readable = newest_readable(version)
    reads = f"reads CPython up to {readable[0]}.{readable[1]}" if readable else "too old to read any CPython known here"
    return Check("py-spy", OK if readable else FAIL, f"py-spy {'.'.join(map(str, version))} at {exe}: {reads}",
                 [] if readable else ["pip install -U 'py-spy>=0.4.2'"])


def newest_readable(version: tuple[int, ...]) -> tuple[int, int] | None:
    """The newest CPython minor this py-spy version reads (None: older than every known line)."""
    return next((python for release, python in PY_SPY_READS if version >= release), None)


def release_reading(python: tuple[int, ...]) -> str | None:
    """The oldest py-spy release that reads CPython ``python`` (None: no known release does)."""
    releases = [release for release, newest in PY_SPY_READS if python[:2] <= newest]
    return ".".join(map(str, min(releases))) if releases else None


def check_interpreters(version: tuple[int, ...] | None) -> list[Check]:
    """The Python versions of the local worker processes, and whether this py-spy reads them."""
    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if not is_worker_argv(proc.info["cmdline"] or []):
                continue
            python = interpreter_version(proc.pid)
        except (psutil.Error, OSError):
            continue
        found.setdefault(python or "unknown", []).append(proc.pid)
    if not found:
        return [Check("interpreters", WARN, "no RQ worker processes on this host to read")]
    return interpreter_checks(found, version, "worker process(es)")


def interpreter_checks(found: dict[str, list[int]], version: tuple[int, ...] | None, noun: str) -> list[Check]:
    """One check per Python version (``found``: version -> pids): does py-spy ``version`` read it?"""
    readable = newest_readable(version) if version else None
    checks = []
    for python, pids in sorted(found.items()):
        what = f"{len(pids)} {noun} run Python {python} ({_pids(pids)})"
        if python == "unknown" or readable is None:
            checks.append(Check("interpreters", WARN, what + "; cannot tell whether py-spy reads it"))
        elif tuple(int(p) for p in python.split(".")) > readable:
            need = release_reading(tuple(int(p) for p in python.split(".")))
            fix = f"pip install -U 'py-spy>={need}'" if need else "pip install -U py-spy (no known release reads it)"
            checks.append(Check("interpreters", FAIL, f"{what}; py-spy {'.'.join(map(str, version or ()))} reads "
                                f"up to {readable[0]}.{readable[1]}", [fix]))
        else:
            checks.append(Check("interpreters", OK, what + "; readable"))
    return checks


def interpreter_version(pid: int) -> str | None:
    """``3.11`` from the process's executable or its mapped libpython, None when neither says."""
    exe = os.readlink(f"/proc/{pid}/exe")
    match = _PYTHON_IN_PATH.search(os.path.basename(exe))
    if match:
        return match[1]
    maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
    match = re.search(r"libpython(3\.\d+)", maps)
    return match[1] if match else None


# --- permissions -----------------------------------------------------------------------------


def effective_capabilities() -> int:
    """This process's effective capability mask (``CapEff`` in ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def ptrace_scope() -> int | None:
    """Yama's ``kernel.yama.ptrace_scope`` (None: no Yama)."""
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return None


def check_ptrace() -> Check:
    """May this process read other processes' memory (what py-spy needs)?"""
    has_cap = bool(effective_capabilities() >> CAP_SYS_PTRACE & 1)
    scope = ptrace_scope()
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    facts = f"{who}, CAP_SYS_PTRACE {'in' if has_cap else 'not in'} the effective set, " + (
        f"Yama ptrace_scope {scope}" if scope is not None else "no Yama")
    if scope == 3:
        return Check("ptrace", FAIL, facts + ": no process may attach (until reboot)",
                     ["stacks need ptrace; rqdoctor still shows workers, jobs and database locks"])
    if has_cap:
        return Check("ptrace", OK, facts + ": py-spy can read every process")
    if scope in (None, 0):
        return Check("ptrace", WARN, facts + ": py-spy can read only processes of the same user",
                     ["run rqdoctor as root (sudo) or as the workers' user"])
    return Check("ptrace", FAIL, facts + ": py-spy can read only this process's own children",
                 ["sudo rqdoctor …", "or: sudo sysctl kernel.yama.ptrace_scope=0",
                  "containers: --cap-add SYS_PTRACE"])


# --- target ----------------------------------------------------------------------------------


def check_bench(target: Target) -> Check:
    """Which bench is diagnosed, and why."""
    if target.bench is None:
        return Check("bench", WARN, "no bench found: plain RQ mode (every queue of the Redis is diagnosed)",
                     ["cd into the bench, or pass --bench PATH"])
    sites = ", ".join(s.name for s in target.sites) or "no sites"
    return Check("bench", OK, f"{target.bench} (from {target.bench_source}); sites: {sites}")


def check_redis(target: Target, deadline: Deadline) -> Check:
    """RQ's Redis answers (by the deadline, whatever the server does)."""
    from rqdoctor.redact import redact_url

    url = f"{redact_url(target.redis_url)} (from {target.redis_url_source})"
    return _await(Background(lambda: _redis_check(target, deadline, url), "rqdoctor-redis"), deadline, "redis", url)


def _await(work: Background[Check], deadline: Deadline, name: str, what: str) -> Check:
    """The line of a check running in a daemon thread; a failed line when it has not finished by the deadline."""
    try:
        return work.result(deadline.remaining() + JOIN_GRACE_S)
    except TimeoutError:
        return Check(name, FAIL, f"{what}: no complete reply within the {deadline.seconds:g} s deadline",
                     ["is the server overloaded or hung? Raise --timeout to wait longer"])


def _redis_check(target: Target, deadline: Deadline, url: str) -> Check:
    from rqdoctor.errors import RqdoctorError
    from rqdoctor.probes.redis_rq import connect

    try:
        client = connect(target.redis_url, deadline.timeout(cap=5.0))
    except RqdoctorError as exc:
        return Check("redis", FAIL, f"{url}: {exc.message}", [exc.hint] if exc.hint else [])
    try:
        version = client.info("server").get("redis_version", "?")
        workers = client.scard(Keys(target.key_prefix).workers)
    finally:
        client.close()
    return Check("redis", OK, f"{url}: Redis {version}, {workers} RQ worker(s)")


def check_databases(target: Target, deadline: Deadline) -> list[Check]:
    """Each database server answers, with the account used and whether it sees lock waits."""
    from rqdoctor.probes.database import server_groups

    if not target.db_targets:
        return [Check("databases", WARN, "no database configured (no bench sites, no --db-url)")]
    groups = server_groups(target.db_targets)
    checks = [Background(lambda g=g: _check_server(g, deadline), "rqdoctor-db") for g in groups]  # all at once
    return [_await(check, deadline, "databases", group[-1].redacted())
            for check, group in zip(checks, groups, strict=True)]


def _check_server(candidates: list[DbTarget], deadline: Deadline) -> Check:
    from rqdoctor.probes.database import describe_error

    last = None
    for db in candidates:
        try:
            privileged = _sees_lock_waits(db, deadline)
        except Exception as exc:
            last = describe_error(db, exc)
            continue
        if privileged:
            return Check("databases", OK, f"{db.redacted()} ({db.source}): sees every session and lock wait")
        return Check("databases", WARN, f"{db.redacted()} ({db.source}): connected, but this account cannot read "
                     "lock waits (no PROCESS privilege / not pg_read_all_stats)",
                     ["pass an admin account with --db-url, or run as root on the database host"])
    assert last is not None
    return Check("databases", FAIL, last.message, [last.hint] if last.hint else [])


def _sees_lock_waits(db: DbTarget, deadline: Deadline) -> bool:
    if db.kind == "postgres":
        from rqdoctor.probes import db_postgres

        with db_postgres.connect(db, deadline) as conn:
            row = conn.execute("SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') "
                               "FROM pg_roles WHERE rolname = current_user").fetchone()
            return bool(row and row[0])
    from rqdoctor.probes import db_mariadb

    conn = db_mariadb.connect(db, deadline)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GRANTS")
            grants = " ".join(str(row[0]) for row in cur.fetchall()).upper()
    finally:
        conn.close()
    return "ALL PRIVILEGES ON *.*" in grants or bool(re.search(r"GRANT [^O]*\bPROCESS\b[^O]*ON \*\.\*", grants))
