"""Building blocks of fixes: exact process references and copy-paste-safe commands (pure).

Every command a finding suggests is built here from snapshot values, never from prose, so that it
names the real process, Redis and database. Commands are printed, never run.
"""

from __future__ import annotations

import os
import shlex
import time
from urllib.parse import parse_qs, urlsplit

from rqdoctor.model import ProcessInfo, TargetInfo
from rqdoctor.rqkeys import DEFAULT_PREFIX, Keys


def started(create_time: float | None) -> str:
    """A process start time as ``2026-12-01 19:02:11 UTC`` (``start time unknown`` when not read)."""
    if create_time is None:
        return "start time unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(create_time))


def process_ref(p: ProcessInfo, here: str | None = None, limit: int = 120) -> str:
    """The exact process advice was checked against: pid (``on HOST`` when not on ``here``: see :func:`on_host`),
    start time and what it runs."""
    command = " ".join(p.cmdline) or "?"
    if len(command) > limit:
        command = command[: limit - 1] + "…"
    ident = p.identity
    where = ident.label().removeprefix(f"pid {p.pid}") if ident is not None and ident.foreign_ns else ""
    return f"pid {p.pid}{where}{on_host(p, here)} (started {started(p.create_time)}, runs: {command})"


def on_host(p: ProcessInfo, here: str | None) -> str:
    """`` on HOST`` for a process of another host than ``here``, the host named without it (``Snapshot.own_host``:
    empty in a snapshot merged from several hosts, where every process is named with its host); None: never."""
    host = p.identity.host if p.identity is not None else None
    return f" on {host}" if here is not None and host and host != here else ""


def on_host_command(p: ProcessInfo, here: str | None, command: str) -> str:
    """``command`` to run where ``p`` runs: through ``ssh HOST`` when that is not ``here``."""
    host = on_host(p, here).removeprefix(" on ")
    return f"ssh {shlex.quote(host)} {shlex.quote(command)}" if host else command


def rq_key(target: TargetInfo, *parts: str) -> str:
    """An RQ key name under the diagnosed Redis's key prefix (``rq_key(t, "job:", id)`` is ``rq:job:<id>``)."""
    return Keys(target.key_prefix).s(*parts)


def redis_cli(target: TargetInfo, *args: str) -> str:
    """``redis-cli`` against the diagnosed Redis: host, port, db and ``--askpass`` when it has a password."""
    parts = urlsplit(target.redis_url)
    query = parse_qs(parts.query)
    cli = ["redis-cli"]
    if parts.scheme == "unix":
        cli += ["-s", parts.path]
        db = (query.get("db") or ["0"])[0]
    else:
        cli += ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        db = (parts.path.lstrip("/") or (query.get("db") or ["0"])[0]) or "0"
        if parts.scheme == "rediss":
            cli.append("--tls")
    if db != "0":
        cli += ["-n", db]
    if parts.username and parts.username not in ("", "default"):
        cli += ["--user", parts.username]
    if parts.password:
        cli.append("--askpass")
    return " ".join(shlex.quote(a) for a in [*cli, *args])


def rqdoctor_cli(target: TargetInfo, *args: str) -> str:
    """``rqdoctor`` pointed at the same target: ``--bench`` when one was diagnosed, else ``--redis-url``."""
    where = ["--bench", target.bench_path] if target.bench_path else ["--redis-url", target.redis_url]
    if target.key_prefix != DEFAULT_PREFIX and "--key-prefix" not in args:
        where += ["--key-prefix", target.key_prefix]
    return " ".join(shlex.quote(a) for a in ["rqdoctor", *args, *where])


def bench_cli(target: TargetInfo, *args: str) -> str:
    """``bench`` run in the diagnosed bench (``cd`` there first when its path is known)."""
    command = " ".join(shlex.quote(a) for a in ["bench", *args])
    return f"cd {shlex.quote(target.bench_path)} && {command}" if target.bench_path else command


def supervisor_restart_workers(target: TargetInfo) -> str:
    """Restart only the bench's worker programs: bench's supervisor config groups them as ``<bench>-workers``."""
    if not target.bench_path:
        return "sudo supervisorctl restart all"
    return f"sudo supervisorctl restart {shlex.quote(os.path.basename(target.bench_path.rstrip('/')) + '-workers:')}"
