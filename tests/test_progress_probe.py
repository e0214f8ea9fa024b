"""The stacks probe records the progress signals of real processes: /proc io, context switches, loop source."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rqdoctor.deadline import Deadline
from rqdoctor.diagnose.activity import classify
from rqdoctor.model import ProcessStacks
from rqdoctor.probes.stacks import _io_counters, find_py_spy, probe_stacks

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")]

TARGETS = '''
import os, sys, time

def poll(path):
    print("ready", flush=True)
    while not os.path.exists(path):
        time.sleep(0.05)

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

globals()[sys.argv[1]](*sys.argv[2:])
'''


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProcessStacks]]:
    """Three targets (a poll loop, a writer loop, one long sleep) probed together with the defaults."""
    root = tmp_path_factory.mktemp("progress-probe")
    script = root / "targets.py"
    script.write_text(TARGETS)
    args = {"poll": [str(root / "never")], "write": [str(root / "out.txt")], "nap": []}
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, extra in args.items():
            popen = subprocess.Popen([sys.executable, str(script), name, *extra], stdout=subprocess.PIPE,
                                     start_new_session=True)
            started[name] = popen
            ready, _, _ = select.select([popen.stdout], [], [], 20)
            assert ready and popen.stdout is not None and popen.stdout.readline().strip() == b"ready", name
        result, errors = probe_stacks([p.pid for p in started.values()], Deadline(20))
        assert errors == []
        yield dict(zip(started, result, strict=True))
    finally:
        for popen in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


def test_every_sample_has_io_and_context_switch_counters(probed: dict[str, ProcessStacks]) -> None:
    for name, stacks in probed.items():
        assert len(stacks.samples) >= 2, name
        for s in stacks.samples:
            assert s.io is not None and s.voluntary_ctx_switches is not None, (name, s)
    nap = probed["nap"].samples
    assert nap[-1].voluntary_ctx_switches == nap[0].voluntary_ctx_switches, "one sleep never wakes"
    write = probed["write"].samples
    assert write[-1].io.syscw > write[0].io.syscw and write[-1].io.wchar > write[0].io.wchar  # type: ignore[union-attr]


def test_loop_source_of_the_innermost_frame(probed: dict[str, ProcessStacks]) -> None:
    (frame, *_) = probed["poll"].samples[-1].threads[0].frames
    assert frame.code == "time.sleep(0.05)"
    assert frame.loop == ["    while not os.path.exists(path):", "        time.sleep(0.05)"]
    (nap, *_) = probed["nap"].samples[-1].threads[0].frames
    assert nap.loop == [], "no loop around a plain sleep"


def test_verdicts_of_real_processes(probed: dict[str, ProcessStacks]) -> None:
    poll, write, nap = (classify(probed[n]) for n in ("poll", "write", "nap"))
    assert (poll.kind, poll.progress, poll.polling) == ("sleep", "blocked", True), poll
    assert write.progress == "progressing" and not write.polling, write
    assert (nap.kind, nap.progress, nap.polling) == ("sleep", "blocked", False), nap
    assert any("never woke up" in e or "one sleep of 1000 s" in e for e in nap.progress_evidence), nap


def test_unreadable_io_counters_are_an_error_not_zeros() -> None:
    counters, error = _io_counters(2**22 + 12345)
    assert counters is None and error is not None
    assert error.probe == "stacks" and "progress judged without syscall and byte counters" in error.message
