"""``stuck --kill``: plan from the findings' remedies, confirm, act, verify, audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rqdoctor.commands.options import Format
from rqdoctor.diagnose.findings import Finding
from rqdoctor.model import Snapshot


@dataclass
class KillOptions:
    """What the user allowed on the command line."""

    dry_run: bool = False
    yes: bool = False
    kill_worker: bool = False
    requeue: bool = False
    prune_ghosts: bool = False
    audit_log: Path | None = None
    grace_s: float = 10.0
    fmt: Format = Format.text
    output: Path | None = None
    refresh: Callable[[list[str]], Snapshot] | None = None
    """A fresh ``stuck`` snapshot of the same target with these job ids' hashes read directly (for
    :func:`rqdoctor.diagnose.leftovers.leftovers` after a kill); None when not available."""


def run_kill(snapshot: Snapshot, findings: list[Finding], options: KillOptions) -> int:
    """Plan, confirm, act and verify; return the exit code (to be built: issue 9)."""
    raise NotImplementedError
