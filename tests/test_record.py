"""The record sampler: py-spy chrometrace parsing (recorded with py-spy 0.4.3), lining readings up with
stacks, the adaptive stop, and real ``py-spy record`` runs on real processes.

``record-deadlock.chrometrace.json``: ``targets.py deadlock`` (three threads, one stack each, all
blocked). ``record-alternate.chrometrace.json``: a main thread alternating ``a()`` and ``b()`` (both
``time.sleep(0.1)``) beside a thread ``late`` that sleeps. Both recorded at 16 Hz and stopped with SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.activity import classify
from rqdoctor.model import IoCounters
from rqdoctor.probes import record, stacks
from rqdoctor.probes.counters import Counters, Reading, ThreadFacts
from rqdoctor.probes.procfs import Syscall
from rqdoctor.probes.record import Timeline, assemble, parse_chrometrace, record_command, sample_rate, settled
from rqdoctor.probes.stacks import find_py_spy, probe_stacks

DATA = Path(__file__).parent / "data" / "stacks"
PY_SPY = find_py_spy()
needs_py_spy = pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")


def _recorded(name: str) -> list[Timeline]:
    return parse_chrometrace(json.loads((DATA / f"record-{name}.chrometrace.json").read_text()))


# --- chrometrace (pure) -------------------------------------------------------------------


def test_parse_recorded_threads_with_their_ids_and_names() -> None:
    lines = {t.name: t for t in _recorded("deadlock")}
    assert set(lines) == {"MainThread", "deadlock-a", "deadlock-b"}
    main = lines["MainThread"]
    assert (main.os_thread_id, main.thread_id) == (26342, 140580279311232)  # OS tid from --threads, Python id as tid
    (stack, end) = main.stacks
    assert end == (), "the closing events at py-spy's exit end the recording"
    assert [f[0] for f in stack[:2]] == ["Thread._wait_for_tstate_lock", "Thread.join"]  # innermost first
    assert stack[0][1].endswith("threading.py") and stack[0][2] == 1139
    assert not any(f[0].startswith("thread (") for t in lines.values() for s in t.stacks for f in s)


def test_parse_recorded_changes_keep_their_order_and_time() -> None:
    main = next(t for t in _recorded("alternate") if t.name == "MainThread")
    innermost = [s[0][0] for s in main.stacks[:-1]]
    assert innermost == ["a", "b", "a", "b", "a", "b", "a"]
    assert main.times == sorted(main.times)
    first, second = main.times[0], main.times[1]
    assert main.at(first, 0)[0][0] == "a" and main.at(second - 1, 0)[0][0] == "a" and main.at(second, 0)[0][0] == "b"
    assert main.at(main.times[-1] + 1, 0) is None, "after py-spy stopped: no stack"
    assert main.at(first - 1000, 2000)[0][0] == "a", "a reading just before py-spy's first sample gets that sample"
    assert main.at(first - 5000, 2000) is None


def test_parse_newer_py_spy_thread_metadata() -> None:
    """py-spy after 0.4.3 remaps tids to small numbers and names threads in ``M`` events."""
    events = [
        {"ph": "M", "name": "thread_name", "tid": 0, "pid": 9, "ts": 0, "args": {"name": "140001: MainThread"}},
        {"ph": "B", "name": "thread (9): MainThread", "tid": 0, "pid": 9, "ts": 10, "args": {"filename": ""}},
        {"ph": "B", "name": "main", "tid": 0, "pid": 9, "ts": 10, "args": {"filename": "/a.py", "line": 3}},
        {"ph": "E", "name": "main", "tid": 0, "pid": 9, "ts": 20, "args": {"filename": "/a.py", "line": 3}},
        {"ph": "B", "name": "main", "tid": 0, "pid": 9, "ts": 20, "args": {"filename": "/a.py", "line": 4}},
    ]
    (line,) = parse_chrometrace(events)
    assert (line.thread_id, line.os_thread_id, line.name) == (140001, 9, "MainThread")
    assert line.times == [10, 20] and [s[0][2] for s in line.stacks] == [3, 4]


def test_parse_thread_without_os_id() -> None:
    events = [{"ph": "B", "name": "thread (0x7F00AB): worker", "tid": 5, "pid": 9, "ts": 1, "args": {"filename": ""}},
              {"ph": "B", "name": "run", "tid": 5, "pid": 9, "ts": 1, "args": {"filename": "/a.py", "line": 1}}]
    (line,) = parse_chrometrace(events)
    assert (line.thread_id, line.os_thread_id, line.name) == (5, None, "worker")


@pytest.mark.parametrize("bad", [{"traceEvents": []}, [{"ph": "B"}], ["x"]])
def test_parse_rejects_foreign_json(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_chrometrace(bad)


# --- lining up (pure) ---------------------------------------------------------------------

START = 1_000.0


def _reading(at_us: int, cpu: float, threads: dict[int, ThreadFacts], io: int = 0) -> Reading:
    counters = Counters(cpu_time=cpu, io=IoCounters(io, io, io, io, 0, 0), voluntary=7, involuntary=1)
    return Reading(START + at_us / 1e6, counters, threads)


def test_assemble_gives_each_reading_the_stack_py_spy_saw_then() -> None:
    lines = _recorded("alternate")
    main = next(t for t in lines if t.name == "MainThread")
    late = next(t for t in lines if t.name == "late")
    facts = {main.os_thread_id: ThreadFacts("S", "hrtimer_nanosleep", Syscall("clock_nanosleep", 230, [], False)),
             late.os_thread_id: ThreadFacts("R", "0")}
    readings = [_reading(main.times[i] + 500, 0.01 * i, facts) for i in range(4)]
    samples = assemble(8815, readings, lines, START, lead=0.1)
    assert [s.taken_at for s in samples] == [r.taken_at for r in readings]
    mains = [next(t for t in s.threads if t.name == "MainThread") for s in samples]
    assert [t.frames[0].name for t in mains] == ["a", "b", "a", "b"]
    first = samples[0]
    assert first.cpu_time == 0.0 and first.voluntary_ctx_switches == 7 and first.io is not None
    thread = next(t for t in first.threads if t.name == "MainThread")
    assert (thread.wchan, thread.syscall, thread.active, thread.owns_gil) == ("hrtimer_nanosleep", "clock_nanosleep",
                                                                            False, False)
    assert thread.thread_id == main.thread_id and thread.os_thread_id == 8815
    assert next(t for t in first.threads if t.name == "late").active, "state R: running, as py-spy would say"


def test_assemble_leaves_out_threads_not_alive_at_a_reading() -> None:
    lines = _recorded("alternate")
    main = next(t for t in lines if t.name == "MainThread")
    late = next(t for t in lines if t.name == "late")
    both = {main.os_thread_id: ThreadFacts("S"), late.os_thread_id: ThreadFacts("S")}
    only_main = {main.os_thread_id: ThreadFacts("S")}
    first = min(main.times[0], late.times[0])
    early = _reading(first - 50_000, 0.0, both)  # py-spy's first sample came after the next reading
    before = _reading(first - 10_000, 0.0, both)  # ... and before the one after: it stands for this reading
    ended = _reading(main.times[2] + 100, 0.0, only_main)  # late's tid no longer in /proc/PID/task
    after = _reading(main.times[-1] + 100, 0.0, only_main)  # py-spy had stopped
    samples = assemble(8815, [early, before, ended, after], lines, START, lead=0.01)
    assert [s.taken_at for s in samples] == [before.taken_at, ended.taken_at], "readings with no stack are dropped"
    assert sorted(t.name for t in samples[0].threads) == ["MainThread", "late"]
    assert [t.name for t in samples[1].threads] == ["MainThread"]


@pytest.mark.parametrize(("state", "top", "active"), [
    ("R", "nap", True), ("S", "nap", False), ("D", "nap", False), (None, "nap", True), (None, "wait", False),
])
def test_active_as_py_spy_sets_it(state: str | None, top: str, active: bool) -> None:
    from rqdoctor.model import Frame

    frames = [Frame(top, "/usr/lib/python3.10/threading.py" if top == "wait" else "/app/job.py", 3)]
    assert record._active(state, frames) is active


def test_settled_after_file_io_at_low_cpu() -> None:
    io = [_reading(i * 200_000, 0.001 * i, {}, io=i) for i in range(3)]
    assert settled(io)
    assert not settled(io[:2]), "at least three readings"
    hot = [_reading(i * 200_000, 0.2 * i, {}, io=i) for i in range(3)]
    assert not settled(hot), "a CPU-bound thread may be spinning: it gets the whole window"
    quiet = [_reading(i * 200_000, 0.0, {}) for i in range(3)]
    assert not settled(quiet), "no I/O: it may be blocked"
    unreadable = [Reading(START + i, Counters(cpu_time=0.0)) for i in range(3)]
    assert not settled(unreadable)


def test_record_command_and_rate() -> None:
    cmd = record_command("py-spy", 42, 16, 9)
    assert cmd[:4] == ["py-spy", "record", "--pid", "42"]
    for flag in ("--nonblocking", "--idle", "--threads"):
        assert flag in cmd
    assert cmd[cmd.index("--format") + 1] == "chrometrace" and cmd[cmd.index("--output") + 1] == "/dev/stdout"
    assert cmd[cmd.index("--duration") + 1] == "9" and cmd[cmd.index("--rate") + 1] == "16"
    assert sample_rate(0.25, 64) == 16, "four samples per interval"
    assert sample_rate(0.25, 16) == 50, "few targets: faster, so that py-spy stops sooner after SIGINT"
    assert sample_rate(5.0, 200) == record.MIN_RATE and sample_rate(0.05, 64) == record.MAX_RATE


# --- real processes -----------------------------------------------------------------------

TARGETS = '''
import sys, time

def write(path):
    print("ready", flush=True)
    with open(path, "w") as f:
        while True:
            f.write("x" * 100)
            f.flush()
            time.sleep(0.05)

def nap():
    print("ready", flush=True)
    time.sleep(1000)

def brief(seconds):
    print("ready", flush=True)
    time.sleep(float(seconds))

globals()[sys.argv[1]](*sys.argv[2:])
'''


@contextlib.contextmanager
def _targets(tmp_path: Path, *specs: tuple[str, ...]) -> Iterator[list[subprocess.Popen[bytes]]]:
    script = tmp_path / "targets.py"
    script.write_text(TARGETS)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for spec in specs:
            popen = subprocess.Popen([sys.executable, str(script), *spec], stdout=subprocess.PIPE,
                                     start_new_session=True)
            started.append(popen)
            ready, _, _ = select.select([popen.stdout], [], [], 20)
            assert ready and popen.stdout is not None and popen.stdout.readline().strip() == b"ready", spec
        yield started
    finally:
        for popen in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


def _wrapper(tmp_path: Path, log: Path) -> str:
    """A py-spy that logs each invocation, then becomes the real one."""
    path = tmp_path / "py-spy"
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {PY_SPY} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.integration
@needs_py_spy
def test_one_recorder_per_target_for_the_whole_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setattr(stacks, "find_py_spy", lambda: _wrapper(tmp_path, log))
    with _targets(tmp_path, ("nap",), ("nap",), ("nap",)) as started:
        result, errors = probe_stacks([p.pid for p in started], Deadline(20), samples=5, interval=0.25)
    assert errors == []
    calls = log.read_text().splitlines()
    assert sorted(c.split()[2] for c in calls) == sorted(str(p.pid) for p in started)
    assert all(c.split()[0] == "record" for c in calls), "one py-spy record per target, no dumps"
    for s in result:
        assert s.mode == "nonblocking" and len(s.samples) == 5
        spread = s.samples[-1].taken_at - s.samples[0].taken_at
        assert 0.9 <= spread <= 2.5, spread
        assert all(x.cpu_time is not None and x.io is not None for x in s.samples)
        main = s.samples[-1].threads[0]
        assert main.frames[0].code == "time.sleep(1000)" and main.syscall == "clock_nanosleep"
        activity = classify(s)
        assert (activity.kind, activity.progress) == ("sleep", "blocked"), activity


@pytest.mark.integration
@needs_py_spy
def test_recorders_at_once_are_bounded(tmp_path: Path) -> None:
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                seen.append(sum(1 for c in me.children() if "record" in c.cmdline()))
            time.sleep(0.01)

    with _targets(tmp_path, ("nap",), ("nap",), ("nap",), ("nap",)) as started:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result, errors = probe_stacks([p.pid for p in started], Deadline(20), samples=3, interval=0.2,
                                          max_parallel=2)
        finally:
            done.set()
            watcher.join()
    assert errors == [] and all(len(s.samples) == 3 for s in result)
    assert max(seen) == 2


@pytest.mark.integration
@needs_py_spy
def test_a_writer_stops_early_a_sleeper_gets_the_whole_window(tmp_path: Path) -> None:
    with _targets(tmp_path, ("write", str(tmp_path / "out.txt")), ("nap",)) as started:
        (writer, sleeper), errors = probe_stacks([p.pid for p in started], Deadline(20), samples=6, interval=0.2)
    assert errors == []
    assert len(writer.samples) == record.SETTLED_MIN_SAMPLES, "file I/O at low CPU: progress, no need for more"
    assert len(sleeper.samples) == 6
    assert classify(writer).progress == "progressing" and classify(sleeper).progress == "blocked"


@pytest.mark.integration
@needs_py_spy
def test_a_target_that_exits_keeps_the_samples_taken(tmp_path: Path) -> None:
    with _targets(tmp_path, ("brief", "0.6")) as started:
        (stacks_,), errors = probe_stacks([started[0].pid], Deadline(20), samples=10, interval=0.2)
    assert errors == [] and stacks_.error is None
    assert 1 <= len(stacks_.samples) < 10


def _fake(tmp_path: Path, body: str) -> str:
    path = tmp_path / "py-spy"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.integration
def test_unreadable_record_output_is_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = ('echo "py-spy> Sampling process 16 times a second"; '
            "trap 'echo \"[{\\\"no\\\": 1}]\"; exit 0' INT; while :; do sleep 0.05; done")
    monkeypatch.setattr(stacks, "find_py_spy", lambda: _fake(tmp_path, body))
    with _targets(tmp_path, ("nap",)) as started:
        (result,), errors = probe_stacks([started[0].pid], Deadline(10), samples=2, interval=0.1)
    assert [e.kind for e in errors] == ["corrupt"] and result.error is errors[0] and result.samples == []


@pytest.mark.integration
def test_failing_record_is_classified_from_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = 'echo "Error: Permission Denied: Try running again with elevated permissions" >&2; exit 1'
    monkeypatch.setattr(stacks, "find_py_spy", lambda: _fake(tmp_path, body))
    with _targets(tmp_path, ("nap",)) as started:
        (result,), errors = probe_stacks([started[0].pid], Deadline(10), samples=2, interval=0.1)
    assert result.error is errors[0] and [e.kind for e in errors] == ["permission"]
    assert "CAP_SYS_PTRACE" in errors[0].hint
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "py-spy"]


def test_py_spy_time_zero_from_when_its_output_arrived() -> None:
    """py-spy counts from its own start, some time after the exec: its closing events date its output."""
    lines = _recorded("alternate")
    end = max(t.times[-1] for t in lines)
    rec = SimpleNamespace(started_at=START, output_at=START + 0.040 + end / 1e6)
    assert record._zero(rec, lines) == pytest.approx(START + 0.040)  # type: ignore[arg-type]
    rec.output_at = None
    assert record._zero(rec, lines) == START  # type: ignore[arg-type]


@pytest.mark.integration
@needs_py_spy
def test_a_py_spy_that_cannot_record_chrometrace_dumps_instead(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """py-spy before 0.4 has no ``--format chrometrace``: it exits 2 on the arguments, and dumps are taken."""
    body = (f'if [ "$1" = record ]; then echo "error: invalid value \'chrometrace\' for \'--format\'" >&2; exit 2; '
            f'fi\nexec {PY_SPY} "$@"')
    monkeypatch.setattr(stacks, "find_py_spy", lambda: _fake(tmp_path, body))
    with _targets(tmp_path, ("nap",)) as started:
        (result,), errors = probe_stacks([started[0].pid], Deadline(20), samples=3, interval=0.2)
    assert errors == [] and len(result.samples) == 3
    assert result.samples[-1].threads[0].frames[0].code == "time.sleep(1000)"
