"""Is a thread making progress? A verdict from positive evidence over the sampling window (pure: no I/O).

Signals: process CPU time, ``/proc/PID/io`` syscalls and bytes (file and pipe I/O; socket
``send``/``recv`` are not counted there), the main thread's voluntary context switches (each wait
that really waits adds one: a thread in one call for the whole window adds none), the stack lines,
and the source of the loop around a sleep. Each verdict comes with the evidence lines it rests on.

- ``spinning``: on CPU in the same function in every sample, and it never waited.
- ``blocked``: in one call for the whole window (identical stack, ~0 CPU, no file I/O, and the main
  thread never woke up, or no counters to say otherwise; a sleep needs proof that it is one call),
  inside a lock acquire in every sample, or in a loop whose source only re-checks and sleeps.
- ``sleeping``: a sleep with no proof of being one call or a poll (a loop with sleeps: not a hang).
- ``progressing``: its stack, CPU or I/O shows work.
- ``unknown``: one sample, or nothing conclusive.

One sample is a window too when the kernel says the thread has not run for at least
:data:`QUIET_MIN_S` (``ThreadStack.last_ran_s``, from the scheduler, see
:mod:`rqdoctor.probes.counters`): a thread that does not run cannot change its stack, so it has
been in that call all that time, with no CPU and no wake-up. That is ``blocked`` (a sleep: one
sleep call, or a poll loop by its source); ``spinning`` and ``progressing`` need a thread that runs,
and such a thread is sampled over the window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rqdoctor.diagnose.loops import read_loop
from rqdoctor.model import Frame, StackSample, ThreadStack

PROGRESS_BLOCKED = "blocked"
PROGRESS_SPINNING = "spinning"
PROGRESS_PROGRESSING = "progressing"
PROGRESS_SLEEPING = "sleeping"
PROGRESS_UNKNOWN = "unknown"

BLOCKED_MAX_CPU_PERCENT = 5.0
"""Below this process CPU over the window, an unchanged stack is blocked."""
SPINNING_MIN_CPU_PERCENT = 50.0
"""From this process CPU over the window, unchanged code is spinning (also below it, down to
:data:`BLOCKED_MAX_CPU_PERCENT`, when every sample caught the thread running)."""
WAKEUP_SLACK = 1
"""Voluntary context switches a thread in one call may still show over the window (e.g. a signal)."""
QUIET_MIN_S = 1.0
"""A thread the kernel has not run for this long is in one call for that long (the default window)."""
BLOCKING_DUMP_WAKEUPS = 3
"""Extra switches per sample when py-spy pauses the target (``--blocking``)."""

_SLEEP_LITERAL = re.compile(r"\bsleep\s*\(\s*(\d+(?:\.\d*)?|\.\d+)\s*\)")
_CONDITION = re.compile(r"^(?:while|if|elif)\b")


@dataclass
class Verdict:
    """A progress verdict and the evidence lines it rests on."""

    progress: str
    evidence: list[str] = field(default_factory=list)
    polling: bool = False
    """A loop that only re-checks a condition and sleeps."""
    sleep_s: float | None = None
    """The sleep's literal duration, when the source line gives it."""


@dataclass(frozen=True)
class Counters:
    """Deltas of the progress counters over the window (None: not readable)."""

    seconds: float
    cpu_s: float | None
    wakeups: int | None
    """Voluntary context switches of the judged thread (main thread only)."""
    syscalls: int | None
    """File/pipe read+write syscalls of the process."""
    bytes: int | None

    def lines(self) -> list[str]:
        out = []
        if self.cpu_s is not None:
            out.append(f"CPU {self.cpu_percent:.1f} % of a core ({self.cpu_s:.2f} s in {self.seconds:.1f} s)")
        if self.wakeups is not None:
            out.append(f"{self.wakeups} voluntary context switches of the thread (each real wait adds one)")
        if self.syscalls is not None:
            out.append(f"file/pipe I/O: {self.syscalls} read/write syscalls, {self.bytes} bytes")
        if self.wakeups is None and self.syscalls is None:
            out.append("no context-switch or /proc/<pid>/io counters: judged from stacks and CPU only")
        return out

    @property
    def cpu_percent(self) -> float:
        return 100.0 * (self.cpu_s or 0.0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def file_io(self) -> bool:
        return bool(self.syscalls or self.bytes)


def cpu_percent(samples: Sequence[StackSample]) -> float | None:
    """Process CPU over the window, in percent of one core (None with fewer than two CPU readings)."""
    timed = [s for s in samples if s.cpu_time is not None]
    if len(timed) < 2 or timed[-1].taken_at <= timed[0].taken_at:
        return None
    used = timed[-1].cpu_time - timed[0].cpu_time  # type: ignore[operator]
    return max(0.0, 100.0 * used / (timed[-1].taken_at - timed[0].taken_at))


def counters(samples: Sequence[StackSample], leader: bool) -> Counters:
    """Counter deltas between the first and last sample that have each counter."""
    seconds = samples[-1].taken_at - samples[0].taken_at if samples else 0.0
    timed = [s.cpu_time for s in samples if s.cpu_time is not None]
    cpu = max(0.0, timed[-1] - timed[0]) if len(timed) >= 2 else None
    switches = [s.voluntary_ctx_switches for s in samples if s.voluntary_ctx_switches is not None]
    wakeups = switches[-1] - switches[0] if leader and len(switches) >= 2 else None
    io = [s.io for s in samples if s.io is not None]
    syscalls = data = None
    if len(io) >= 2:
        syscalls = io[-1].syscr + io[-1].syscw - io[0].syscr - io[0].syscw
        data = io[-1].rchar + io[-1].wchar - io[0].rchar - io[0].wchar
    return Counters(seconds, cpu, wakeups, syscalls, data)


def sleep_seconds(frame: Frame | None) -> float | None:
    """The literal of ``sleep(<number>)`` on the frame's source line."""
    literal = _SLEEP_LITERAL.search(frame.code or "") if frame else None
    return float(literal[1]) if literal else None


@dataclass(frozen=True)
class Window:
    """The judged thread across the samples, as the verdict needs it."""

    threads: list[ThreadStack]
    kinds: list[str]
    """Kind of each reading (same order)."""
    wheres: list[Frame | None]
    """Innermost application frame of each reading."""
    kind: str
    """The kind standing for the window."""
    blocking_dumps: bool = False
    inferred: bool = False
    """Every sleep reading is a guess (an idle C call in application code), not seen in the frames or source."""


def judge(window: Window, samples: Sequence[StackSample], leader: bool) -> Verdict:
    """The progress verdict of one thread, with its evidence."""
    threads = window.threads
    if len(threads) < 2:
        quiet = threads[0].last_ran_s if threads else None
        if quiet is not None and quiet >= QUIET_MIN_S:
            return _quiet(window, quiet)
        return Verdict(PROGRESS_UNKNOWN, ["one sample: no window to judge progress in"])
    c = counters(samples, leader)
    slack = WAKEUP_SLACK + (BLOCKING_DUMP_WAKEUPS * len(samples) if window.blocking_dumps else 0)
    woke = None if c.wakeups is None else c.wakeups > slack
    exact = len({tuple((f.filename, f.name, f.line) for f in t.frames) for t in threads})
    places = {(w.filename, w.name) if w else None for w in window.wheres}
    lines = {(w.filename, w.line) if w else None for w in window.wheres}
    running = [t.active or t.owns_gil or t.wchan == "0" for t in threads]
    cpu = c.cpu_percent if c.cpu_s is not None else None
    base = [f"{len(threads)} samples over {c.seconds:.1f} s",
            "identical stack in every sample" if exact == 1 else f"{exact} different stacks", *c.lines()]
    hot = (cpu is None and all(running)) or (
        cpu is not None and (cpu >= SPINNING_MIN_CPU_PERCENT or (all(running) and cpu >= BLOCKED_MAX_CPU_PERCENT))
    )  # on a busy machine a spinning thread gets less than a core
    sleeps = "sleep" in window.kinds and not window.inferred
    if not sleeps and len(places) == 1 and woke is not True and hot:
        never = ", never waiting" if woke is False else ""
        return Verdict(PROGRESS_SPINNING, [*base, f"on CPU in the same function in every sample{never}"])
    if window.kind == "sleep":
        return _sleep(window, c, woke, exact, base)
    idle = (cpu is None or cpu < BLOCKED_MAX_CPU_PERCENT) and not c.file_io
    if window.kind == "lock" and idle and len(lines) == 1:  # an acquire may poll: it wakes, but never gets past
        return Verdict(PROGRESS_BLOCKED, [*base, "inside the same lock acquire in every sample"])
    quiet = idle and not any(running)
    if exact == 1 and quiet and woke is not True:
        why = ("the thread never woke up: one call for the whole window" if woke is False
               else "the same wait in every sample, no CPU")
        return Verdict(PROGRESS_BLOCKED, [*base, why])
    if woke:
        return Verdict(PROGRESS_PROGRESSING, [*base, "the thread woke up again and again: its calls return"])
    if exact > 1 or (cpu is not None and cpu >= BLOCKED_MAX_CPU_PERCENT) or c.file_io:
        return Verdict(PROGRESS_PROGRESSING, base)
    return Verdict(PROGRESS_UNKNOWN, base)


def _quiet(window: Window, seconds: float) -> Verdict:
    """One sample of a thread the kernel has not run for ``seconds``: in that call all that time."""
    base = [f"one sample; the kernel has not run the thread for {seconds:.1f} s (/proc/<pid>/task/<tid>/sched, "
            "not runnable): the same stack all that time, no CPU, no wake-up"]
    if window.kind == "sleep" and not window.inferred:
        return _sleep(window, Counters(seconds, None, 0, None, None), False, 1, base)
    if window.kind == "lock":
        return Verdict(PROGRESS_BLOCKED, [*base, "inside a lock acquire"])
    return Verdict(PROGRESS_BLOCKED, [*base, "one call for the whole time"])


def _sleep(window: Window, c: Counters, woke: bool | None, exact: int, base: list[str]) -> Verdict:
    """A thread seen sleeping: a poll loop, one long sleep, a loop that works between sleeps, or unknown."""
    sleeper = next((w for k, w in zip(window.kinds, window.wheres, strict=True) if k == "sleep" and w), None)
    seconds = sleep_seconds(sleeper)
    sleeping = [t for k, t in zip(window.kinds, window.threads, strict=True) if k == "sleep"]
    recorded = (f.loop for t in sleeping for f in t.frames if f.loop)
    loop = read_loop(next(recorded, None))
    others = [w for k, w in zip(window.kinds, window.wheres, strict=True) if k != "sleep"]
    work = [w for w in others if w is not None and not _CONDITION.match(w.code or "")]
    cpu = c.cpu_percent if c.cpu_s is not None else None
    naps = f"sleeps {seconds:g} s" if seconds is not None else "sleeps"
    if work:
        w = work[0]
        return Verdict(PROGRESS_PROGRESSING, [*base, f"between sleeps it ran `{w.code or w.name}` "
                                                      f"({w.filename.rsplit('/', 1)[-1]}:{w.line})"], sleep_s=seconds)
    if (cpu is not None and cpu >= BLOCKED_MAX_CPU_PERCENT) or c.file_io:
        return Verdict(PROGRESS_PROGRESSING, [*base, f"{naps} but uses CPU or does file I/O between sleeps"],
                       sleep_s=seconds)
    if loop is not None and loop.poll is not None:
        return Verdict(PROGRESS_BLOCKED, [*base, f"{naps} in `{loop.header}`, which only re-checks "
                                                  f"`{loop.poll}` and sleeps"], polling=True, sleep_s=seconds)
    if loop is None and others and all(_CONDITION.match(w.code or "") for w in others if w):
        poll = others[0].code if others[0] else "?"
        return Verdict(PROGRESS_BLOCKED, [*base, f"{naps}; every other sample re-checks `{poll}`"],
                       polling=True, sleep_s=seconds)
    single = exact == 1 and (woke is False or (woke is None and seconds is not None and seconds > c.seconds))
    if single:
        what = f"one sleep of {seconds:g} s" if seconds is not None else "one sleep call"
        return Verdict(PROGRESS_BLOCKED, [*base, f"{what} for the whole window"], sleep_s=seconds)
    if loop is not None and loop.work is not None:
        why = f"{naps} in `{loop.header}`, which also runs `{loop.work}`: a loop doing work, not a wait"
    elif woke:
        why = f"{naps} again and again (the thread woke up {c.wakeups} times): a loop"
    elif seconds is not None and seconds < c.seconds:
        why = f"{naps}, shorter than the window: a loop"
    else:
        why = "could not tell one long sleep from a loop of short ones"
    return Verdict(PROGRESS_SLEEPING, [*base, why], sleep_s=seconds)
