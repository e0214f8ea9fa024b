"""Signal escalation with bounded waits: SIGTERM, wait, SIGKILL, wait; a re-verification before each signal.

A work-horse is signalled through its process group (``os.killpg``), so the children it started
(a shell, wkhtmltopdf) go with it, and only after the check has seen that its group id is its own
pid; a process running its job itself (SimpleWorker, Frappe NoFork) is signalled alone. Waits poll
``/proc`` every 50 ms and end as soon as the process is gone.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from rqdoctor.actions.identity import Verdict, wait_gone

STOP_COMMAND_WAIT_S = 3.0
"""How long RQ's stop command (handled by the worker's pubsub thread) gets to end the horse."""
KILL_WAIT_S = 5.0
"""How long a SIGKILLed process gets to disappear (a process in uninterruptible I/O may take longer)."""


@dataclass
class Sent:
    """One signal sent or refused: what, to whom, and what became of the process."""

    signal: str
    target: str
    result: str
    """``sent`` (process gone after it), ``survived`` (still there after the wait), ``refused`` or ``failed``."""
    detail: str = ""


def escalate(pid: int, create_time: float, group: bool, grace_s: float, verify: Callable[[], Verdict],
             record: Callable[[Sent], None]) -> str:
    """SIGTERM, wait ``grace_s``, SIGKILL, wait :data:`KILL_WAIT_S`; ``verify()`` runs before each signal.

    Returns ``gone`` (the process ended), ``refused`` (a check failed: nothing more sent) or ``failed``
    (a signal could not be sent, or the process outlived SIGKILL). ``record`` gets every signal.
    """
    target = f"process group {pid}" if group else f"pid {pid}"
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        verdict = verify()
        if verdict.gone:
            return "gone"
        if not verdict.ok:
            record(Sent(sig.name, target, "refused", verdict.reason))
            return "refused"
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except ProcessLookupError:
            return "gone"
        except PermissionError as exc:
            record(Sent(sig.name, target, "failed", f"not permitted ({exc.strerror}): run rqdoctor as its owner"))
            return "failed"
        if wait_gone(pid, create_time, wait):
            record(Sent(sig.name, target, "sent", f"the process ended within {wait:g} s"))
            return "gone"
        record(Sent(sig.name, target, "survived", f"still running after {wait:g} s"))
    return "failed"
