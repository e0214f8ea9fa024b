"""One sample plus the kernel's "last ran N s ago" (/proc sched): the first look of adaptive sampling.

Pure units on recorded ``/proc`` values (the scheduler marks and the verdicts they allow), then
live runs: a blocked process is recognised from ``sched`` with one dump, a busy or sleeping-in-a-loop
one is still sampled over the window.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.activity import classify
from rqdoctor.diagnose.progress import QUIET_MIN_S
from rqdoctor.model import Frame, ProcessStacks, StackSample, ThreadStack
from rqdoctor.probes.counters import RunMark, cpu_clocks, exec_start_ms, quiet_seconds, run_marks
from rqdoctor.probes.stacks import find_py_spy, probe_stacks
from tests.test_progress_rules import APP, app, bench, found

# The head of /proc/<pid>/task/<tid>/sched of a sleeping `sleep 30` on Linux 6.18.
SCHED = """sleep (9491, #threads: 1)
-------------------------------------------------------------------
se.exec_start                                :        521088.859640
se.vruntime                                  :          5645.627954
se.sum_exec_runtime                          :             2.136721
"""
BLOCKED = RunMark(run_ns=2_136_721, delay_ns=11_433_036, state="S", exec_start_ms=521_088.859640, cpu=0)


@pytest.mark.unit
def test_exec_start_is_read_from_sched() -> None:
    assert exec_start_ms(SCHED) == 521_088.859640
    assert exec_start_ms("sleep (1, #threads: 1)\n---\nse.vruntime : 3.0\n") is None


@pytest.mark.unit
def test_quiet_seconds_against_the_same_cpus_clock() -> None:
    assert quiet_seconds(BLOCKED, BLOCKED, {0: 524_588.859640, 1: 900_000.0}) == pytest.approx(3.5)


@pytest.mark.unit
@pytest.mark.parametrize(("after", "clocks", "why"), [
    (RunMark(2_200_000, 11_433_036, "S", 521_190.0, 0), {0: 524_588.9}, "it ran: run time and exec_start moved"),
    (RunMark(2_136_721, 11_500_000, "S", 521_088.859640, 0), {0: 524_588.9}, "it was woken and waited for a CPU"),
    (RunMark(2_136_721, 11_433_036, "R", 521_088.859640, 0), {0: 524_588.9}, "runnable: a starved busy thread"),
    (BLOCKED, {1: 524_588.9}, "no clock of the CPU it last ran on"),
    (BLOCKED, {0: 500_000.0}, "that clock is behind its mark"),
    (RunMark(2_136_721, 11_433_036, "S", 0.0, 0), {0: 524_588.9}, "exec_start 0: reset by a migration"),
    (RunMark(None, None, "S", 521_088.859640, 0), {0: 524_588.9}, "schedstat unreadable"),
])
def test_quiet_seconds_none_without_proof(after: RunMark, clocks: dict[int, float], why: str) -> None:
    assert quiet_seconds(BLOCKED, after, clocks) is None, why


def one_sample(frames: list[Frame], last_ran_s: float | None) -> ProcessStacks:
    thread = ThreadStack(thread_id=1, name="MainThread", frames=frames, os_thread_id=101,
                         last_ran_s=last_ran_s)
    return ProcessStacks(pid=101, samples=[StackSample(1_800_000_000.0, [thread], cpu_time=1.0)])


SOCKET = [Frame("SocketIO.readinto", "/usr/lib/python3.11/socket.py", 706), *app(12, "data = conn.recv(4096)")]


@pytest.mark.unit
def test_one_quiet_sample_is_blocked_with_the_kernels_evidence() -> None:
    activity = classify(one_sample(SOCKET, 3600.4))
    assert activity.progress == "blocked" and activity.samples == 1
    assert activity.progress_evidence[0].startswith("one sample; the kernel has not run the thread for 3600.4 s")


@pytest.mark.unit
def test_one_sample_without_enough_quiet_stays_unknown() -> None:
    assert classify(one_sample(SOCKET, None)).progress == "unknown"
    assert classify(one_sample(SOCKET, QUIET_MIN_S / 2)).progress == "unknown"


@pytest.mark.unit
def test_one_quiet_sleep_is_one_sleep_call_and_a_quiet_poll_loop_still_polls() -> None:
    sleep = classify(one_sample([Frame("work", APP, 7, code="time.sleep(600)", loop=[])], 30.0))
    assert (sleep.kind, sleep.progress, sleep.sleep_s) == ("sleep", "blocked", 600)
    loop = ["while cache.get(key):", "    time.sleep(5)"]
    poll = classify(one_sample([Frame("work", APP, 2, code="time.sleep(5)", loop=loop)], 3.0))
    assert poll.progress == "blocked" and poll.polling


@pytest.mark.unit
def test_rqd109_fires_on_one_quiet_sample() -> None:
    snapshot = bench(app(12, "total = crunch(rows)"), [1.0] * 5)
    snapshot.stacks = [one_sample(app(12, "total = crunch(rows)"), 120.0)]
    evidence = found(snapshot)["RQD109"]
    assert "progress: blocked" in evidence
    assert any(e.startswith("one sample; the kernel has not run the thread for 120.0 s") for e in evidence)


@pytest.mark.unit
def test_rqd109_near_miss_one_sample_without_the_kernels_word() -> None:
    snapshot = bench(app(12, "total = crunch(rows)"), [1.0] * 5)
    snapshot.stacks = [one_sample(app(12, "total = crunch(rows)"), None)]
    assert "RQD109" not in found(snapshot)


# --- live ---------------------------------------------------------------------------------

PY_SPY = find_py_spy()
TARGETS = '''
import sys, time

def nap():
    print("ready", flush=True)
    time.sleep(1000)

def naps():
    print("ready", flush=True)
    while True:
        time.sleep(0.1)

def spin():
    print("ready", flush=True)
    while True:
        pass

globals()[sys.argv[1]]()
'''


@contextlib.contextmanager
def targets(tmp_path: Path, *names: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    script = tmp_path / "targets.py"
    script.write_text(TARGETS)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            popen = subprocess.Popen([sys.executable, str(script), name], stdout=subprocess.PIPE,
                                     start_new_session=True)
            started.append(popen)
            ready, _, _ = select.select([popen.stdout], [], [], 20)
            assert ready and popen.stdout is not None and popen.stdout.readline().strip() == b"ready", name
        yield started
    finally:
        for popen in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


@pytest.mark.integration
def test_a_sleeping_process_last_ran_seconds_ago_by_the_kernel(tmp_path: Path) -> None:
    with targets(tmp_path, "nap") as (nap,):
        time.sleep(1.5)
        before = run_marks(nap.pid)
        assert before is not None and set(before) == {nap.pid}
        started = time.monotonic()
        clocks = cpu_clocks({m.cpu for m in before.values() if m.cpu is not None})
        after = run_marks(nap.pid)
        assert after is not None
        quiet = quiet_seconds(before[nap.pid], after[nap.pid], clocks)
        waited = time.monotonic() - started
    assert quiet is not None and 1.0 <= quiet <= 1.5 + waited + 60, quiet  # up to the 20 s ready wait


@pytest.mark.integration
def test_a_spinning_process_is_never_quiet(tmp_path: Path) -> None:
    with targets(tmp_path, "spin") as (spin,):
        time.sleep(0.5)
        before = run_marks(spin.pid)
        assert before is not None
        time.sleep(0.3)
        clocks = cpu_clocks({m.cpu for m in before.values() if m.cpu is not None})
        after = run_marks(spin.pid)
        assert after is not None
    assert quiet_seconds(before[spin.pid], after[spin.pid], clocks) is None


@pytest.mark.integration
@pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")
def test_adaptive_one_dump_for_the_blocked_the_window_for_the_others(tmp_path: Path) -> None:
    with targets(tmp_path, "nap", "naps", "spin") as started:
        time.sleep(1.5)
        result, errors = probe_stacks([p.pid for p in started], Deadline(20), samples=5, interval=0.25,
                                      adaptive=True)
    assert errors == []
    nap, naps, spin = result
    assert len(nap.samples) == 1 and nap.samples[0].threads[0].last_ran_s >= 1.0
    assert [len(naps.samples), len(spin.samples)] == [5, 5], "a thread that runs gets the window"
    verdicts = {name: classify(s) for name, s in zip(("nap", "naps", "spin"), result, strict=True)}
    assert (verdicts["nap"].kind, verdicts["nap"].progress) == ("sleep", "blocked")
    assert "the kernel has not run the thread" in verdicts["nap"].progress_evidence[0]
    assert verdicts["naps"].progress == "sleeping"
    assert verdicts["spin"].progress == "spinning"
