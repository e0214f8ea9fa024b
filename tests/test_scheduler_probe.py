"""The scheduler probes on local files: the lock attempt on config/scheduler_process (never held), the
`frappe schedule` argv, the config keys as Frappe merges them, and the failed-job error tail (never unpickled)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import zlib
from pathlib import Path

import pytest

from rqdoctor.probes.rq_health import _result_error, decompress, kernel_oom, tail
from rqdoctor.probes.scheduler import is_schedule_argv, probe_lock, site_flags

pytestmark = pytest.mark.unit


def lock_file(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "scheduler_process"
    path.write_text("")
    return path


def test_missing_lock_file_is_not_created(tmp_path: Path) -> None:
    lock = probe_lock(tmp_path)
    assert lock.state == "missing" and not (tmp_path / "config" / "scheduler_process").exists()


def test_free_lock_is_released_at_once(tmp_path: Path) -> None:
    path = lock_file(tmp_path)
    assert probe_lock(tmp_path).state == "free"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if the probe had kept it
    finally:
        os.close(fd)


def test_held_lock_names_its_holder_and_stays_held(tmp_path: Path) -> None:
    path = lock_file(tmp_path)
    fd = os.open(path, os.O_RDWR)  # as filelock.FileLock does: its own open file, an exclusive flock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        lock = probe_lock(tmp_path)
        assert lock.state == "held" and [h.pid for h in lock.held_by] == [os.getpid()]
        assert lock.held_by[0].kind == "FLOCK"
        other = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still ours
        finally:
            os.close(other)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("argv", "expected"), [
    (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "schedule"], True),
    (["/usr/local/bin/bench", "schedule"], True),
    (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "--site", "all", "schedule"], True),
    (["/b/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "schedule"], False),
    (["vim", "schedule"], False),
])
def test_schedule_argv(argv: list[str], expected: bool) -> None:
    assert is_schedule_argv(argv) is expected


def test_site_config_wins_over_the_common_one(tmp_path: Path) -> None:
    (tmp_path / "sites" / "s1").mkdir(parents=True)
    (tmp_path / "sites" / "common_site_config.json").write_text(json.dumps({"pause_scheduler": 1,
                                                                            "maintenance_mode": 1}))
    (tmp_path / "sites" / "s1" / "site_config.json").write_text(json.dumps({"maintenance_mode": 0}))
    state = site_flags(tmp_path, "s1", [])
    flags = {f.key: (f.value, f.active, Path(f.source).name) for f in state.flags}
    assert flags == {"maintenance_mode": ("0", False, "site_config.json"),
                     "pause_scheduler": ("1", True, "common_site_config.json")}


def test_exc_info_is_decompressed_text_and_secrets_are_masked() -> None:
    text = "Traceback (most recent call last):\n  File \"x.py\"\nValueError: password=hunter2 rejected\n"
    assert decompress(zlib.compress(text.encode())) == text
    assert decompress(b"plain text") == "plain text"
    entry = [(b"1-0", {b"exc_string": base64.b64encode(zlib.compress(text.encode()))})]
    assert tail(_result_error(entry)) == ["Traceback (most recent call last):", '  File "x.py"',
                                          "ValueError: password='***' rejected"]


def test_kernel_log_oom_lines_of_the_last_hour(tmp_path: Path) -> None:
    with open("/proc/uptime", encoding="ascii") as f:
        uptime = float(f.read().split()[0])
    kmsg = tmp_path / "kmsg"
    line = "Out of memory: Killed process 4242 (python) total-vm:2048000kB"
    kmsg.write_text(f"3,100,{int((uptime - 60) * 1e6)},-;{line}\n")
    assert kernel_oom(3600, str(kmsg)) == [line]
    assert kernel_oom(30, str(kmsg)) == []  # a minute old: outside a 30 s window
    assert kernel_oom(3600, str(tmp_path / "missing")) is None  # not readable: no verdict
