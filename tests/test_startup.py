"""Start-up stays light: ``rqdoctor --help`` imports no subcommand; ``workers --help`` and ``queues --help`` no
probe, Redis, psutil, snapshot model, rule or renderer; a ``workers`` run no database driver, stack probe, scenario
or demo (``--from``: neither Redis nor a probe). Checked on ``sys.modules`` of a fresh interpreter."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rqdoctor.cli import COMMANDS

SNAPSHOT = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
RUN_AND_LIST = """
import contextlib, io, json, sys
sys.argv = ["rqdoctor", *sys.argv[1:]]
from rqdoctor.cli import main
try:
    with contextlib.redirect_stdout(io.StringIO()):
        main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""
NEVER = ("pymysql", "psycopg", "psycopg2", "rq", "rqdoctor.scenarios", "rqdoctor.demo", "rqdoctor.probes.stacks",
         "rqdoctor.probes.database", "rqdoctor.probes.db_mariadb", "rqdoctor.probes.db_postgres",
         "rqdoctor.preflight", "rqdoctor.commands.demo", "rqdoctor.commands.hangs")


def imported(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, cwd="/")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.cli
def test_help_imports_no_subcommand_probe_driver_or_scenario() -> None:
    modules = imported("--help")
    heavy = {"psutil", "redis", "rqdoctor.collect", "rqdoctor.config", "rqdoctor.diagnose", "rqdoctor.commands",
             "rqdoctor.model", *NEVER}
    assert not modules & heavy, sorted(modules & heavy)
    ours = {m for m in modules if m.startswith("rqdoctor")}
    assert ours == {"rqdoctor", "rqdoctor.cli", "rqdoctor.deadline", "rqdoctor.errors"}


@pytest.mark.cli
def test_a_workers_run_imports_no_driver_stack_probe_scenario_or_other_command() -> None:
    modules = imported("workers", "--from", str(SNAPSHOT))
    assert "rqdoctor.commands.workers" in modules  # it did run
    assert not modules & set(NEVER), sorted(modules & set(NEVER))


@pytest.mark.cli
@pytest.mark.parametrize("command", ["workers", "queues"])
def test_a_subcommand_s_help_imports_no_probe_redis_model_rule_or_renderer(command: str) -> None:
    modules = imported(command, "--help")
    assert f"rqdoctor.commands.{command}" in modules
    heavy = {"redis", "psutil", "rqdoctor.collect", "rqdoctor.config", "rqdoctor.model", "rqdoctor.diagnose",
             "rqdoctor.views", "rqdoctor.render", *NEVER}
    assert not modules & heavy, sorted(modules & heavy)


@pytest.mark.cli
def test_a_workers_run_from_a_snapshot_imports_neither_redis_nor_a_probe() -> None:
    modules = imported("workers", "--from", str(SNAPSHOT))
    heavy = {"redis", "rqdoctor.probes.processes", "rqdoctor.probes.redis_rq"}
    assert not modules & heavy, sorted(modules & heavy)


def test_the_command_list_says_what_each_command_s_docstring_says() -> None:
    for name, summary in COMMANDS.items():
        command = importlib.import_module(f"rqdoctor.commands.{name}").command
        assert inspect.getdoc(command).splitlines()[0] == summary, name
