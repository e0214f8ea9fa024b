"""One ``py-spy record`` per target for the whole window, with ``/proc`` read at each sample time.

``py-spy dump`` is one process per sample, and each one starts by finding the interpreter and
reading its symbols, which costs more than the sample. ``record`` does that once per target and
then samples at ``rate`` Hz until it gets SIGINT, when it writes what it saw. Of its formats,
``chrometrace`` keeps what the verdicts need: every change of every thread's stack with its time
(µs since py-spy started) and the thread's Python id, plus (``--threads``) the OS thread id and the
thread name, and (``--idle``) the threads that wait. ``speedscope`` keeps each thread's sequence of
samples but not when they were taken, and py-spy spaces samples at random (exponential intervals,
against aliasing), so an index does not give a time; ``raw`` and ``flamegraph`` keep counts only.

While py-spy samples, one loop in the caller's thread reads ``/proc`` for every target at its own
schedule (see :mod:`.counters`): the first reading when py-spy reports it is sampling, then one
every ``interval``. Each reading becomes a :class:`~rqdoctor.model.StackSample` with the stacks of
py-spy's latest sample at that moment (for the first, py-spy's first sample, taken just after).
Record output has no ``active`` or ``owns_gil`` flag: ``active`` is set the way py-spy sets it
(scheduler state ``R`` when the thread's OS id is known, then py-spy's idle-frame heuristic),
``owns_gil`` stays False (unknown). py-spy samples at least 4 times per interval, faster with few
targets (see :func:`sample_rate`).

Sampling adapts: a target whose counters already show file or pipe I/O at low CPU (so that every
verdict on it is "progressing", whatever later samples show) is stopped after
:data:`SETTLED_MIN_SAMPLES`; every other target gets the whole window (a blocked, sleeping, polling
or CPU-bound thread needs it: "the same code in every sample" rests on all of them).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import re
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from rqdoctor import progress
from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.progress import BLOCKED_MAX_CPU_PERCENT
from rqdoctor.model import Frame, StackSample, ThreadStack
from rqdoctor.probes.counters import Reading, read_process

READY_LINE = b"Sampling process"
"""What py-spy prints once it has found the interpreter and starts sampling."""
SAMPLES_PER_INTERVAL = 4
"""py-spy samples at least this many times per ``interval`` on average (so each reading has a fresh sample)."""
RATE_BUDGET = 800
"""py-spy samples per second over all targets (~0.3 ms CPU each) up to which few targets get a faster rate:
py-spy stops at its first sample after SIGINT, so a faster rate ends the window sooner."""
MIN_RATE, MAX_RATE = 10, 50
MAX_RECORDERS = 64
"""At most this many py-spy processes at once (each ~1 MiB PSS and ~15 ms CPU to start); more wait their turn."""
SETTLED_MIN_SAMPLES = 3
STOP_RESERVE_S = 0.5
"""Seconds before the deadline at which sampling stops, for py-spy to write its output."""
KILL_RESERVE_S = 0.1
"""Seconds before the deadline at which a py-spy that has not finished is killed."""
USAGE_EXIT = 2
"""py-spy's exit code when it rejects its arguments (``--format chrometrace`` needs py-spy 0.4)."""
_THREAD_FRAME = re.compile(r"^thread \((0[xX][0-9a-fA-F]+|\d+)\)(?:: (.*))?$", re.DOTALL)
_IDLE_POLLERS = ("asyncore.py", "zmq", "gevent", "tornado")


def py_spy_env() -> dict[str, str]:
    """The environment py-spy runs with: this one, without Rust backtraces in its error messages."""
    return {**os.environ, "RUST_BACKTRACE": "0"}


def record_command(exe: str, pid: int, rate: int, duration: int) -> list[str]:
    """argv of one recorder; ``duration`` only bounds py-spy should rqdoctor die before stopping it."""
    return [exe, "record", "--pid", str(pid), "--nonblocking", "--idle", "--threads", "--rate", str(rate),
            "--duration", str(duration), "--format", "chrometrace", "--output", "/dev/stdout"]


def sample_rate(interval: float, targets: int = 1) -> int:
    """py-spy's sampling rate (Hz, an integer) for readings ``interval`` seconds apart of ``targets`` processes."""
    wanted = max(MIN_RATE, math.ceil(SAMPLES_PER_INTERVAL / interval), RATE_BUDGET // max(1, targets))
    return min(MAX_RATE, wanted)


# --- chrometrace (pure) -------------------------------------------------------------------

RawFrame = tuple[str, str, int]
"""(function, filename, line) of one frame."""


@dataclass
class Timeline:
    """One thread's stack over a recording: each change, in time order."""

    thread_id: int
    name: str | None = None
    os_thread_id: int | None = None
    times: list[int] = field(default_factory=list)
    """µs since py-spy started, one per change."""
    stacks: list[tuple[RawFrame, ...]] = field(default_factory=list)
    """The stack from each change on, innermost frame first; ``()``: the recording ended."""

    def at(self, ts: float, lead: float) -> tuple[RawFrame, ...] | None:
        """The stack py-spy last saw at ``ts``; before its first sample, that sample if it came within ``lead``."""
        i = bisect.bisect_right(self.times, ts) - 1
        if i < 0:
            i = 0 if self.times and self.times[0] - ts <= lead else -1
        if i < 0 or not self.stacks[i]:
            return None
        return self.stacks[i]


def parse_chrometrace(data: Any) -> list[Timeline]:
    """Timelines from py-spy's chrometrace events (``B``/``E`` per frame, ``M`` thread names in newer py-spy).

    Raises ``ValueError`` when the data does not have that shape.
    """
    if not isinstance(data, list):
        raise ValueError("chrometrace JSON is not an array of events")
    names: dict[int, int] = {}
    open_frames: dict[int, list[RawFrame]] = {}
    lines: dict[int, Timeline] = {}
    for event in data:
        if not isinstance(event, dict) or "tid" not in event or "ph" not in event:
            raise ValueError("chrometrace event without tid or ph")
        tid, ph, args = int(event["tid"]), event["ph"], event.get("args") or {}
        if ph == "M":  # newer py-spy remaps tids and names the thread "<thread id>: <name>"
            head = str(args.get("name", "")).split(":", 1)[0]
            if head.isdigit():
                names[tid] = int(head)
            continue
        frames = open_frames.setdefault(tid, [])
        frame = (str(event.get("name", "?")), str(args.get("filename", "?")), int(args.get("line") or 0))
        if ph == "B":
            frames.append(frame)
        elif ph == "E":  # innermost first: it closes the last frame opened with that name
            if frame in frames:
                del frames[len(frames) - 1 - frames[::-1].index(frame):]
        else:
            continue
        line = lines.setdefault(tid, Timeline(tid))
        ts = int(event["ts"])
        if line.times and line.times[-1] == ts:
            line.stacks[-1] = _stack(frames, line)
        else:
            line.times.append(ts)
            line.stacks.append(_stack(frames, line))
    for tid, line in lines.items():
        line.thread_id = names.get(tid, tid)
    return list(lines.values())


def _stack(outermost_first: list[RawFrame], line: Timeline) -> tuple[RawFrame, ...]:
    """Innermost-first frames without py-spy's ``thread (…)`` root frame, which names the thread."""
    frames = outermost_first
    if frames and not frames[0][1] and (named := _THREAD_FRAME.match(frames[0][0])):
        ident, line.name = named[1], named[2]
        line.os_thread_id = int(ident) if ident.isdigit() else None
        frames = frames[1:]
    return tuple(reversed(frames))


def assemble(pid: int, readings: list[Reading], timelines: list[Timeline], started_at: float,
             lead: float) -> list[StackSample]:
    """One sample per reading: its counters and the stacks py-spy saw at that moment (readings with none dropped).

    ``started_at`` is the wall-clock time of py-spy's 0 µs. A reading taken before a thread's first
    py-spy sample gets that sample if it came before the next reading (``lead`` s after the last one).
    """
    samples = []
    for i, reading in enumerate(readings):
        ts = (reading.taken_at - started_at) * 1e6
        ahead = readings[i + 1].taken_at - reading.taken_at if i + 1 < len(readings) else lead
        threads = []
        for line in timelines:
            stack = line.at(ts, ahead * 1e6)
            if stack is None:
                continue
            tid = line.os_thread_id
            if tid is None and (line.name == "MainThread" or len(timelines) == 1):
                tid = pid
            if line.os_thread_id is not None and reading.threads and tid not in reading.threads:
                continue  # the thread had ended by this reading
            facts = reading.threads.get(tid) if tid is not None else None
            thread = ThreadStack(thread_id=line.thread_id, name=line.name, os_thread_id=line.os_thread_id,
                                 frames=[Frame(name, filename, lineno) for name, filename, lineno in stack])
            thread.active = _active(facts.state if facts else None, thread.frames)
            if facts is not None:
                facts.apply(thread)
            threads.append(thread)
        if threads:
            c = reading.counters
            samples.append(StackSample(taken_at=reading.taken_at, threads=threads, cpu_time=c.cpu_time, io=c.io,
                                       voluntary_ctx_switches=c.voluntary, involuntary_ctx_switches=c.involuntary))
    return samples


def _active(state: str | None, frames: list[Frame]) -> bool:
    """py-spy's ``active``: running (``R``) when the OS thread is known, else assumed; then its idle heuristic."""
    if state is not None and state != "R":
        return False
    if not frames:
        return True
    top = frames[0]
    idle = ((top.name == "wait" and top.filename.endswith("threading.py"))
            or (top.name == "select" and top.filename.endswith("selectors.py"))
            or (top.name == "poll" and any(p in top.filename for p in _IDLE_POLLERS)))
    return not idle


def settled(readings: list[Reading]) -> bool:
    """The counters already show file/pipe I/O at low CPU: more samples cannot change a verdict of progress."""
    if len(readings) < SETTLED_MIN_SAMPLES:
        return False
    first, last = readings[0].counters, readings[-1].counters
    seconds = readings[-1].taken_at - readings[0].taken_at
    if first.io is None or last.io is None or first.cpu_time is None or last.cpu_time is None or seconds <= 0:
        return False
    io = last.io.syscr + last.io.syscw + last.io.rchar + last.io.wchar
    io -= first.io.syscr + first.io.syscw + first.io.rchar + first.io.wchar
    return io > 0 and 100.0 * (last.cpu_time - first.cpu_time) / seconds < BLOCKED_MAX_CPU_PERCENT


# --- the sampling loop --------------------------------------------------------------------


@dataclass
class Recording:
    """What one target's recorder gave: samples in time order, or why there are none."""

    pid: int
    samples: list[StackSample] = field(default_factory=list)
    failure: str = ""
    """``""``, ``failed`` (py-spy exited with an error: see ``stderr``), ``usage`` (this py-spy does not know
    these ``record`` options: older than 0.4), ``corrupt``, ``timeout``, ``vanished`` or ``missing_tool``."""
    stderr: str = ""
    detail: str = ""
    io_error: str | None = None
    """Why ``/proc/PID/io`` could not be read, when it could not."""


@dataclass
class _Recorder:
    pid: int
    popen: subprocess.Popen[bytes]
    started_at: float
    """Wall clock just after py-spy was started: no later than its 0 µs."""
    proc: psutil.Process | None
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    open_pipes: int = 2
    ready_at: float | None = None
    output_at: float | None = None
    """Wall clock when py-spy's output began to arrive: just after the time of its closing events."""
    due: float = math.inf
    readings: list[Reading] = field(default_factory=list)
    stop_sent: bool = False
    vanished: bool = False
    killed: bool = False


class _Window:
    """The recorders of one probe run, driven by one select loop."""

    def __init__(self, exe: str, deadline: Deadline, samples: int, interval: float, max_parallel: int,
                 targets: int) -> None:
        self.exe, self.deadline, self.samples, self.interval = exe, deadline, samples, interval
        self.env = py_spy_env()
        self.rate = sample_rate(interval, targets)
        self.max_parallel = max(1, max_parallel)
        self.selector = selectors.DefaultSelector()
        self.running: list[_Recorder] = []
        self.done: dict[int, Recording] = {}
        self.total = 0


    def run(self, pids: list[int]) -> dict[int, Recording]:
        waiting = list(pids)
        self.total = len(waiting)
        try:
            while waiting or self.running:
                if waiting and len(self.running) < self.max_parallel:
                    self._start(waiting.pop(0))
                    self._wait(0.0)  # the first ones sample while the others start
                else:
                    self._wait()
                now = time.monotonic()
                for rec in list(self.running):
                    self._step(rec, now)
        finally:
            for rec in self.running:
                _kill(rec)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    rec.popen.wait(timeout=1.0)
            self.selector.close()
        return self.done

    def _start(self, pid: int) -> None:
        if self.deadline.remaining() <= STOP_RESERVE_S:
            self.done[pid] = Recording(pid, failure="timeout", detail="no time left before the deadline")
            return
        try:
            proc: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self.done[pid] = Recording(pid, failure="vanished")
            return
        except psutil.AccessDenied:
            proc = None
        cmd = record_command(self.exe, pid, self.rate, math.ceil(self.deadline.remaining()) + 1)
        try:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env, close_fds=False)  # see SPAWN_NOTE
        except OSError as exc:
            self.done[pid] = Recording(pid, failure="missing_tool", detail=str(exc))
            return
        rec = _Recorder(pid, popen, time.time(), proc)
        for pipe, buffer in ((popen.stdout, rec.out), (popen.stderr, rec.err)):
            assert pipe is not None
            self.selector.register(pipe, selectors.EVENT_READ, (rec, buffer))
        self.running.append(rec)

    def _wait(self, timeout: float | None = None) -> None:
        """Read whatever the recorders wrote, until the next reading is due (or something happens)."""
        if not self.running:
            return
        if timeout is None:
            left = self.deadline.remaining()
            limits = [min(rec.due for rec in self.running) - time.monotonic(), 0.2]
            limits += [left - reserve for reserve in (STOP_RESERVE_S, KILL_RESERVE_S) if left > reserve]
            timeout = max(0.0, min(limits))
        for key, _ in self.selector.select(timeout):
            rec, buffer = key.data
            chunk = os.read(key.fd, 65536)
            if chunk:
                buffer += chunk
                if buffer is rec.out:
                    if rec.ready_at is None and READY_LINE in rec.out:
                        rec.ready_at = rec.due = time.monotonic()  # its first sample stands for this reading
                    if rec.output_at is None and (rec.out.startswith(b"[") or b"\n[" in rec.out):
                        rec.output_at = time.time()
            else:
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                rec.open_pipes -= 1

    def _step(self, rec: _Recorder, now: float) -> None:
        """Take the readings that are due, stop the recorder when it has enough, finish it once it exited."""
        left = self.deadline.remaining()
        if rec.due <= now and not rec.stop_sent:
            self._read(rec)
            if (rec.vanished or len(rec.readings) >= self.samples or settled(rec.readings)
                    or left <= STOP_RESERVE_S + self.interval):
                self._stop(rec)
            else:
                rec.due = max(rec.due + self.interval, now + self.interval / 2)
        if not rec.stop_sent and left <= STOP_RESERVE_S:
            self._stop(rec)
        if left <= KILL_RESERVE_S and rec.popen.poll() is None:
            _kill(rec)
        if rec.open_pipes == 0 or (rec.killed and rec.popen.poll() is not None):
            self._finish(rec)

    def _read(self, rec: _Recorder) -> None:
        try:
            rec.readings.append(read_process(rec.proc, rec.pid))
        except psutil.NoSuchProcess:
            rec.vanished = True

    def _stop(self, rec: _Recorder) -> None:
        rec.stop_sent, rec.due = True, math.inf
        if rec.popen.poll() is None:
            with contextlib.suppress(OSError):
                rec.popen.send_signal(signal.SIGINT)

    def _finish(self, rec: _Recorder) -> None:
        self.running.remove(rec)
        for pipe in (rec.popen.stdout, rec.popen.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(pipe)
                pipe.close()
        code = _reap(rec, self.deadline)
        self.done[rec.pid] = _result(rec, code, 1.0 / self.rate + self.interval / 2)
        progress.show(f"sampled {len(self.done)} of {self.total} processes…")


def record_window(exe: str, pids: list[int], deadline: Deadline, samples: int, interval: float,
                  max_parallel: int = MAX_RECORDERS) -> dict[int, Recording]:
    """Record every pid for ``samples`` readings ``interval`` s apart, at most ``max_parallel`` at once."""
    targets = list(dict.fromkeys(pids))
    return _Window(exe, deadline, samples, interval, max_parallel, min(len(targets), max_parallel)).run(targets)


def _result(rec: _Recorder, code: int | None, lead: float) -> Recording:
    stderr = rec.err.decode(errors="replace")
    io_error = next((r.counters.io_error for r in rec.readings if r.counters.io_error), None)
    if rec.killed and not rec.readings:
        return Recording(rec.pid, failure="timeout", detail="py-spy did not start sampling before the deadline")
    if code == USAGE_EXIT and rec.ready_at is None:
        return Recording(rec.pid, failure="usage", stderr=stderr)
    if code != 0 and rec.ready_at is None:
        return Recording(rec.pid, failure="vanished" if rec.vanished else "failed", stderr=stderr)
    text = next((line for line in rec.out.splitlines() if line.startswith(b"[")), None)
    if text is None:
        failure = "vanished" if rec.vanished and not rec.readings else "timeout" if rec.killed else "failed"
        return Recording(rec.pid, failure=failure, stderr=stderr, detail="py-spy wrote no samples")
    try:
        timelines = parse_chrometrace(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        return Recording(rec.pid, failure="corrupt", detail=str(exc))
    samples = assemble(rec.pid, rec.readings, timelines, _zero(rec, timelines), lead)
    if not samples:
        failure = "vanished" if rec.vanished else "failed"
        return Recording(rec.pid, failure=failure, stderr=stderr, detail="no stack at any reading")
    return Recording(rec.pid, samples, io_error=io_error)


def _zero(rec: _Recorder, timelines: list[Timeline]) -> float:
    """Wall clock of py-spy's 0 µs.

    Its events count from its own start, which comes some time after the exec that
    ``started_at`` follows (more on a loaded machine). Its closing events carry the time at which
    it wrote its output, which arrived at ``output_at``: that gives the start to within a few ms.
    """
    end = max((line.times[-1] for line in timelines if line.times), default=None)
    if rec.output_at is None or end is None:
        return rec.started_at
    return max(rec.started_at, rec.output_at - end / 1e6)


def _kill(rec: _Recorder) -> None:
    if rec.popen.poll() is None:
        with contextlib.suppress(OSError):
            rec.popen.kill()
        rec.killed = True


def _reap(rec: _Recorder, deadline: Deadline) -> int | None:
    """Exit code of py-spy, which has closed its pipes (killed if it does not exit promptly)."""
    try:
        return rec.popen.wait(timeout=deadline.timeout(cap=1.0))
    except subprocess.TimeoutExpired:
        _kill(rec)
        return rec.popen.wait()
