"""``rqdoctor preflight``: each check against the real host, and the pure decisions behind them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rqdoctor.commands.preflight import exit_code
from rqdoctor.preflight import FAIL, OK, WARN, Check, check_ptrace, interpreter_version, newest_readable
from tests.harness.bench import Bench
from tests.harness.workers import Workers, text_client, wait_for_worker_registered


def preflight(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, list[dict[str, object]]]]:
    run = subprocess.run([sys.executable, "-m", "rqdoctor", "preflight", "--format", "json", *args],
                         capture_output=True, text=True, timeout=60, cwd=cwd or "/",
                         env={"PATH": os.environ["PATH"], "COLUMNS": "80"})
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


def by_name(report: dict[str, list[dict[str, object]]], name: str) -> list[dict[str, object]]:
    return [c for c in report["checks"] if c["name"] == name]


@pytest.mark.parametrize(("version", "newest"), [((0, 3, 14), (3, 11)), ((0, 4, 0), (3, 13)), ((0, 4, 1), (3, 13)),
                                                 ((0, 4, 2), (3, 14)), ((0, 4, 3), (3, 14)), ((0, 2, 0), None)])
def test_which_python_each_py_spy_reads(version: tuple[int, ...], newest: tuple[int, int] | None) -> None:
    assert newest_readable(version) == newest


def test_exit_code_is_the_worst_check() -> None:
    assert exit_code([Check("a", OK, "")]) == 0
    assert exit_code([Check("a", OK, ""), Check("b", WARN, "")]) == 1
    assert exit_code([Check("a", WARN, ""), Check("b", FAIL, "")]) == 2


def test_ptrace_as_root_is_ok_here() -> None:
    if os.geteuid() != 0:
        pytest.skip("the suite runs as root on CI; this check is about root")
    assert check_ptrace().status == OK


def test_own_interpreter_version_is_read_from_proc() -> None:
    assert interpreter_version(os.getpid()) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_unreachable_redis_is_a_failed_line_and_exit_2() -> None:
    code, report = preflight("--redis-url", "redis://127.0.0.1:1/0", "--timeout", "5")
    (redis_check,) = by_name(report, "redis")
    assert code == 2 and redis_check["status"] == FAIL
    assert "127.0.0.1:1" in str(redis_check["detail"]) and redis_check["fix"]


def test_bench_workers_and_redis_are_reported(bench: Bench, workers: Workers, redis_url: str) -> None:
    worker = workers.frappe(bench, "rq115")
    wait_for_worker_registered(text_client(redis_url), worker)
    code, report = preflight(cwd=bench.sites_path)
    (bench_check,) = by_name(report, "bench")
    assert bench_check["status"] == OK and str(bench.root.resolve()) in str(bench_check["detail"])
    (redis_check,) = by_name(report, "redis")
    assert redis_check["status"] == OK and "1 RQ worker(s)" in str(redis_check["detail"])
    ours = f"Python {sys.version_info.major}.{sys.version_info.minor} "  # the rq venvs use this interpreter
    assert [c["status"] for c in by_name(report, "interpreters") if ours in str(c["detail"])] == [OK], report
    failed = {c["name"] for c in report["checks"] if c["status"] == FAIL}
    warned = any(c["status"] == WARN for c in report["checks"])
    assert failed <= {"databases"}, report  # the test sites have no databases
    assert code == (2 if failed else 1 if warned else 0)
