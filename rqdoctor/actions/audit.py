"""The audit log: one JSON line per action of ``stuck --kill``, appended to a file only its owner can read.

Default: ``$XDG_STATE_HOME/rqdoctor/audit.jsonl``, else ``~/.local/state/rqdoctor/audit.jsonl``
(``--audit-log PATH`` overrides it). The file is created mode 0600 (its directory 0700) and only
ever appended to. Every string is redacted (:mod:`rqdoctor.redact`) before it is written.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rqdoctor.redact import redact_text


def default_path(env: dict[str, str] | None = None) -> Path:
    """Where the audit log goes when ``--audit-log`` is not given."""
    env = dict(os.environ) if env is None else env
    state = env.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "rqdoctor" / "audit.jsonl"


def current_user() -> str:
    """The login name running rqdoctor (the uid when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


@dataclass
class AuditLog:
    """An opened audit log (:func:`open_log`); :meth:`write` appends one line and flushes it to disk."""

    path: Path
    fd: int
    host: str
    user: str

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` with the time, user and host first; returns the line as written (redacted)."""
        line = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                "user": self.user, "host": self.host, **_redacted(record)}
        data = (json.dumps(line, sort_keys=False, default=str) + "\n").encode("utf-8")
        os.write(self.fd, data)
        os.fsync(self.fd)
        return line

    def close(self) -> None:
        os.close(self.fd)


def open_log(path: Path, host: str) -> AuditLog:
    """Open ``path`` for appending, creating it 0600 (and missing directories 0700); OSError if it cannot be."""
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return AuditLog(path, fd, host, current_user())
