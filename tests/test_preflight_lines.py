"""``hangs`` and ``stack`` open with the local preflight checks that fail, each with its fix, in every format.

The checks are data in the snapshot (``snapshot.preflight``), taken from what the stacks probe learnt, so
``--from`` shows them too. Unit tests here drive :func:`failed_local_checks` with hand-built stacks; the
non-root test reads real root processes as ``nobody`` with the real py-spy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rqdoctor import preflight
from rqdoctor.deadline import Deadline
from rqdoctor.model import PreflightCheck, ProbeError, ProcessStacks, Snapshot, StackSample
from rqdoctor.preflight import FAIL, WARN, failed_local_checks

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
PTRACE_FIX = "sudo rqdoctor …"


def stacks(pid: int, kind: str | None = None) -> ProcessStacks:
    if kind is None:
        return ProcessStacks(pid=pid, mode="nonblocking", samples=[StackSample(taken_at=1.0)])
    return ProcessStacks(pid=pid, mode="nonblocking", error=ProbeError("stacks", kind, f"{kind} {pid}", "", str(pid)))


@pytest.fixture
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a non-root user without CAP_SYS_PTRACE under Yama ptrace_scope 1."""
    monkeypatch.setattr(preflight, "effective_capabilities", lambda: 0)
    monkeypatch.setattr(preflight, "ptrace_scope", lambda: 1)
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)


def test_denied_dumps_bring_the_ptrace_line_with_its_fix_and_the_pids(unprivileged: None) -> None:
    (check,) = failed_local_checks([stacks(p, "permission") for p in (101, 102, 103)], Deadline(5))
    assert (check.name, check.status) == ("ptrace", FAIL) and PTRACE_FIX in check.fix
    assert "uid 1000" in check.detail and check.detail.endswith("denied for pid 101, 102, 103")


def test_same_user_only_warns_only_when_a_dump_was_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "effective_capabilities", lambda: 0)
    monkeypatch.setattr(preflight, "ptrace_scope", lambda: 0)
    assert failed_local_checks([stacks(1)], Deadline(5)) == []
    assert failed_local_checks([], Deadline(5)) == []
    (check,) = failed_local_checks([stacks(1), stacks(2, "permission")], Deadline(5))
    assert (check.name, check.status) == ("ptrace", WARN)


def test_ptrace_that_cannot_work_shows_even_with_nothing_to_sample(unprivileged: None) -> None:
    assert [c.name for c in failed_local_checks([], Deadline(5))] == ["ptrace"]


def test_near_miss_samples_taken_disprove_a_failing_ptrace_check(unprivileged: None) -> None:
    """A dump that worked (the workers are this user's children) outweighs what the credentials suggest."""
    assert failed_local_checks([stacks(1), stacks(2, "vanished")], Deadline(5)) == []


def test_missing_py_spy_is_a_failed_line_without_running_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "find_py_spy", lambda: None)
    monkeypatch.setattr(preflight.subprocess, "run", lambda *a, **k: pytest.fail("py-spy must not be run"))
    (check,) = failed_local_checks([stacks(1, "missing_tool")], Deadline(5))
    assert (check.name, check.status) == ("py-spy", FAIL) and check.fix == [preflight.HINT_MISSING]


def test_all_dumps_fine_runs_no_py_spy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight.subprocess, "run", lambda *a, **k: pytest.fail("py-spy must not be run"))
    assert failed_local_checks([stacks(1), stacks(2), stacks(3, "timeout")], Deadline(5)) == []


def test_an_interpreter_too_new_for_this_py_spy_is_a_failed_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "interpreter_version", lambda pid: {7: "3.14", 8: None}[pid])
    monkeypatch.setattr(preflight, "py_spy_version", lambda deadline: (0, 4, 1))
    (check,) = failed_local_checks([stacks(7, "unsupported"), stacks(8, "unsupported")], Deadline(5))
    assert (check.name, check.status) == ("interpreters", FAIL)
    assert "1 process(es) run Python 3.14 (pid 7)" in check.detail and check.fix == ["pip install -U 'py-spy>=0.4.2'"]


def test_near_miss_a_readable_interpreter_or_no_python_is_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "interpreter_version", lambda pid: {7: "3.11", 8: None}[pid])
    monkeypatch.setattr(preflight, "py_spy_version", lambda deadline: (0, 4, 1))
    assert failed_local_checks([stacks(7, "unsupported"), stacks(8, "unsupported")], Deadline(5)) == []


# --- end to end on a saved snapshot ---------------------------------------------------------------


def saved_with_failures(tmp_path: Path) -> Path:
    snapshot = Snapshot.from_dict(json.loads(RECORDED.read_text()))
    snapshot.preflight = [PreflightCheck("ptrace", FAIL, "uid 1000, CAP_SYS_PTRACE not in the effective set, "
                                         "Yama ptrace_scope 1: py-spy can read only this process's own children",
                                         [PTRACE_FIX, "or: sudo sysctl kernel.yama.ptrace_scope=0"])]
    snapshot.errors += [ProbeError("stacks", "permission", f"not allowed to read pid {p}: Permission Denied",
                                   "run rqdoctor as root", str(p)) for p in (101, 102, 103, 104, 105)]
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot.to_dict()))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert "Traceback" not in done.stderr, done.stderr
    return done


FOLDED = "stacks: permission denied for 5 processes (pids 101, 102, 103, 104, 105)"


@pytest.mark.cli
def test_hangs_from_a_snapshot_opens_with_the_failed_check_and_folds_the_errors(tmp_path: Path) -> None:
    out = run("hangs", "--from", str(saved_with_failures(tmp_path))).stdout
    assert out.index("✗ ptrace: uid 1000") < out.index("running job(s)") < out.index("Could not see")
    assert f"    fix: {PTRACE_FIX}\n" in out and FOLDED in out and "not allowed to read pid" not in out


@pytest.mark.cli
def test_hangs_markdown_and_json_carry_the_check_and_the_folded_view(tmp_path: Path) -> None:
    path = saved_with_failures(tmp_path)
    markdown = run("hangs", "--from", str(path), "--format", "markdown").stdout
    assert markdown.index("- ✗ **ptrace**: uid 1000") < markdown.index("running job(s)")
    assert f"  - fix: `{PTRACE_FIX}`" in markdown and FOLDED.replace("stacks:", "**stacks**:") in markdown
    report = json.loads(run("hangs", "--from", str(path), "--format", "json").stdout)
    assert [c["name"] for c in report["preflight"]] == ["ptrace"]
    assert report["snapshot"]["preflight"] == report["preflight"]
    assert len(report["errors"]) == 5 and [e["message"] for e in report["errors_folded"]] == [FOLDED[len("stacks: "):]]


@pytest.mark.cli
def test_stack_of_a_pid_shows_the_failed_check_too(tmp_path: Path) -> None:
    out = run("stack", "19307", "--from", str(saved_with_failures(tmp_path))).stdout
    assert out.index("✗ ptrace:") < out.index("running job(s)") and FOLDED in out


# --- for real: a user without ptrace ------------------------------------------------------------


def _collect_as_nobody(pids: list[int]) -> dict:
    """Fork, drop to nobody, sample ``pids`` the way ``rqdoctor stack PID`` does, hand the snapshot back."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # no pytest machinery from here on, always os._exit
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            from rqdoctor.collect import CollectOptions, collect
            from rqdoctor.config import discover

            target = discover(redis_url="redis://127.0.0.1:1/0", env={}, cwd=Path("/"), scan_processes=False)
            options = CollectOptions(timeout=20, stacks=True, samples=1, redis=False, stack_pids=pids)
            with os.fdopen(write, "w") as out:
                json.dump(collect(target, options).to_dict(), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the unprivileged collection failed"
    return json.loads(data)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_as_another_user_the_ptrace_check_leads_and_the_denials_are_one_line() -> None:
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        snapshot = Snapshot.from_dict(_collect_as_nobody([p.pid for p in sleepers]))
    finally:
        for p in sleepers:
            p.kill()
            p.wait(timeout=10)
    pids = sorted(p.pid for p in sleepers)
    (check,) = snapshot.preflight
    assert check.name == "ptrace" and check.status in (WARN, FAIL) and "uid 65534" in check.detail
    assert check.detail.endswith("denied for pid " + ", ".join(map(str, pids))) and check.fix
    denials = [e for e in snapshot.errors if e.probe == "stacks" and e.kind == "permission"]
    assert sorted(int(e.subject) for e in denials) == pids
    from rqdoctor.views import fold_errors

    assert [e.message for e in fold_errors(denials)] == [
        f"permission denied for 3 processes (pids {', '.join(str(p.pid) for p in sleepers)})"]
