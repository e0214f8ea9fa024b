"""The CLI's error behaviour, through the real console script: one clear line, exit 2, never a traceback, never late.

Every run uses its own bench (``--bench``) and an environment without Redis/Frappe variables, so
what other benches on this host are doing does not leak in. Unreachable services are real: a
port nobody listens on (a bound, non-listening socket holds it), and a tarpit that accepts
connections and never answers, served by a thread of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rqdoctor import __version__
from rqdoctor.cli import app

pytestmark = pytest.mark.cli  # runs the CLI or scenario processes: not the pure unit tier

SCRIPT = Path(sys.executable).with_name("rqdoctor")
COMMANDS = ["hangs", "stack", "locks", "workers", "queues", "target", "demo"]
SECRETS = ("TopSecretRedis9", "TopSecretDb7", "TopSecretAdmin5")
SLACK_S = 2.0
"""Slack on top of ``--timeout`` for the work after the deadline (rendering), plus twice a bare start-up."""


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    def assert_clean(self) -> None:
        """No traceback, no Python exception text, anywhere."""
        for text in (self.out, self.err):
            assert "Traceback" not in text and 'File "' not in text, text

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("rqdoctor: error:")]

    def assert_one_error_line(self, *needles: str) -> str:
        """stderr holds exactly one ``rqdoctor: error:`` line (plus an optional hint) naming ``needles``."""
        self.assert_clean()
        assert self.rc == 2, (self.rc, self.out, self.err)
        (line,) = self.error_lines()
        assert all(line.startswith("rqdoctor: ") for line in self.err.splitlines()), self.err
        assert len(self.err.splitlines()) <= 2, self.err
        for needle in needles:
            assert needle in line, (needle, line)
        return line


def clean_env() -> dict[str, str]:
    """This environment minus anything that would point rqdoctor elsewhere; wide, plain output."""
    drop = {"RQDOCTOR_REDIS_URL", "FRAPPE_REDIS_QUEUE", "RQ_REDIS_URL", "REDIS_URL", "FRAPPE_BENCH_ROOT"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FRAPPE_DB_")}
    return {**env, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}


def rqdoctor(*args: str, cwd: Path, timeout: float = 30.0, env: dict[str, str] | None = None) -> Run:
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def margin(cwd: Path) -> float:
    """How late a command may end after its ``--timeout``: slack plus twice a bare start-up measured now (load)."""
    return SLACK_S + 2 * rqdoctor("--version", cwd=cwd).seconds


def write_bench(root: Path, common: dict[str, Any], sites: dict[str, dict[str, Any]] | None = None) -> Path:
    (root / "sites").mkdir(parents=True)
    (root / "sites" / "common_site_config.json").write_text(json.dumps(common))
    for name, conf in (sites or {}).items():
        (root / "sites" / name).mkdir()
        (root / "sites" / name / "site_config.json").write_text(json.dumps(conf))
    return root


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A bench with no sites (so no database is probed unless a test asks for one)."""
    return write_bench(tmp_path / "frappe-bench", {"bench_id": "rqdtest"})


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening, so nobody else takes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def tarpit_port() -> Iterator[int]:
    """A local port that accepts connections and never sends a byte (served by a thread of this test)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, name="tarpit", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


# --- version and help --------------------------------------------------------------------------------------------

def test_version(tmp_path: Path) -> None:
    run = rqdoctor("--version", cwd=tmp_path)
    assert (run.rc, run.out.strip(), run.err) == (0, f"rqdoctor {__version__}", "")


def test_no_arguments_shows_help(tmp_path: Path) -> None:
    run = rqdoctor(cwd=tmp_path)
    run.assert_clean()
    assert all(command in run.out + run.err for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and command in result.output and "--help" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_help_through_the_console_script(tmp_path: Path) -> None:
    run = rqdoctor("hangs", "-h", cwd=tmp_path)
    assert run.rc == 0 and "--redis-url" in run.out and "--timeout" in run.out and run.err == ""


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    run = rqdoctor("hangs", "--no-such-option", cwd=tmp_path)
    run.assert_clean()
    assert run.rc == 2 and "No such option" in run.err


# --- rqdoctor target ----------------------------------------------------------------------------------------------

@pytest.fixture
def secret_bench(tmp_path: Path) -> Path:
    redis_secret, db_secret, _ = SECRETS
    return write_bench(tmp_path / "secret-bench",
                       {"redis_queue": f"redis://default:{redis_secret}@127.0.0.1:11000/0", "db_password": db_secret,
                        "workers": {"big": {"timeout": 7200}}},
                       {"site1.local": {"db_name": "_a1", "db_password": db_secret},
                        "site2.local": {"db_name": "_b2", "db_user": "b_user", "db_password": db_secret,
                                        "db_type": "postgres", "db_host": "10.0.0.9"}})


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_target_masks_every_password(tmp_path: Path, secret_bench: Path, fmt: str) -> None:
    admin = f"mysql://root:{SECRETS[2]}@127.0.0.1:3306/"
    run = rqdoctor("target", "--bench", str(secret_bench), "--db-url", admin, "--format", fmt, cwd=tmp_path)
    run.assert_clean()
    assert run.rc == 0 and run.err == ""
    for secret in SECRETS:
        assert secret not in run.out
    bench_id = str(secret_bench).strip("/").replace("/", "-")
    for shown in ("redis://default:***@127.0.0.1:11000/0", "site1.local", "site2.local", bench_id):
        assert shown in run.out, (shown, run.out)
    if fmt == "json":
        info = json.loads(run.out)
        assert info["redis_url"] == "redis://default:***@127.0.0.1:11000/0"
        assert info["bench_path"] == str(secret_bench) and info["bench_source"] == "--bench"
        assert info["queue_timeouts"] == {"short": 300, "default": 300, "long": 1500, "big": 7200}
        assert [s["db_user"] for s in info["sites"]] == ["_a1", "b_user"]
        assert info["db_urls"] == ["mysql://root:***@127.0.0.1:3306"]


def test_target_finds_the_bench_from_the_current_directory(secret_bench: Path) -> None:
    run = rqdoctor("target", "--format", "json", cwd=secret_bench / "sites" / "site1.local")
    assert run.rc == 0 and json.loads(run.out)["bench_source"] == "current directory"


# --- unreachable Redis --------------------------------------------------------------------------------------------

def could_not_see(run: Run, probe: str) -> str:
    """The report's "Could not see" line about ``probe``."""
    assert "Could not see" in run.out, run.out
    lines = [line.strip() for line in run.out.splitlines() if line.strip().startswith(f"{probe}:")]
    assert lines, run.out
    return lines[0]


REDIS_COMMANDS = [["hangs", "--no-db"], ["workers"], ["queues"], ["stack", str(os.getpid()), "--no-db"]]


@pytest.mark.parametrize("command", REDIS_COMMANDS, ids=lambda c: c[0])
def test_redis_refusing_connections(tmp_path: Path, bench: Path, refused_port: int, command: list[str]) -> None:
    url = f"redis://:{SECRETS[0]}@127.0.0.1:{refused_port}/0"
    run = rqdoctor(*command, "--bench", str(bench), "--redis-url", url, "--timeout", "5", cwd=tmp_path)
    line = run.assert_one_error_line(f"127.0.0.1:{refused_port}", "--redis-url")
    assert "refused" in line.lower() and run.out == "", (line, run.out)
    assert "no problems" not in run.out + run.err
    assert SECRETS[0] not in run.out + run.err
    assert run.seconds < 5 + margin(tmp_path)


def test_redis_refusing_connections_json(tmp_path: Path, bench: Path, refused_port: int) -> None:
    """JSON still gets its report (what failed, the target), plus the one error line and exit 2."""
    run = rqdoctor("hangs", "--bench", str(bench), "--redis-url", f"redis://127.0.0.1:{refused_port}",
                   "--no-db", "--format", "json", cwd=tmp_path)
    run.assert_one_error_line(f"127.0.0.1:{refused_port}")
    report = json.loads(run.out)
    (redis_error,) = [e for e in report["errors"] if e["probe"] == "redis"]
    assert redis_error["kind"] == "unreachable" and redis_error["hint"]
    assert report["target"]["redis_read"] is False and report["target"]["bench_source"] == "--bench"


def test_redis_unix_socket_missing(tmp_path: Path, bench: Path) -> None:
    run = rqdoctor("workers", "--bench", str(bench), "--redis-url", f"unix://{tmp_path}/no.sock?db=2", cwd=tmp_path)
    run.assert_one_error_line("no.sock")


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://127.0.0.1:port", "127.0.0.1:6379"])
def test_unusable_redis_url(tmp_path: Path, bench: Path, url: str) -> None:
    rqdoctor("workers", "--bench", str(bench), "--redis-url", url, cwd=tmp_path).assert_one_error_line("--redis-url")


def test_unusable_redis_url_in_the_environment(tmp_path: Path, bench: Path) -> None:
    env = {**clean_env(), "REDIS_URL": "localhost:6379"}
    run = rqdoctor("queues", "--bench", str(bench), cwd=tmp_path, env=env)
    run.assert_one_error_line("env REDIS_URL")


@pytest.mark.slow
@pytest.mark.parametrize(("command", "scheme"), [(["hangs", "--no-db"], "redis"), (["workers"], "redis"),
                                                  (["queues"], "rediss")], ids=["hangs", "workers", "queues-tls"])
def test_redis_tarpit_ends_within_the_timeout(tmp_path: Path, bench: Path, tarpit_port: int, command: list[str],
                                              scheme: str) -> None:
    run = rqdoctor(*command, "--bench", str(bench), "--redis-url", f"{scheme}://127.0.0.1:{tarpit_port}/0",
                   "--timeout", "3", cwd=tmp_path)
    run.assert_one_error_line(f"127.0.0.1:{tarpit_port}")
    assert run.seconds < 3 + margin(tmp_path), run.seconds


# --- unreachable databases (locks) --------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_locks_with_a_database_refusing_connections(tmp_path: Path, bench: Path, refused_port: int,
                                                    scheme: str) -> None:
    url = f"{scheme}://root:{SECRETS[2]}@127.0.0.1:{refused_port}/x"
    run = rqdoctor("locks", "--bench", str(bench), "--redis-url", f"redis://127.0.0.1:{refused_port}", "--db-url", url,
                   "--timeout", "5", cwd=tmp_path)
    run.assert_clean()
    assert run.rc == 2, (run.out, run.err)
    assert f"127.0.0.1:{refused_port}" in could_not_see(run, "database")
    assert SECRETS[2] not in run.out + run.err
    assert run.seconds < 5 + margin(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_locks_database_tarpit_ends_within_the_timeout(tmp_path: Path, bench: Path, refused_port: int,
                                                       tarpit_port: int, scheme: str) -> None:
    run = rqdoctor("locks", "--bench", str(bench), "--redis-url", f"redis://127.0.0.1:{refused_port}",
                   "--db-url", f"{scheme}://root@127.0.0.1:{tarpit_port}/x", "--timeout", "3", cwd=tmp_path)
    run.assert_clean()
    assert run.rc != 0, run.out
    assert run.seconds < 3 + margin(tmp_path), run.seconds
    assert f"127.0.0.1:{tarpit_port}" in could_not_see(run, "database")


# --- bench files that cannot be read ------------------------------------------------------------------------------

BENCH_COMMANDS = [["target"], ["hangs", "--no-db"], ["workers"], ["queues"], ["locks"], ["stack", "1"]]


@pytest.mark.parametrize("command", BENCH_COMMANDS, ids=lambda c: c[0])
def test_malformed_common_site_config(tmp_path: Path, bench: Path, command: list[str]) -> None:
    path = bench / "sites" / "common_site_config.json"
    path.write_text('{"redis_queue": "redis://127.0.0.1:11000",\n  "bench_id": }\n')
    run = rqdoctor(*command, "--bench", str(bench), cwd=tmp_path)
    line = run.assert_one_error_line(str(path), "malformed JSON", "line 2")
    assert run.out == "", line


@pytest.mark.parametrize(("command", "content", "why"), [
    (["hangs"], "{not json", "malformed JSON"),
    (["target"], '["a list"]', "expected a JSON object"),
    (["workers"], "", "malformed JSON"),
], ids=["hangs", "target", "workers"])
def test_malformed_site_config(tmp_path: Path, command: list[str], content: str, why: str) -> None:
    bench = write_bench(tmp_path / "b", {"bench_id": "rqdtest"}, {"s1.local": {"db_name": "_s1"}})
    path = bench / "sites" / "s1.local" / "site_config.json"
    path.write_text(content)
    rqdoctor(*command, "--bench", str(bench), cwd=tmp_path).assert_one_error_line(str(path), why)


def test_missing_bench(tmp_path: Path) -> None:
    run = rqdoctor("hangs", "--bench", str(tmp_path / "nowhere"), cwd=tmp_path)
    run.assert_one_error_line(str(tmp_path / "nowhere" / "sites" / "common_site_config.json"))


def test_bench_root_env_pointing_nowhere(tmp_path: Path) -> None:
    env = {**clean_env(), "FRAPPE_BENCH_ROOT": str(tmp_path / "nowhere")}
    rqdoctor("workers", cwd=tmp_path, env=env).assert_one_error_line("FRAPPE_BENCH_ROOT")


def test_bad_db_url(tmp_path: Path, bench: Path) -> None:
    run = rqdoctor("locks", "--bench", str(bench), "--db-url", f"oracle://sys:{SECRETS[2]}@h/x", cwd=tmp_path)
    run.assert_one_error_line("--db-url", "oracle")
    assert SECRETS[2] not in run.err


# --- saved snapshots that cannot be read (--from) -----------------------------------------------------------------

@pytest.fixture
def bad_snapshots(tmp_path: Path) -> dict[str, Path]:
    files = {"missing": tmp_path / "missing.json", "not-json": tmp_path / "garbage.json",
             "wrong-schema": tmp_path / "future.json", "not-object": tmp_path / "list.json",
             "wrong-shape": tmp_path / "shape.json", "directory": tmp_path / "adir"}
    files["not-json"].write_text("this is not JSON {")
    files["wrong-schema"].write_text(json.dumps({"schema_version": 99, "host": "h", "generated_at": 1}))
    files["not-object"].write_text("[1, 2]")
    files["wrong-shape"].write_text(json.dumps({"schema_version": 1, "host": "h", "generated_at": 1,
                                                "target": {"redis_url": "x", "redis_url_source": "y"},
                                                "processes": [{"pid": "not a number"}]}))
    files["directory"].mkdir()
    return files


FROM_CASES = [(["hangs"], "missing"), (["hangs"], "not-json"), (["hangs"], "wrong-schema"),
              (["hangs"], "not-object"), (["hangs"], "wrong-shape"), (["hangs"], "directory"),
              (["workers"], "wrong-schema"), (["queues"], "not-json"), (["locks"], "missing"),
              (["stack", "1"], "wrong-shape")]


@pytest.mark.parametrize(("command", "case"), FROM_CASES, ids=[f"{c[0]}-{k}" for c, k in FROM_CASES])
def test_from_an_unusable_file(tmp_path: Path, bad_snapshots: dict[str, Path], command: list[str],
                               case: str) -> None:
    path = bad_snapshots[case]
    run = rqdoctor(*command, "--from", str(path), cwd=tmp_path)
    line = run.assert_one_error_line(str(path))
    assert run.out == "", line
    if case == "wrong-schema":
        assert "schema_version 99" in line
    if case == "wrong-shape":
        assert "processes.pid" in line


def test_from_a_saved_report_round_trips(tmp_path: Path, bench: Path, refused_port: int) -> None:
    """A report saved with --format json (even one of a failed run) is read back by --from."""
    saved = tmp_path / "report.json"
    first = rqdoctor("hangs", "--bench", str(bench), "--redis-url", f"redis://127.0.0.1:{refused_port}", "--no-db",
                     "--format", "json", "--output", str(saved), cwd=tmp_path)
    assert first.rc == 2 and saved.is_file()
    again = rqdoctor("hangs", "--from", str(saved), "--format", "json", cwd=tmp_path)
    again.assert_one_error_line(f"127.0.0.1:{refused_port}")
    assert json.loads(again.out)["target"] == json.loads(saved.read_text())["target"]
    shutil.copy(saved, tmp_path / "copy.json")
    workers = rqdoctor("workers", "--from", str(tmp_path / "copy.json"), cwd=tmp_path)
    workers.assert_one_error_line(f"127.0.0.1:{refused_port}")


def test_stack_of_a_pid_that_does_not_exist(tmp_path: Path, bench: Path, redis_url: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    run = rqdoctor("stack", str(gone.pid), "--bench", str(bench), "--redis-url", redis_url, "--no-db", cwd=tmp_path)
    run.assert_one_error_line(f"no process {gone.pid}")


# --- interruption ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_ends_at_once_while_a_database_hangs(tmp_path: Path, bench: Path, refused_port: int,
                                                     tarpit_port: int) -> None:
    args = ["hangs", "--bench", str(bench), "--redis-url", f"redis://127.0.0.1:{refused_port}",
            "--db-url", f"mysql://root@127.0.0.1:{tarpit_port}/", "--timeout", "8"]
    proc = subprocess.Popen([str(SCRIPT), *args], cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait(10)
    Run(proc.returncode, out, err, 0).assert_clean()
    assert proc.returncode == 130 and time.monotonic() - start < 2.0
