"""Which key prefix RQ uses (``RQ_KEY_PREFIX``, rq 3.0): ``--key-prefix``, our environment, the workers' environment.

The process title does not show the prefix (it stays ``rq:worker:<name>``), so the workers'
``/proc/<pid>/environ`` is read (root or the workers' user). What the workers say is only a
candidate: the Redis probe keeps the candidate whose ``<prefix>:workers`` exists on the target Redis
(other hosts' or other Redis servers' workers may run here too).
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil

from rqdoctor.errors import ConfigError
from rqdoctor.rqkeys import DEFAULT_PREFIX, PREFIX_ENV, valid_prefix

MAX_PIDS_SHOWN = 5


def checked_prefix(prefix: str, source: str) -> str:
    if not valid_prefix(prefix):
        raise ConfigError(f"invalid key prefix {prefix!r} (from {source}): rq accepts only letters, digits "
                          "and _ . : - { }",
                          "pass the value of the workers' RQ_KEY_PREFIX with --key-prefix")
    return prefix


def find_prefix(flag: str | None, env: Mapping[str, str], scan_processes: bool) -> tuple[str, str, list[str]]:
    """The key prefix, how it was chosen, and the candidates the Redis probe may still choose from.

    The candidates are empty when the choice is final (``--key-prefix`` or env ``RQ_KEY_PREFIX``).
    """
    if flag:
        return checked_prefix(flag, "--key-prefix"), "--key-prefix", []
    if env.get(PREFIX_ENV):
        return checked_prefix(env[PREFIX_ENV], f"env {PREFIX_ENV}"), f"env {PREFIX_ENV}", []
    if not scan_processes:
        return DEFAULT_PREFIX, "default (no --key-prefix, no running workers asked)", [DEFAULT_PREFIX]
    seen, unreadable = workers_prefixes()
    found = sorted(seen, key=lambda p: (p == DEFAULT_PREFIX, p))  # a set prefix first
    if found:
        prefix = found[0]
        source = f"{PREFIX_ENV} of running workers (pid {_pids(seen[prefix])})" if prefix != DEFAULT_PREFIX else (
            f"default: running workers (pid {_pids(seen[prefix])}) set no {PREFIX_ENV}")
        return prefix, source, found + ([DEFAULT_PREFIX] if DEFAULT_PREFIX not in found else [])
    if unreadable:
        return DEFAULT_PREFIX, (f"default: the environment of workers pid {_pids(unreadable)} is not readable (run as "
                                "root or their user, or pass --key-prefix)"), [DEFAULT_PREFIX]
    return DEFAULT_PREFIX, "default: no running workers to ask", [DEFAULT_PREFIX]


def workers_prefixes() -> tuple[dict[str, list[int]], list[int]]:
    """Prefix -> pids of the worker-like processes using it, and the pids whose environment could not be read."""
    from rqdoctor.probes.processes import is_worker_argv  # its imports are not needed for an explicit prefix

    seen: dict[str, list[int]] = {}
    unreadable: list[int] = []
    for proc in psutil.process_iter(["cmdline"]):
        if not is_worker_argv(proc.info.get("cmdline") or []):
            continue
        try:
            value = proc.environ().get(PREFIX_ENV) or DEFAULT_PREFIX
        except psutil.AccessDenied:
            unreadable.append(proc.pid)
            continue
        except (psutil.Error, OSError):
            continue
        if valid_prefix(value):
            seen.setdefault(value, []).append(proc.pid)
    return seen, unreadable


def _pids(pids: list[int]) -> str:
    shown = ", ".join(map(str, sorted(pids)[:MAX_PIDS_SHOWN]))
    return shown + (f" and {len(pids) - MAX_PIDS_SHOWN} more" if len(pids) > MAX_PIDS_SHOWN else "")
