"""The CPU window opened before Redis is read: reused only for the same processes, measured over the whole window.

``prime_early`` primes the worker-like processes and their descendants as a command starts (no Redis needed);
``start_processes`` then counts the window from that moment for the processes it selects that are still the same
ones, so the start-up runs inside the window instead of before it. Real processes: the fake worker tree of
``test_processes`` (a busy horse under an idle worker) and ``sleep`` children.
"""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from rqdoctor.model import ProbeError
from rqdoctor.probes import processes
from tests.test_processes import HOST, _by_pid, _counting_sleeps, _kill_and_reap, _mine, fake_tree

pytestmark = pytest.mark.integration


def test_early_baselines_let_the_window_count_from_before_the_redis_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_tree() as tree:
        early = processes.prime_early()
        assert {tree.worker, tree.horse, tree.child} <= set(early.procs)  # found by command line alone
        time.sleep(0.35)  # the bench, the Redis client's import, the Redis read…
        window = processes.start_processes([], HOST, cpu_window=0.3, early=early)
        waits = _counting_sleeps(monkeypatch)
        errors: list[ProbeError] = []
        window.finish(window.read(), errors)
        infos = _by_pid(window.infos)
    assert window.started == early.started and waits[0] <= 0.0 and _mine(errors, tree) == []
    assert infos[tree.horse].cpu_percent is not None and infos[tree.horse].cpu_percent > 20  # busy all along
    assert infos[tree.worker].cpu_percent is not None and infos[tree.worker].cpu_percent < 20


def test_a_baseline_of_another_process_under_the_same_pid_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the horse's pid had been reused: its early baseline belongs to a process started at another time."""
    with fake_tree() as tree:
        early = processes.prime_early()
        early.procs[tree.horse] = psutil.Process(1)  # same pid, other start time
        time.sleep(0.35)
        before = time.monotonic()
        window = processes.start_processes([], HOST, cpu_window=0.3, early=early)
        waits = _counting_sleeps(monkeypatch)
        window.finish(window.read(), [])
        horse = _by_pid(window.infos)[tree.horse]
    assert window.started >= before and waits[0] > 0.2  # primed again now: the whole window is waited for
    assert horse.cpu_percent is not None and horse.cpu_percent > 20


def test_a_process_that_started_after_the_early_scan_gets_a_whole_window(monkeypatch: pytest.MonkeyPatch) -> None:
    early = processes.prime_early()
    late = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.35)
        before = time.monotonic()
        window = processes.start_processes([], HOST, cpu_window=0.3, extra_pids=[late.pid], early=early)
        waits = _counting_sleeps(monkeypatch)
        window.finish(window.read(), [])
        info = _by_pid(window.infos)[late.pid]
    finally:
        _kill_and_reap(late)
    assert late.pid not in early.procs and window.started >= before and waits[0] > 0.2
    assert info.cpu_percent is not None and info.cpu_percent < 20
