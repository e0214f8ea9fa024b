"""Stack probe: samples of each process over a short window, as plain facts.

By default (non-blocking, no locals, two samples or more) each process gets one ``py-spy record``
for the whole window, all processes at once (at most :data:`~.record.MAX_RECORDERS`), and
``/proc`` is read at each sample time (see :mod:`.record`). ``--blocking``, ``--native``,
``--locals`` and single samples use ``py-spy dump --json``, one per sample, in rounds
(``record`` has no locals, and a blocking record would pause the target many times a second).

Every py-spy runs under a hard timeout derived from the deadline; failures become
:class:`~rqdoctor.model.ProbeError` values, one process never affects another, and a blocking
dump never leaves its target stopped. Besides py-spy's frames, each sample records the process
CPU time, ``/proc/PID/io`` counters and the main thread's context switches (the progress
signals), each thread's kernel wait channel and system call, each frame's source line, and the
loop around each thread's innermost frame, so diagnosis can tell a sleep from a socket read when
the wait happens inside a C call, and a poll loop from a loop that does work.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.progress import QUIET_MIN_S
from rqdoctor.model import Frame, IoCounters, ProbeError, ProcessStacks, StackSample, ThreadStack
from rqdoctor.probes.counters import (
    Counters,
    RunMark,
    cpu_clocks,
    io_counters,
    quiet_seconds,
    read_counters,
    read_thread,
    run_marks,
    tid_of,
)
from rqdoctor.probes.procfs import record_lock_files
from rqdoctor.probes.record import MAX_RECORDERS, Recording, py_spy_env, record_window
from rqdoctor.redact import redact_mapping, redact_text

PROBE = "stacks"
DUMP_PARALLEL = 8
"""At most this many ``py-spy dump`` at once (blocking, native, locals or single-sample runs)."""
DUMP_TIMEOUT_CAP = 10.0
"""No single dump may take longer than this, whatever the deadline."""
MIN_ROUND_BUDGET = 0.3
"""Seconds of deadline a further sampling round needs, beyond its wait, to be started."""
RESUME_WATCH_S = 0.1
"""How long after a blocking dump the target is watched for a stop py-spy left behind."""
MAX_SOURCE_BYTES = 2_000_000
MAX_CODE_CHARS = 200
MAX_LOOP_LINES = 12
"""Lines of a thread's innermost loop kept in the snapshot; a longer loop is cut and ends with ``…``."""

HINT_MISSING = "pip install py-spy (into rqdoctor's environment) or put py-spy on PATH"
HINT_PERMISSION = (
    "run rqdoctor as root or as the workers' user; py-spy needs ptrace: CAP_SYS_PTRACE "
    "(Docker: --cap-add SYS_PTRACE) or a permissive kernel.yama.ptrace_scope"
)
HINT_UNSUPPORTED = "py-spy reads CPython processes only; upgrade it (pip install -U py-spy) for new Python versions"
HINT_FAILED = "retry; a nonblocking dump can fail while the target is changing its stack"
HINT_VANISHED = "the process exited (job finished or was killed); run rqdoctor again"
HINT_TIMEOUT_NONBLOCKING = "retry with a longer --timeout; the machine may be overloaded"
HINT_TIMEOUT_BLOCKING = "retry without blocking mode (nonblocking never pauses the target) or with a longer --timeout"
HINT_COUNTERS = "run rqdoctor as root or as the workers' user to read /proc/<pid>/io"

SPAWN_NOTE = "close_fds=False"
"""py-spy is started with ``close_fds=False``, which lets ``subprocess`` use ``posix_spawn`` (2-4 x faster
to start than its fork and fd sweep, measured at 16 at once on a loaded host). It passes no other
fd: Python opens every fd non-inheritable (PEP 446), so py-spy gets only its three pipes."""

_AST_LOCK = threading.Lock()
"""CPython 3.11's parser is not safe to run in several threads at once (recursion-depth SystemError)."""

_PERMANENT = {"missing_tool", "permission", "unsupported", "vanished", "timeout"}
"""Failure kinds after which a pid is not sampled again."""


def find_py_spy() -> str | None:
    """Path of py-spy: next to the running interpreter first (same venv), then on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("py-spy")


def py_spy_command(exe: str, pid: int, blocking: bool, native: bool, with_locals: bool) -> list[str]:
    """argv of one dump; ``--native`` only in blocking mode (py-spy rejects it with ``--nonblocking``)."""
    cmd = [exe, "dump", "--json", "--pid", str(pid)]
    if not blocking:
        cmd.append("--nonblocking")
    elif native:
        cmd.append("--native")
    if with_locals:
        cmd.append("--locals")
    return cmd


def dump_mode(blocking: bool, native: bool) -> str:
    """The ``ProcessStacks.mode`` string for these options."""
    if not blocking:
        return "nonblocking"
    return "blocking+native" if native else "blocking"


def parse_dump(data: Any) -> list[ThreadStack]:
    """Model threads from py-spy's JSON (a top-level array of thread objects); locals are redacted.

    Raises ``ValueError`` when the data does not have py-spy's shape.
    """
    if not isinstance(data, list):
        raise ValueError("py-spy JSON is not an array of threads")
    threads = []
    for raw in data:
        if not isinstance(raw, dict) or not isinstance(raw.get("frames"), list):
            raise ValueError("py-spy thread without frames")
        threads.append(
            ThreadStack(
                thread_id=int(raw["thread_id"]),
                name=raw.get("thread_name"),
                active=bool(raw.get("active")),
                owns_gil=bool(raw.get("owns_gil")),
                frames=[_frame(f) for f in raw["frames"]],
                os_thread_id=raw.get("os_thread_id"),
            )
        )
    return threads


def _frame(raw: dict[str, Any]) -> Frame:
    local_vars = raw.get("locals")
    return Frame(
        name=str(raw.get("name", "?")),
        filename=str(raw.get("filename", "?")),
        line=int(raw.get("line") or 0),
        module=raw.get("module"),
        locals=None if local_vars is None else redact_mapping({v["name"]: v.get("repr") or "" for v in local_vars}),
    )


@dataclass
class _Options:
    exe: str
    blocking: bool
    native: bool
    with_locals: bool
    deadline: Deadline
    first_look: bool = False
    """Read the scheduler's marks of every thread around each dump (see :func:`_mark_quiet`)."""
    sources: dict[str, list[str] | None] = field(default_factory=dict)
    """Lines of the source files read so far (None: unreadable)."""
    trees: dict[tuple[str, int], tuple[int, ast.Module | None]] = field(default_factory=dict)
    """Per (source file, first line of a top-level statement): its syntax tree and the line offset it was parsed
    at (the whole file's under first line 0; None: it does not parse), see :func:`_tree_around`."""
    code_at: dict[tuple[str, int], str | None] = field(default_factory=dict)
    """Redacted source line per (file, line), as frames repeat across samples and processes."""
    loop_at: dict[tuple[str, int], list[str] | None] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=py_spy_env)
    """py-spy's environment, built once per probe (not once per dump)."""


@dataclass
class _Result:
    sample: StackSample | None = None
    error: ProbeError | None = None
    resumed: bool = False
    counters_error: ProbeError | None = None
    """``/proc/PID/io`` could not be read (the sample itself is fine)."""
    quiet: float | None = None
    """First look: seconds for which no thread of the process has run (None: one ran, or not known)."""
    before: dict[int, RunMark] | None = None
    """First look: the scheduler marks read just before the dump."""
    tids: list[int | None] = field(default_factory=list)
    """Kernel thread id of each thread of ``sample``."""


@dataclass
class _Outcome:
    """Everything one process's sampling gave."""

    samples: list[StackSample] = field(default_factory=list)
    error: ProbeError | None = None
    """Why there is no sample (or why the last attempt failed)."""
    counters_error: ProbeError | None = None
    resumed: bool = False
    quiet: float | None = None


def probe_stacks(
    pids: list[int],
    deadline: Deadline,
    samples: int = 3,
    interval: float = 0.4,
    blocking: bool = False,
    native: bool = False,
    with_locals: bool = False,
    max_parallel: int | None = None,
    adaptive: bool = False,
    faulthandler: bool = True,
) -> tuple[list[ProcessStacks], list[ProbeError]]:
    """Sample every pid ``samples`` times, ``interval`` seconds apart, all pids at once.

    Returns one :class:`ProcessStacks` per pid (``error`` set when no sample could be taken)
    and the errors for ``snapshot.errors``. ``native`` is honoured only with ``blocking``.
    ``max_parallel`` bounds the py-spy processes at once (default: :data:`~.record.MAX_RECORDERS`
    recorders, or :data:`DUMP_PARALLEL` dumps). ``adaptive`` (non-blocking, no locals): first one
    dump of every pid at once, and only the processes in which some thread ran are recorded for the
    window (see :func:`_first_look`). ``faulthandler``: where py-spy is not allowed to attach, a process that
    catches SIGUSR1 and writes stderr to a readable file is asked for its own dump
    (:mod:`.faulthandler_dump`), one at a time.
    """
    mode = dump_mode(blocking, native)
    results = {pid: ProcessStacks(pid=pid, mode=mode) for pid in dict.fromkeys(pids)}
    exe = find_py_spy()
    if exe is None:
        error = ProbeError(PROBE, "missing_tool", "py-spy not found: no Python stacks", HINT_MISSING)
        for stacks in results.values():
            stacks.error = error
        return list(results.values()), [error] if results else []

    options = _Options(exe, blocking, native, with_locals, deadline)
    if blocking or with_locals or samples < 2:
        outcomes = _dump_rounds(list(results), options, samples, interval, max_parallel or DUMP_PARALLEL)
    elif adaptive:
        outcomes = _first_look(list(results), options, samples, interval, max_parallel or MAX_RECORDERS)
    else:
        outcomes = _record(list(results), options, samples, interval, max_parallel or MAX_RECORDERS)
    if faulthandler:
        _own_dumps(outcomes, options)
    errors = []
    for pid, stacks in results.items():
        outcome = outcomes[pid]
        stacks.samples, stacks.resumed_stopped = outcome.samples, outcome.resumed
        if not stacks.samples and outcome.error is not None:
            stacks.error = outcome.error
            errors.append(stacks.error)
        elif stacks.samples and outcome.counters_error is not None:
            errors.append(outcome.counters_error)
    return list(results.values()), errors


def _own_dumps(outcomes: dict[int, _Outcome], options: _Options) -> None:
    """Replace py-spy's permission failures by the process's own faulthandler dump where it has one."""
    from rqdoctor.probes import faulthandler_dump

    for pid, outcome in outcomes.items():
        error = outcome.error
        if outcome.samples or error is None or error.kind != "permission" or options.deadline.expired():
            continue
        if faulthandler_dump.why_not(pid) is not None:
            continue  # no SIGUSR1 handler or no readable stderr file: never signalled, py-spy's error stands
        sample, failed = faulthandler_dump.dump(pid, options.deadline)
        if sample is None:
            outcome.error = replace(error, message=f"{error.message}; {failed.message if failed else ''}")
            continue
        for thread in sample.threads:
            _add_source(pid, thread, options)
        outcomes[pid] = _Outcome([sample], None)


def _first_look(pids: list[int], options: _Options, samples: int, interval: float,
                max_parallel: int) -> dict[int, _Outcome]:
    """One non-blocking dump of every pid at once; the window only for the processes that need it.

    A process none of whose threads ran during its dump, nor for the window's length before it
    (``(samples - 1) x interval``, at least :data:`~rqdoctor.diagnose.progress.QUIET_MIN_S`), keeps its
    one sample: its stacks have not changed for that long, which is what the window would show.
    Every other process (a thread ran: it may spin, progress or sleep in a loop) is recorded.
    """
    needed = max(QUIET_MIN_S, (samples - 1) * interval)
    looked = _look(pids, replace(options, first_look=True), max_parallel)
    outcomes = {pid: o for pid, o in looked.items() if o.samples and o.quiet is not None and o.quiet >= needed}
    outcomes |= {pid: o for pid, o in looked.items() if o.error is not None and o.error.kind in _PERMANENT}
    rest = [pid for pid in pids if pid not in outcomes]
    if rest:
        outcomes |= _record(rest, replace(options, first_look=False), samples, interval, max_parallel)
    return outcomes


def _record(pids: list[int], options: _Options, samples: int, interval: float,
            max_parallel: int) -> dict[int, _Outcome]:
    """One py-spy recorder per pid for the whole window; source lines and lock files added afterwards.

    A py-spy too old to record in chrometrace format dumps instead.
    """
    outcomes = {}
    recordings = record_window(options.exe, pids, options.deadline, samples, interval, max_parallel)
    old = [pid for pid, recording in recordings.items() if recording.failure == "usage"]
    if old:
        outcomes.update(_dump_rounds(old, options, samples, interval, DUMP_PARALLEL))
    for pid, recording in recordings.items():
        if pid in outcomes:
            continue
        for sample in recording.samples:
            for thread in sample.threads:
                _add_source(pid, thread, options)
        if recording.samples:  # lock files held now: read once, beside the latest stacks
            for thread in recording.samples[-1].threads:
                record_lock_files(pid, thread)
        counters_error = None if recording.io_error is None else _io_error(pid, recording.io_error)
        outcomes[pid] = _Outcome(recording.samples, _recording_error(recording, options), counters_error)
    return outcomes


def _recording_error(recording: Recording, options: _Options) -> ProbeError | None:
    pid, failure = recording.pid, recording.failure
    if failure == "":
        return None
    if failure == "vanished":
        return _vanished(pid)
    if failure == "missing_tool":
        return ProbeError(PROBE, "missing_tool", f"cannot run py-spy: {recording.detail}", HINT_MISSING, str(pid))
    if failure == "corrupt":
        return ProbeError(PROBE, "corrupt", f"unreadable py-spy output for pid {pid}: {recording.detail}", "",
                          str(pid))
    if failure == "timeout":
        message = (f"py-spy record of pid {pid} did not start sampling within the deadline "
                   f"({options.deadline.seconds:g} s)")
        return ProbeError(PROBE, "timeout", message, HINT_TIMEOUT_NONBLOCKING, str(pid))
    return _failure(pid, recording.stderr or recording.detail)


def _dump_rounds(pids: list[int], options: _Options, samples: int, interval: float,
                 max_parallel: int) -> dict[int, _Outcome]:
    """``samples`` rounds of one ``py-spy dump`` per pid, ``interval`` seconds apart."""
    outcomes = {pid: _Outcome() for pid in pids}
    live = list(pids)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(live)))) as pool:
        for round_no in range(max(1, samples)):
            if round_no:
                wait = start + round_no * interval - time.monotonic()
                if not live or options.deadline.remaining() < max(0.0, wait) + MIN_ROUND_BUDGET:
                    break
                time.sleep(max(0.0, wait))
            futures = {pid: pool.submit(_take_sample, pid, options) for pid in live}
            for pid, future in futures.items():
                result, outcome = future.result(), outcomes[pid]
                outcome.resumed |= result.resumed
                if result.sample is not None:
                    outcome.samples.append(result.sample)
                if result.counters_error is not None and outcome.counters_error is None:
                    outcome.counters_error = result.counters_error
                if result.error is not None:
                    outcome.error = result.error
                    if result.error.kind in _PERMANENT:
                        live.remove(pid)
    return outcomes


@dataclass
class _Dump:
    """A ``py-spy dump`` started, and what was read just before."""

    pid: int
    popen: subprocess.Popen[bytes]
    timeout: float
    until: float
    """``time.monotonic()`` by which it must have finished."""
    taken_at: float
    counters: Counters
    was_stopped: bool
    before: dict[int, RunMark] | None


def _take_sample(pid: int, options: _Options) -> _Result:
    """One dump of one process, with its CPU time, wait channels and source lines."""
    started = _begin(pid, options)
    return started if isinstance(started, _Result) else _end(started, options)


def _look(pids: list[int], options: _Options, max_parallel: int) -> dict[int, _Outcome]:
    """One dump of every pid, all started at once from this thread (at most ``max_parallel`` running)."""
    results: dict[int, _Result] = {}
    running: deque[_Dump] = deque()
    waiting = deque(pids)
    while waiting or running:
        while waiting and len(running) < max_parallel:
            pid = waiting.popleft()
            started = _begin(pid, options)
            if isinstance(started, _Result):
                results[pid] = started
            else:
                running.append(started)
        if running:
            dump = running.popleft()
            results[dump.pid] = _end(dump, options)
    cpus = {m.cpu for r in results.values() for m in (r.before or {}).values() if m.cpu is not None}
    clocks = cpu_clocks(cpus)
    for pid, result in results.items():
        _mark_quiet(pid, result, clocks)
    return {pid: _outcome(results[pid]) for pid in pids}


def _outcome(result: _Result) -> _Outcome:
    return _Outcome([] if result.sample is None else [result.sample], result.error, result.counters_error,
                    result.resumed, result.quiet)


def _begin(pid: int, options: _Options) -> _Dump | _Result:
    """Read the counters (and the scheduler marks), then start the dump."""
    if options.deadline.expired():
        return _Result(error=_timeout_error(pid, None, options.blocking))
    try:
        proc = psutil.Process(pid)
        was_stopped = proc.status() == psutil.STATUS_STOPPED
        counters = read_counters(proc, pid)
    except psutil.NoSuchProcess:
        return _Result(error=_vanished(pid))
    except psutil.AccessDenied:
        was_stopped, counters = False, read_counters(None, pid)

    before = run_marks(pid) if options.first_look else None
    taken_at = time.time()
    timeout = options.deadline.timeout(cap=DUMP_TIMEOUT_CAP)
    cmd = py_spy_command(options.exe, pid, options.blocking, options.native, options.with_locals)
    try:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=options.env, close_fds=False)  # see SPAWN_NOTE
    except OSError as exc:
        error = ProbeError(PROBE, "missing_tool", f"cannot run py-spy: {exc}", HINT_MISSING, str(pid))
        return _Result(error=error)
    return _Dump(pid, popen, timeout, time.monotonic() + timeout, taken_at, counters, was_stopped, before)


def _end(dump: _Dump, options: _Options) -> _Result:
    """Wait for the dump (killed at its timeout), then read the threads' facts and source lines."""
    pid, popen, counters, before, taken_at = dump.pid, dump.popen, dump.counters, dump.before, dump.taken_at
    try:
        stdout, stderr = popen.communicate(timeout=max(0.0, dump.until - time.monotonic()))
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.communicate()
        return _Result(error=_timeout_error(pid, dump.timeout, options.blocking),
                       resumed=_resume(pid, options, dump.was_stopped))
    resumed = _resume(pid, options, dump.was_stopped)

    if popen.returncode != 0:
        return _Result(error=_failure(pid, stderr.decode(errors="replace")), resumed=resumed)
    try:
        threads = parse_dump(json.loads(stdout))
    except (ValueError, KeyError, TypeError) as exc:
        error = ProbeError(PROBE, "corrupt", f"unreadable py-spy output for pid {pid}: {exc}", "", str(pid))
        return _Result(error=error, resumed=resumed)
    tids = [tid_of(pid, thread, len(threads)) for thread in threads]
    for thread, tid in zip(threads, tids, strict=True):
        if tid is not None:
            read_thread(pid, tid, state=False).apply(thread)
    for thread in threads:
        record_lock_files(pid, thread)
        _add_source(pid, thread, options)
    sample = StackSample(taken_at=taken_at, threads=threads, cpu_time=counters.cpu_time, io=counters.io,
                         voluntary_ctx_switches=counters.voluntary, involuntary_ctx_switches=counters.involuntary)
    counters_error = None if counters.io_error is None else _io_error(pid, counters.io_error)
    return _Result(sample, resumed=resumed, counters_error=counters_error, before=before, tids=tids)


def _mark_quiet(pid: int, result: _Result, clocks: dict[int, float]) -> None:
    """Set each thread's ``last_ran_s`` and the process's ``quiet`` from the marks read now and before its dump.

    ``clocks`` were read after every ``before``. A thread that appeared or ended meanwhile counts as one that ran.
    """
    if not result.before or result.sample is None:
        return
    after = run_marks(pid) or {}
    quiet = {tid: quiet_seconds(result.before[tid], after[tid], clocks) if tid in result.before and tid in after
             else None for tid in set(result.before) | set(after)}
    known = list(quiet.values())
    result.quiet = min(known) if known and None not in known else None  # type: ignore[type-var]
    for thread, tid in zip(result.sample.threads, result.tids, strict=True):
        # a thread py-spy gave no kernel id (non-main, Python < 3.11) is one of them: quiet if all are
        thread.last_ran_s = quiet.get(tid) if tid is not None else result.quiet


def _add_source(pid: int, thread: ThreadStack, options: _Options) -> None:
    """Each frame's source line, and the loop around the innermost one."""
    for frame in thread.frames:
        key = (frame.filename, frame.line)
        if key not in options.code_at:
            options.code_at[key] = _source_line(pid, frame, options.sources)
        frame.code = options.code_at[key]
    innermost = next((f for f in thread.frames if f.code is not None), None)
    if innermost is not None:
        key = (innermost.filename, innermost.line)
        if key not in options.loop_at:
            options.loop_at[key] = _loop_source(innermost, options)
        loop = options.loop_at[key]
        innermost.loop = None if loop is None else list(loop)


def _io_counters(pid: int) -> tuple[IoCounters | None, ProbeError | None]:
    """``/proc/PID/io`` (readable as root or as the process's user), or the error saying why not."""
    counters, error = io_counters(pid)
    return counters, None if error is None else _io_error(pid, error)


def _io_error(pid: int, reason: str) -> ProbeError:
    message = f"cannot read /proc/{pid}/io ({reason}): progress judged without syscall and byte counters"
    return ProbeError(PROBE, "permission", message, HINT_COUNTERS, str(pid))


def _resume(pid: int, options: _Options, was_stopped: bool) -> bool:
    """After a blocking dump: SIGCONT the target if py-spy left it stopped (and it was not before).

    A SIGSTOP still in flight when py-spy exits takes effect a moment later, so the state is
    watched for :data:`RESUME_WATCH_S`.
    """
    if not options.blocking or was_stopped:
        return False
    try:
        proc = psutil.Process(pid)
        until = time.monotonic() + RESUME_WATCH_S
        while proc.status() != psutil.STATUS_STOPPED:
            if time.monotonic() >= until:
                return False
            time.sleep(0.01)
        os.kill(pid, signal.SIGCONT)
    except (psutil.Error, OSError):
        return False
    return True


def _source_line(pid: int, frame: Frame, sources: dict[str, list[str] | None]) -> str | None:
    """The frame's source line, read through the target's root (containers) or the plain path."""
    if frame.line <= 0 or not frame.filename.endswith(".py") or not frame.filename.startswith("/"):
        return None
    if frame.filename not in sources:
        sources[frame.filename] = _read_source(pid, frame.filename)
    lines = sources[frame.filename]
    if lines is None or frame.line > len(lines):
        return None
    return redact_text(lines[frame.line - 1].strip()[:MAX_CODE_CHARS]) or None


def _loop_source(frame: Frame, options: _Options) -> list[str] | None:
    """Source of the innermost loop of the frame's function around its line; [] when there is none."""
    lines = options.sources.get(frame.filename)
    if lines is None:
        return None
    offset, tree = _tree_around(frame.filename, lines, frame.line, options.trees)
    if tree is None:
        return None
    around = _innermost_block(tree, frame.line - offset)
    if around is None or not around[2]:
        return []  # the innermost block around the line is a function (or nothing): no loop
    first, last = around[0] + offset, around[1] + offset
    body = [redact_text(line.rstrip()[:MAX_CODE_CHARS]) for line in lines[first - 1 : last]]
    return body if len(body) <= MAX_LOOP_LINES else [*body[: MAX_LOOP_LINES - 1], "…"]


def _tree_around(filename: str, lines: list[str], line: int,
                 trees: dict[tuple[str, int], tuple[int, ast.Module | None]]) -> tuple[int, ast.Module | None]:
    """(line offset, syntax tree) of the top-level statement around ``line``, else of the whole file.

    Parsing only that statement (its ``def`` or ``class``, up to the next line that starts in column 0)
    is 10-40 x faster than the whole module (``http.client``: 44 ms). A column-0 line inside a string cuts
    such a chunk where no statement ends, so it does not parse: then the whole file is parsed, as when the
    line is in module-level code.
    """
    first, end = _top_level_statement(lines, line)
    if first is not None:
        if (filename, first) not in trees:
            trees[filename, first] = (first - 1, _parse("\n".join(lines[first - 1 : end])))
        if trees[filename, first][1] is not None:
            return trees[filename, first]
    if (filename, 0) not in trees:
        trees[filename, 0] = (0, _parse("\n".join(lines)))
    return trees[filename, 0]


def _top_level_statement(lines: list[str], line: int) -> tuple[int | None, int]:
    """(first line, last line) of the ``def``, ``async def`` or ``class`` statement, decorators included, that
    starts in column 0 at or above ``line`` with no other column-0 code between; (None, 0) when there is none
    (or the line is not in the file: changed on disk since the process loaded it)."""
    if not 0 < line <= len(lines):
        return None, 0
    first = next((n for n in range(line, 0, -1) if _starts_statement(lines[n - 1])), None)
    if first is None or not lines[first - 1].startswith(("def ", "async def ", "class ", "@")):
        return None, 0
    while first > 1 and lines[first - 2].startswith("@"):
        first -= 1
    end = next((n - 1 for n in range(max(line, first) + 1, len(lines) + 1) if _starts_statement(lines[n - 1])),
               len(lines))
    return first, end


def _starts_statement(text: str) -> bool:
    """A line that may start a statement: in column 0, with code (not a comment, nor the closing bracket of a
    signature or call that ``black`` puts in column 0)."""
    return bool(text) and not text[0].isspace() and text[0] not in "#)]}"


def _parse(text: str) -> ast.Module | None:
    try:
        with _AST_LOCK:
            return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, SystemError, MemoryError):
        return None


_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _innermost_block(tree: ast.Module, line: int) -> tuple[int, int, bool] | None:
    """(first line, last line, is a loop) of the innermost loop or function/class around ``line``.

    Walks down only the nodes whose lines contain ``line`` (nodes without lines, such as
    ``arguments``, are looked into too), not the whole module.
    """
    found: tuple[int, int, bool] | None = None
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            first = getattr(child, "lineno", None)
            if first is None:
                todo.append(child)
                continue
            last = getattr(child, "end_lineno", None) or first
            if not first <= line <= last:
                continue
            block = (first, last, isinstance(child, _LOOPS))
            if isinstance(child, _LOOPS + _SCOPES) and (found is None or block > found):
                found = block  # the same order as sorting every block: the latest start innermost
            todo.append(child)
    return found


def _read_source(pid: int, filename: str) -> list[str] | None:
    for path in (Path(f"/proc/{pid}/root{filename}"), Path(filename)):
        with contextlib.suppress(OSError):
            if path.stat().st_size <= MAX_SOURCE_BYTES:
                return path.read_text(errors="replace").splitlines()
    return None


def _failure(pid: int, stderr: str) -> ProbeError:
    """Classify py-spy's stderr (free text, exit code 1) into a stable kind."""
    line = next((s.strip() for s in stderr.splitlines() if s.strip()), "py-spy failed without a message")
    text = stderr.lower()
    if not psutil.pid_exists(pid) or _is_zombie(pid):
        return _vanished(pid)
    if "permission denied" in text or "operation not permitted" in text:
        return ProbeError(PROBE, "permission", f"not allowed to read pid {pid}: {line}", HINT_PERMISSION, str(pid))
    if "process is running" in text or "no such process" in text:
        return _vanished(pid)
    if "python version" in text or "python interpreter" in text or "unsupported version" in text:
        return ProbeError(
            PROBE, "unsupported", f"pid {pid} is not a readable Python process: {line}", HINT_UNSUPPORTED, str(pid)
        )
    return ProbeError(PROBE, "failed", f"py-spy failed on pid {pid}: {line}", HINT_FAILED, str(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def _vanished(pid: int) -> ProbeError:
    return ProbeError(PROBE, "vanished", f"process {pid} is gone", HINT_VANISHED, str(pid))


def _timeout_error(pid: int, timeout: float | None, blocking: bool) -> ProbeError:
    """A dump cut off after ``timeout`` seconds, or never started (None: the deadline had passed)."""
    if timeout is None:
        message = f"no time left before the deadline to dump pid {pid}"
    else:
        message = f"py-spy dump of pid {pid} did not finish within {timeout:.1f}s (deadline)"
    hint = HINT_TIMEOUT_BLOCKING if blocking else HINT_TIMEOUT_NONBLOCKING
    return ProbeError(PROBE, "timeout", message, hint, str(pid))
