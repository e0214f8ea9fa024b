"""Errors that end a command with one clear line (and a hint), never a traceback."""

from __future__ import annotations


class RqdoctorError(Exception):
    """A failure the user can act on; the CLI prints ``message``, one line per detail, ``hint``, and exits 2."""

    def __init__(self, message: str, hint: str = "", details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []


class ConfigError(RqdoctorError):
    """Bad flags, environment or bench files."""


class ProbeFailure(RqdoctorError):
    """A probe could not gather its facts at all (unreachable, timed out, not permitted)."""

    def __init__(self, probe: str, kind: str, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.probe = probe
        self.kind = kind
