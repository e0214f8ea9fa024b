"""The ``rqdoctor`` command line: Typer app, exit codes and the error boundary.

Exit codes (documented in docs/usage.md):

- 0: healthy, nothing of severity warning or worse found;
- 1: problems found (at least one finding of severity warning or critical);
- 2: could not diagnose (bad input, Redis unreachable, a saved snapshot that cannot be read…).
"""

from __future__ import annotations

import sys

import typer

from rqdoctor import __version__
from rqdoctor.commands import demo, hangs, locks, preflight, queues, stack, target, workers
from rqdoctor.commands.common import EXIT_CANNOT_DIAGNOSE
from rqdoctor.deadline import start_at_process_start
from rqdoctor.errors import RqdoctorError

app = typer.Typer(
    name="rqdoctor",
    help="A doctor for hung and stuck RQ workers, first of all on Frappe/ERPNext benches. Read-only.",
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


app.command("hangs")(hangs.command)
app.command("stack")(stack.command)
app.command("locks")(locks.command)
app.command("workers")(workers.command)
app.command("queues")(queues.command)
app.command("target")(target.command)
app.command("preflight")(preflight.command)
app.command("demo")(demo.command)


def main() -> None:
    """Console entry point: run the app (its deadline counting from the process start), known failures as one line."""
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
