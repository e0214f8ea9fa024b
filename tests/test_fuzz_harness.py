"""The fuzz modules' shared runner: the real entry point (``rqdoctor.cli.main``) in this process, checked.

Running in-process keeps hundreds of generated runs inside a minute on two loaded cores; the few
subprocess runs of the fuzz modules check that the console script behaves the same. The tests here
check the runner itself: it captures exit code, stdout and stderr, and it turns a traceback into a
failure instead of swallowing it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

from rqdoctor import cli

pytestmark = pytest.mark.cli

FORMATS = ("text", "markdown", "json")
READ_ONLY = ("hangs", "stack", "locks", "workers", "queues", "target", "preflight")
CLEARED_ENV = ("RQDOCTOR_", "FRAPPE_", "RQ_", "REDIS_URL")
"""Prefixes of variables dropped from every run's environment, so nothing on this host points it elsewhere."""


@dataclass
class Outcome:
    """One finished in-process run."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    crash: str = ""
    """The traceback of an exception that escaped ``main()`` (empty when none did)."""

    def __str__(self) -> str:
        return (f"rqdoctor {' '.join(self.argv)} -> exit {self.code}\n{self.crash}"
                f"stderr: {self.stderr[-2000:]}\nstdout: {self.stdout[:3000]}")

    @property
    def fmt(self) -> str:
        return next((self.argv[i + 1] for i, a in enumerate(self.argv[:-1]) if a in ("--format", "-f")), "text")

    def check(self) -> dict[str, Any] | None:
        """The house rules of every read-only run; the parsed JSON report when there is one."""
        assert not self.crash, str(self)
        assert self.code in (0, 1, 2), str(self)
        for text in (self.stdout, self.stderr):
            assert "Traceback" not in text, str(self)
        if self.stdout.strip() == "":
            # nothing written: the command failed before any report, with its error line on stderr
            assert self.code == 2, str(self)
            lines = self.stderr.splitlines()
            assert lines and lines[0].startswith("rqdoctor: error: "), str(self)
            assert all(line.startswith("rqdoctor: ") for line in lines), str(self)
            return None
        if self.fmt != "json":
            return None
        try:
            report = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON ({exc}): {self}") from None
        assert isinstance(report, dict), str(self)
        return report


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_ENV)}
    return {**env, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "100", **(extra or {})}


def run(*argv: str, env: Mapping[str, str] | None = None) -> Outcome:
    """``rqdoctor ARGV`` through ``cli.main`` in this process, with ``env`` as the whole environment."""
    out, err = io.StringIO(), io.StringIO()
    code, crash = 0, ""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, clean_env(env), clear=True))
        stack.enter_context(mock.patch.object(sys, "argv", ["rqdoctor", *argv]))
        if hasattr(cli, "start_at_process_start"):  # this process started long ago: count from each run's start
            stack.enter_context(mock.patch.object(cli, "start_at_process_start", lambda: None))
        stack.enter_context(redirect_stdout(out))
        stack.enter_context(redirect_stderr(err))
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except BaseException:
            crash = traceback.format_exc()
            code = -1
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), crash)


@contextmanager
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_runner_reports_exit_code_and_output() -> None:
    version = run("--version")
    assert version.code == 0 and version.stdout.startswith("rqdoctor ") and not version.crash


def test_runner_reports_the_one_error_line() -> None:
    with refused_port() as port:
        outcome = run("workers", "--redis-url", f"redis://127.0.0.1:{port}/0", "--timeout", "2")
    assert outcome.check() is None and "cannot connect" in outcome.stderr, outcome


def test_runner_catches_a_traceback() -> None:
    with mock.patch("rqdoctor.commands.target.discover", side_effect=KeyError("boom")):
        outcome = run("target", "--redis-url", "redis://127.0.0.1:1/0")
    assert "KeyError: 'boom'" in outcome.crash
    with pytest.raises(AssertionError):
        outcome.check()
