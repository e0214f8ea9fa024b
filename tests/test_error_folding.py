"""Repeated errors of one kind fold into one line with a count and the pids, in text and Markdown."""

from __future__ import annotations

import io

from rich.console import Console

from rqdoctor.model import ProbeError
from rqdoctor.render import markdown as md
from rqdoctor.render import text
from rqdoctor.views import fold_errors

HINT = "run rqdoctor as root or as the workers' user"


def denied(pid: int, hint: str = HINT) -> ProbeError:
    return ProbeError("stacks", "permission", f"not allowed to read pid {pid}: Permission Denied: Try running "
                      "again with elevated permissions", hint, str(pid))


def plain(lines: list) -> str:
    console = Console(width=80, file=io.StringIO(), record=True, highlight=False)
    for line in lines:
        console.print(line, crop=False)
    return console.export_text()


def test_five_permission_errors_are_one_line_with_the_count_and_every_pid() -> None:
    (line,) = fold_errors([denied(p) for p in (101, 102, 103, 104, 105)])
    assert (line.probe, line.kind, line.hint) == ("stacks", "permission", HINT)
    assert line.message == "permission denied for 5 processes (pids 101, 102, 103, 104, 105)"
    assert line.subjects == ["101", "102", "103", "104", "105"]


def test_pid_subjects_of_both_shapes_fold_and_long_lists_are_cut() -> None:
    errors = [ProbeError("processes", "vanished", f"process {p} exited", subject=f"pid {p}") for p in range(1, 15)]
    (line,) = fold_errors(errors)
    assert line.message == "exited during the scan for 14 processes (pids 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 4 more)"
    assert len(line.subjects) == 14


def test_other_kinds_hints_and_probes_stay_apart_in_their_order() -> None:
    io_error = ProbeError("stacks", "permission", "cannot read /proc/7/io", "read /proc/<pid>/io as root", "7")
    redis = ProbeError("redis", "timeout", "Redis did not answer", "raise --timeout")
    errors = [redis, denied(1), io_error, denied(2), denied(3, hint="another hint"), io_error]
    lines = fold_errors(errors)
    assert [(e.probe, e.message) for e in lines] == [
        ("redis", "Redis did not answer"),
        ("stacks", "permission denied for 2 processes (pids 1, 2)"),
        ("stacks", "cannot read /proc/7/io"),  # twice about one pid: not "2 processes", kept together
        ("stacks", "cannot read /proc/7/io"),
        ("stacks", denied(3).message),
    ]


def test_a_single_error_and_errors_without_a_pid_are_kept_whole() -> None:
    errors = [denied(9), ProbeError("database", "auth", "access denied for root", "check the password", "mysql://")]
    assert [(e.message, e.subjects) for e in fold_errors(errors)] == [(denied(9).message, ["9"]),
                                                                       ("access denied for root", ["mysql://"])]


def test_text_and_markdown_show_the_folded_line() -> None:
    errors = [denied(p) for p in (101, 102, 103, 104, 105)]
    folded = plain(text.errors(errors))
    assert "stacks: permission denied for 5 processes (pids 101, 102, 103, 104, 105)" in folded
    assert folded.count("hint:") == 1 and "not allowed to read pid" not in folded
    markdown = md.errors(errors)
    assert "- **stacks**: permission denied for 5 processes (pids 101, 102, 103, 104, 105) _(hint: " in markdown
    assert markdown.count("\n- ") == 1


def test_the_summary_counts_folded_lines() -> None:
    line = text.summary("0 running job(s)", [], [denied(p) for p in (101, 102, 103, 104, 105)])
    assert "1 thing(s) could not be seen" in line.plain
