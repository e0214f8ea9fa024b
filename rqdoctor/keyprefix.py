"""Which key prefix RQ uses (``RQ_KEY_PREFIX``, rq 3.0): ``--key-prefix``, our environment, the workers' environment.

The process title does not show the prefix (it stays ``rq:worker:<name>``), so the workers'
``/proc/<pid>/environ`` is read (root or the workers' user). What the workers say is only a
candidate: the Redis probe keeps the candidate whose ``<prefix>:workers`` has members on the target Redis
(other hosts' or other Redis servers' workers may run here too). A worker that set its title has blanked
its environ: then the Redis probe looks for a ``<prefix>:workers`` set that lists its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from rqdoctor.errors import ConfigError
from rqdoctor.rqkeys import DEFAULT_PREFIX, PREFIX_ENV, valid_prefix

MAX_PIDS_SHOWN = 5
TITLE = "rq:worker:"
"""The process title rq sets with setproctitle, whatever the key prefix."""


def checked_prefix(prefix: str, source: str) -> str:
    if not valid_prefix(prefix):
        raise ConfigError(f"invalid key prefix {prefix!r} (from {source}): rq accepts only letters, digits "
                          "and _ . : - { }",
                          "pass the value of the workers' RQ_KEY_PREFIX with --key-prefix")
    return prefix


@dataclass
class PrefixChoice:
    """The key prefix, how it was chosen, and what the Redis probe may still settle it with."""

    prefix: str
    source: str
    candidates: list[str] = field(default_factory=list)
    """Prefixes to choose from by which has workers on the target Redis; empty when the choice is final."""
    titled: list[str] = field(default_factory=list)
    """Worker names from the titles (``rq:worker:<name>: …``) of workers whose environment told nothing."""


def find_prefix(flag: str | None, env: Mapping[str, str], scan_processes: bool) -> PrefixChoice:
    """``--key-prefix``, else env ``RQ_KEY_PREFIX``, else what the running workers' environment says, else ``rq``."""
    if flag:
        return PrefixChoice(checked_prefix(flag, "--key-prefix"), "--key-prefix")
    if env.get(PREFIX_ENV):
        return PrefixChoice(checked_prefix(env[PREFIX_ENV], f"env {PREFIX_ENV}"), f"env {PREFIX_ENV}")
    if not scan_processes:
        return PrefixChoice(DEFAULT_PREFIX, "default (no --key-prefix, no running workers asked)", [DEFAULT_PREFIX])
    seen, unreadable, titled = workers_prefixes()
    found = sorted(seen, key=lambda p: (p == DEFAULT_PREFIX, p))  # a set prefix first
    if found:
        prefix = found[0]
        source = f"{PREFIX_ENV} of running workers (pid {_pids(seen[prefix])})" if prefix != DEFAULT_PREFIX else (
            f"default: running workers (pid {_pids(seen[prefix])}) set no {PREFIX_ENV}")
        return PrefixChoice(prefix, source, found + ([DEFAULT_PREFIX] if DEFAULT_PREFIX not in found else []),
                            titled)
    if unreadable:
        return PrefixChoice(DEFAULT_PREFIX, f"default: the environment of workers pid {_pids(unreadable)} is not "
                            "readable (run as root or their user, or pass --key-prefix)", [DEFAULT_PREFIX], titled)
    if titled:
        return PrefixChoice(DEFAULT_PREFIX, "default: the running workers' process titles overwrote their "
                            "environment", [DEFAULT_PREFIX], titled)
    return PrefixChoice(DEFAULT_PREFIX, "default: no running workers to ask", [DEFAULT_PREFIX])


def workers_prefixes() -> tuple[dict[str, list[int]], list[int], list[str]]:
    """Prefix -> pids of the worker-like processes using it, the pids whose environment could not be read, and the
    worker names in the titles of those whose environment says nothing.

    An empty environment is no evidence: ``setproctitle`` (rq >= 2 with it installed) reuses the memory
    ``/proc/<pid>/environ`` shows for the title and blanks it.
    """
    from rqdoctor.probes.processes import is_worker_argv  # its imports are not needed for an explicit prefix

    seen: dict[str, list[int]] = {}
    unreadable: list[int] = []
    titled: list[str] = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        if not is_worker_argv(argv):
            continue
        try:
            environ = proc.environ()
        except psutil.AccessDenied:
            unreadable.append(proc.pid)
            continue
        except (psutil.Error, OSError):
            continue
        title = " ".join(argv)
        if not environ:
            if title.startswith(TITLE):
                titled.append(title[len(TITLE):].split(": ", 1)[0])
            continue
        value = environ.get(PREFIX_ENV) or DEFAULT_PREFIX
        if valid_prefix(value):
            seen.setdefault(value, []).append(proc.pid)
    return seen, unreadable, sorted(set(titled))


def _pids(pids: list[int]) -> str:
    shown = ", ".join(map(str, sorted(pids)[:MAX_PIDS_SHOWN]))
    return shown + (f" and {len(pids) - MAX_PIDS_SHOWN} more" if len(pids) > MAX_PIDS_SHOWN else "")
