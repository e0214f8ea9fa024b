"""The ``rqdoctor`` command line: Typer app, exit codes and the error boundary.

Exit codes (documented in docs/usage.md):

- 0: healthy, nothing of severity warning or worse found;
- 1: problems found (at least one finding of severity warning or critical);
- 2: could not diagnose (bad input, Redis unreachable, a saved snapshot that cannot be read…).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
from typing import Any

import typer
from typer import _click
from typer.core import TyperCommand, TyperGroup

from rqdoctor import __version__
from rqdoctor.deadline import start_at_process_start
from rqdoctor.errors import RqdoctorError

EXIT_CANNOT_DIAGNOSE = 2
"""As ``rqdoctor.commands.common.EXIT_CANNOT_DIAGNOSE`` (not imported: it pulls in the whole pipeline)."""

COMMANDS = {
    "hangs": "Show every running job: its process, live stack, what it waits on, for how long, and the fix.",
    "stack": "Show one process or one job: its live stack, what it waits on, and the fix.",
    "locks": "Show who waits for whom in the databases (row and metadata locks, chains, cycles) and the fix.",
    "stuck": "Find the work that will never finish and, with --kill, end it safely and lose no job.",
    "scheduler": "Check the scheduler: its process and lock, each site's pause keys, skipped, stuck and failing jobs.",
    "workers": "List RQ workers with their local process, state, current job, heartbeat age and horse.",
    "queues": "List RQ queues: queued count, oldest queued age, registries and listening workers.",
    "target": "Show where rqdoctor looks: the bench, its Redis, its sites and databases, and where each came from.",
    "preflight": "Check py-spy, ptrace permission, the workers' Python versions, the bench, Redis and the databases.",
    "demo": "Run shipped hang scenarios on real RQ workers against a local Redis and show the `hangs` report.",
    "collect": "Gather this host's whole snapshot (what hangs, stuck, scheduler and report read) and write it as JSON.",
    "report": "Run every probe once and write a report bundle (Markdown or Jira, and its JSON) for a ticket.",
    "explain": "Print what a finding code means, why it happens and how to fix it (works offline).",
}
"""Subcommand -> the first line of its docstring (``rqdoctor.commands.<name>.command``; a test keeps them equal).

The list in ``--help`` is built from these, so that it imports no subcommand; each one is imported when run."""


class LazyGroup(TyperGroup):
    """The subcommands of :data:`COMMANDS`, each imported (with its probes, renderers, drivers) only when used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False
        self._loaded: dict[str, _click.Command] = {}

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self._listing and cmd_name not in self._loaded:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name])
        if cmd_name not in self._loaded:
            module = importlib.import_module(f"rqdoctor.commands.{cmd_name}")
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(cmd_name)(module.command)
            self._loaded[cmd_name] = typer.main.get_command(single)
        return self._loaded[cmd_name]

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="rqdoctor",
    cls=LazyGroup,
    help="A doctor for hung and stuck RQ workers, first of all on Frappe/ERPNext benches. "
    "Read-only, except `stuck --kill`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rqdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Diagnose hung RQ jobs: job -> process -> stack -> what it waits on -> the fix."""


def main() -> None:
    """Console entry point: run the app (its deadline counting from the process start), known failures as one line."""
    collecting = gc.isenabled()
    gc.disable()  # a run lasts seconds and makes few reference cycles (freed at exit); collections cost 5-10 %
    start_at_process_start()
    try:
        app(standalone_mode=True)
    except RqdoctorError as exc:
        print(f"rqdoctor: error: {exc.message}", file=sys.stderr)
        for detail in exc.details:
            print(f"rqdoctor:   {detail}", file=sys.stderr)
        if exc.hint:
            print(f"rqdoctor: hint: {exc.hint}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_DIAGNOSE)
    except KeyboardInterrupt:
        print("rqdoctor: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        if collecting:  # as it was for a caller in the same process (the fuzz tests)
            gc.enable()


atexit.register(gc.freeze)  # the interpreter's last collection skips what the run made: exit 0.06-0.1 s sooner
