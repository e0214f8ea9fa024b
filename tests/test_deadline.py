"""One deadline for the whole run, counted from the process start, against Redis and database tarpits.

Every command runs through the console script against a :class:`~tests.harness.tarpits.Tarpit`
of each kind (silent, half a reply, a real server trickled a byte a second) for Redis, MariaDB
and PostgreSQL. Asserted: it ends within ``--timeout`` + :data:`MARGIN_S` of its start (a margin
that holds on a loaded 2-core machine; ``python -m benchmarks --only deadline`` prints the real
overshoot), with the partial report or the one error line, never a traceback. Then the progress
line on stderr: shown on a terminal and gone before the report, absent when stderr is a pipe.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from rqdoctor import deadline as deadline_module
from rqdoctor.config import DbTarget
from rqdoctor.deadline import Background, Deadline, process_age, start_at_process_start
from rqdoctor.model import ProbeError
from rqdoctor.probes.database import probe_groups
from tests.harness.tarpits import KINDS, Tarpit
from tests.test_cli_errors import SCRIPT, Run, clean_env, margin, write_bench

TIMEOUT_S = 4.0
MARGIN_S = 3.0
"""How late a run may end after its ``--timeout`` here, at least (the goal, measured by the benchmark, is 1 s);
more when a bare start-up measured beside it is slow (a loaded host: start-up counts against the deadline)."""
LOCKS_TIMEOUT = {"locks": 8.0}
"""``locks`` beside a Redis tarpit: long enough for the real database to be read on a loaded host."""
REDIS_READERS = ["hangs", "stack", "workers", "queues"]
DB_READERS = ["hangs", "stack", "locks", "preflight"]


# --- units -------------------------------------------------------------------------------------------------------

def test_process_age_matches_psutil() -> None:
    age = process_age()
    # psutil dates the start from /proc/stat's btime, whole seconds: up to 1 s off on its own
    assert abs(age - (time.time() - psutil.Process().create_time())) < 1.5
    assert age > 0


def test_for_run_counts_from_the_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline_module, "_run_start", None)
    assert Deadline.for_run(60).remaining() > 59  # not anchored: from now
    start_at_process_start()
    anchored = Deadline.for_run(60 + process_age())
    assert 59 < anchored.remaining() <= 60.05
    assert Deadline.for_run(process_age() - 1).expired()
    probes = anchored.for_probes()
    assert probes.seconds == anchored.seconds
    assert anchored.expires - probes.expires == pytest.approx(deadline_module.REPORT_RESERVE_S)


def test_background_result_error_and_abandon() -> None:
    assert Background(lambda: 42).result(5) == 42
    with pytest.raises(ValueError, match="boom"):
        Background(lambda: (_ for _ in ()).throw(ValueError("boom"))).result(5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        Background(lambda: time.sleep(30)).result(0.2)
    assert time.monotonic() - started < 2


def test_a_database_left_no_time_is_reported_not_skipped() -> None:
    target = DbTarget(kind="mariadb", port=1, user="u", source="--db-url")
    errors: list[ProbeError] = []
    state = probe_groups([[target]], Deadline(0), errors)
    assert state.servers == [] and [(e.kind, e.subject) for e in errors] == [("timeout", target.redacted())]
    assert "no time left before the 0 s deadline" in errors[0].message


# --- the CLI against tarpits -------------------------------------------------------------------------------------

@pytest.fixture
def empty_bench(tmp_path: Path) -> Path:
    """A bench with no sites: no database is probed unless a test passes --db-url."""
    return write_bench(tmp_path / "frappe-bench", {"bench_id": "rqdtest"})


@pytest.fixture
def python_sleeper() -> Iterator[int]:
    """A live Python process for ``stack PID``."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def run(args: list[str], cwd: Path) -> Run:
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S + 30, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def run_all(commands: dict[str, list[str]], cwd: Path, timeouts: dict[str, float] | None = None) -> dict[str, Run]:
    """Run the commands two at a time, with ``--timeout`` (TIMEOUT_S unless ``timeouts`` says; ``target`` has none)."""
    def timed(name: str, args: list[str]) -> list[str]:
        seconds = (timeouts or {}).get(name, TIMEOUT_S)
        return args if name == "target" else [*args, "--timeout", f"{seconds:g}"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, timed(name, args), cwd) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_in_time(runs: dict[str, Run], cwd: Path, timeouts: dict[str, float] | None = None) -> None:
    slack = max(MARGIN_S, margin(cwd))
    for name, done in runs.items():
        done.assert_clean()
        allowed = (timeouts or {}).get(name, TIMEOUT_S) + slack
        assert done.seconds < allowed, (name, done.seconds, allowed, done.out, done.err)


def could_not_see(done: Run, probe: str, needle: str) -> None:
    assert "Could not see" in done.out, done.out
    lines = [line.strip() for line in done.out.splitlines() if line.strip().startswith(f"{probe}:")]
    assert lines and needle in lines[0], (probe, needle, done.out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_command_against_a_redis_tarpit(tmp_path: Path, empty_bench: Path, redis_url: str, kind: str,
                                              python_sleeper: int) -> None:
    upstream = ("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    with Tarpit("redis", kind, upstream=upstream, lifetime=60) as pit:
        url, where = pit.url("0"), f"127.0.0.1:{pit.port}"
        base = ["--bench", str(empty_bench), "--redis-url", url]
        runs = run_all({
            "hangs": ["hangs", *base], "stack": ["stack", str(python_sleeper), *base, "--no-db"],
            "workers": ["workers", *base], "queues": ["queues", *base],
            "locks": ["locks", *base, "--db-url", "mysql://root@127.0.0.1:3306/"],
            "preflight": ["preflight", *base], "target": ["target", *base],
        }, tmp_path, LOCKS_TIMEOUT)
    assert_in_time(runs, tmp_path, LOCKS_TIMEOUT)
    for name in REDIS_READERS:  # Redis is essential: the one error line, exit 2
        line = runs[name].assert_one_error_line(where)
        assert runs[name].out == "" and ("no answer in time" in line or "no complete reply" in line), (name, line)
    assert runs["locks"].rc in (0, 1)
    could_not_see(runs["locks"], "redis", where)
    assert "database mysql://root@127.0.0.1:3306" in runs["locks"].out  # the database was still read
    assert runs["preflight"].rc == 2
    assert any(line.startswith("✗ redis:") and where in line for line in runs["preflight"].out.splitlines())
    assert runs["target"].rc == 0 and where in runs["target"].out


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("service", ["mariadb", "postgres"])
def test_every_database_reader_against_a_database_tarpit(tmp_path: Path, empty_bench: Path, redis_url: str,
                                                         service: str, kind: str, python_sleeper: int) -> None:
    with Tarpit(service, kind, lifetime=60) as pit:
        db_url, where = pit.url("postgres" if service == "postgres" else ""), f"127.0.0.1:{pit.port}"
        base = ["--bench", str(empty_bench), "--redis-url", redis_url, "--db-url", db_url]
        runs = run_all({"hangs": ["hangs", *base], "stack": ["stack", str(python_sleeper), *base],
                        "locks": ["locks", *base], "preflight": ["preflight", *base]}, tmp_path)
    assert_in_time(runs, tmp_path)
    for name in ("hangs", "stack", "locks"):  # the partial report says which server could not be read
        could_not_see(runs[name], "database", where)
        assert "redis:" in runs[name].out and "NOT READ" not in runs[name].out, runs[name].out  # Redis was read
    assert runs["hangs"].rc in (0, 1) and runs["locks"].rc == 2 and str(python_sleeper) in runs["stack"].out
    assert runs["preflight"].rc == 2
    assert any(line.startswith("✗ databases:") and where in line for line in runs["preflight"].out.splitlines())


@pytest.mark.slow
def test_json_report_of_a_redis_tarpit_records_the_timeout(tmp_path: Path, empty_bench: Path) -> None:
    with Tarpit("redis", "half", lifetime=60) as pit:
        done = run(["workers", "--bench", str(empty_bench), "--redis-url", pit.url("0"), "--format", "json",
                    "--timeout", f"{TIMEOUT_S:g}"], tmp_path)
    done.assert_one_error_line(f"127.0.0.1:{pit.port}")
    (error,) = [e for e in json.loads(done.out)["errors"] if e["probe"] == "redis"]
    assert error["kind"] == "timeout" and done.seconds < TIMEOUT_S + max(MARGIN_S, margin(tmp_path))


@pytest.mark.slow
def test_start_up_counts_against_the_deadline(tmp_path: Path, empty_bench: Path) -> None:
    """A process that spent 6 s before the command began, with --timeout 5, ends at once, not 5 s later.

    What is timed is the command itself (``main()``, lazy imports included), inside the process: counted from
    the command's start it would take at least 5 s; counted from the process's start, it has no time left.
    """
    took = tmp_path / "main-seconds"
    with Tarpit("redis", "silent", lifetime=60) as pit:
        code = ("import sys, time; time.sleep(6); from rqdoctor.cli import main; "
                f"sys.argv = ['rqdoctor', 'workers', '--bench', {str(empty_bench)!r}, '--redis-url', "
                f"{pit.url('0')!r}, '--timeout', '5']; start = time.monotonic()\n"
                "try:\n    main()\n"
                f"finally:\n    open({str(took)!r}, 'w').write(str(time.monotonic() - start))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
                              text=True, timeout=90)
    Run(proc.returncode, proc.stdout, proc.stderr, 0.0).assert_one_error_line(f"127.0.0.1:{pit.port}")
    assert float(took.read_text()) < 4.0, "counted from the command's start it would take 5 s or more"


# --- progress on stderr ------------------------------------------------------------------------------------------

def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run with stdout and stderr on one pty; everything the terminal received."""
    master, slave = pty.openpty()
    env = {**clean_env(), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([str(SCRIPT), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return rc, b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_is_gone_before_the_report(tmp_path: Path, empty_bench: Path, redis_url: str) -> None:
    rc, screen = on_a_terminal(["hangs", "--bench", str(empty_bench), "--redis-url", redis_url, "--no-db"], tmp_path)
    assert rc == 0, screen
    shown = [screen.rfind(text) for text in ("reading Redis…", "reading the processes…")]
    assert max(shown) >= 0, screen
    report = screen.index("host:")
    assert max(shown) < report, screen
    assert "\x1b[2K" in screen[max(shown):report], "the status line is erased before the report"
    assert "Traceback" not in screen


def test_no_progress_when_stderr_is_piped(tmp_path: Path, empty_bench: Path, redis_url: str,
                                          python_sleeper: int) -> None:
    done = run(["stack", str(python_sleeper), "--bench", str(empty_bench), "--redis-url", redis_url, "--no-db"],
               tmp_path)
    done.assert_clean()
    assert done.rc in (0, 1) and str(python_sleeper) in done.out
    assert done.err == "", done.err
    assert "…" not in done.out.split("host:")[0] and "reading" not in done.out
