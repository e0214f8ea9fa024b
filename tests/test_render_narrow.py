"""Text output at 60, 80 and 200 columns, into a pipe: identifiers stay whole tokens, commands whole lines.

Each command runs as a subprocess with ``COLUMNS`` set and stdout a pipe (rich then takes its width from
``COLUMNS``), on recorded snapshots (``--from``), on a snapshot with Frappe-length job ids and 7-digit pids,
and on one live bench. The identifiers and commands to look for come from the same command's JSON output.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from rqdoctor.render.layout import ID, TEXT, Col, Records, lines_of, one_line
from tests.harness.bench import Bench
from tests.harness.workers import Workers, enqueue, wait_for_job_started

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "snapshots" / "frappe-15.54.1-lockwait.json"
INCIDENT = DATA / "frappe-15.54.1-incident" / "hangs-site-account.json"
WIDTHS = (60, 80, 200)
LONG_IDS = {
    "diag.localhost::lockwait": "diag.localhost::scheduled_job::erpnext.accounts.doctype.payment_reconciliation."
                                "payment_reconciliation.reconcile_lock_wait",
    "diag.localhost::holdlock": "diag.localhost::scheduled_job::erpnext.stock.doctype.repost_item_valuation."
                                "repost_item_valuation.repost_entries",
}
PID_KEYS = {"pid", "ppid", "pgid", "sid", "os_thread_id", "client_pid", "child_pid"}
SEPARATORS = r"\s│┃╇━─|`,;()\[\]"


def rqdoctor(*args: str, columns: int) -> subprocess.CompletedProcess[str]:
    """The CLI into a pipe, with only ``COLUMNS`` to size it."""
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def long_ids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded bench with Frappe-length scheduled-job ids and 7-digit pids."""
    return long_snapshot(tmp_path_factory.mktemp("long-ids"))


def long_snapshot(tmp_path: Path) -> Path:
    """The recorded bench with Frappe-length scheduled-job ids and 7-digit pids, written to ``tmp_path``."""
    data = json.loads(RECORDED.read_text())
    known = {p["pid"] for p in data["processes"]} | {w["pid"] for w in data["redis"]["workers"]}

    def rewrite(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v, key) for v in node]
        if key in PID_KEYS and isinstance(node, int) and node in known:
            return node + 4_000_000
        if isinstance(node, str):
            return LONG_IDS.get(node, node)
        return node

    path = tmp_path / "long-ids.json"
    path.write_text(json.dumps(rewrite(data)))
    return path


def identifiers(command: str, report: dict[str, Any]) -> set[str]:
    """Every pid, job id, worker name and session id the command's JSON report shows."""
    ids: set[str] = set()
    for job in report.get("jobs", []):
        ids |= {str(job["job_id"]), str(job["pid"] or ""), str(job["worker"] or "")}
        ids |= {str(c["pid"]) for c in job["children"]}
    for w in report.get("workers", []):
        ids |= {w["name"], str(w["pid"] or ""), str(w["current_job"] or ""), str(w["horse_pid"] or "")}
    for lock in report.get("locks", []):
        for side in ("waiting", "blocker"):
            ids |= {str(lock[side]["session_id"]), str(lock[side]["job_id"] or lock[side]["pid"] or "")}
    for f in report["findings"]:
        ids.add(str(f["job_id"] or ""))
    ids.discard("")
    return {i for i in ids if not i.startswith("pid ")} | {i[4:] for i in ids if i.startswith("pid ")}


def tokens(line: str) -> list[tuple[int, str]]:
    """(column, token) of a line, split at spaces, box characters and punctuation no identifier ends with."""
    return [(m.start(), m.group()) for m in re.finditer(rf"[^{SEPARATORS}]+", line)]


def folds(out: str, ident: str) -> list[str]:
    """Places where ``ident`` was broken across lines: a line holds its head (at the end of the line, or in a
    table cell) and the next line its continuation (at the start, or in the same column)."""
    found = []
    lines = out.splitlines()
    for above, below in itertools.pairwise(lines):
        top, bottom = tokens(above), tokens(below)
        for column, head in top:
            if head == ident or not ident.startswith(head):
                continue
            rest = ident[len(head):]
            below_same = [t for c, t in bottom if c == column]
            below_first = [t for _, t in bottom[:1]] if (column, head) == top[-1] else []
            # the rest continues below (a one- or two-character token that merely starts the rest, such as a
            # count "1" under a count "1", is no fold: pid 11718 is not broken by "1 workers" / "1 worker")
            if any(t.startswith(rest) or (len(t) >= 3 and rest.startswith(t)) for t in below_same + below_first):
                found.append(f"{above!r} / {below!r}")
    return found


@pytest.mark.unit
def test_folds_finds_a_broken_id_and_not_a_count_under_a_count() -> None:
    assert folds("pid: 117\n18 more", "11718") and folds("job abcdef\nghij x", "abcdefghij")
    assert not folds("1 workers on redis://h:1/8\n1 worker on 1 host", "11718")


def assert_whole(out: str, ids: set[str], command: str, columns: int) -> None:
    """Each id occurs as a whole token, and is never broken across two lines (what folding does)."""
    where = f"rqdoctor {command} at COLUMNS={columns}:\n{out}"
    for ident in ids:
        assert re.search(rf"(?<![\w.:-]){re.escape(ident)}(?![\w.-]|:\S)", out), f"{ident!r} not whole in {where}"
        assert not folds(out, ident), f"{ident!r} broken at {folds(out, ident)} in {where}"


def assert_commands(out: str, report: dict[str, Any], where: str) -> None:
    """Every command of every finding is one whole line of the output."""
    lines = {line.strip() for line in out.splitlines()}
    for f in report["findings"]:
        for c in f["commands"]:
            assert c in lines, f"command {c!r} of {f['code']} not on a line of its own in {where}:\n{out}"


def assert_fits(out: str, report: dict[str, Any], columns: int) -> None:
    """Only a command, or a line holding an identifier too long for it, runs past the width; tables never do."""
    commands = {c for f in report["findings"] for c in f["commands"]}
    for line in out.splitlines():
        if len(line) <= columns:
            continue
        assert not set(line) & set("│┃━"), f"table wider than {columns}:\n{out}"
        assert line.strip() in commands or max(map(len, line.split())) > columns // 2, \
            f"line of {len(line)} > {columns} columns: {line!r}\n{out}"


@functools.cache
def json_report(args: tuple[str, ...], snapshot: Path) -> dict[str, Any]:
    """The command's JSON report (width-independent, so run once per snapshot)."""
    return json.loads(rqdoctor(*args, "--from", str(snapshot), "--format", "json", columns=200).stdout)


def check(args: list[str], columns: int, snapshot: Path) -> tuple[str, dict[str, Any]]:
    """Run ``args`` as text and as JSON on ``snapshot``; check tokens, commands and width; return both."""
    text = rqdoctor(*args, "--from", str(snapshot), columns=columns)
    report = json_report(tuple(args), snapshot)
    assert text.returncode in (0, 1), text.stderr
    assert "Traceback" not in text.stderr
    command = " ".join(args)
    assert_whole(text.stdout, identifiers(command, report), command, columns)
    assert_commands(text.stdout, report, f"{command} at {columns}")
    assert_fits(text.stdout, report, columns)
    return text.stdout, report


COMMANDS = [["hangs"], ["workers"], ["queues"], ["locks"], ["stack", "diag.localhost::lockwait"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("columns", [80])
def test_recorded_snapshot_keeps_ids_and_commands_whole(args: list[str], columns: int) -> None:
    check(args, columns, RECORDED)


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("args", [a if a[0] != "stack" else ["stack", LONG_IDS[a[1]]] for a in COMMANDS],
                         ids=lambda a: a[0])
def test_frappe_length_ids_and_7_digit_pids_stay_whole(args: list[str], columns: int, long_ids: Path) -> None:
    out, _ = check(args, columns, long_ids)
    if args[0] in ("hangs", "stack"):
        assert "4019307" in out and LONG_IDS["diag.localhost::lockwait"] in out


@pytest.mark.parametrize(("command", "columns"), [("hangs", 60), ("hangs", 80), ("workers", 80), ("workers", 200),
                                                 ("locks", 80)])
def test_incident_pid_17432_is_never_folded(command: str, columns: int) -> None:
    out, _ = check([command], columns, INCIDENT)
    if command == "workers":
        assert re.search(r"(?<!\d)17432(?!\d)", out) and not re.search(r"(?m)(?<!\d)1743\s*$", out), out


@pytest.mark.parametrize("columns", WIDTHS)
def test_stuck_keeps_ids_and_commands_whole(columns: int, tmp_path: Path) -> None:
    from tests.test_renderers import stuck_snapshot

    saved = tmp_path / "stuck.json"
    saved.write_text(json.dumps(stuck_snapshot().to_dict()))
    out, report = check(["stuck"], columns, saved)
    assert [f["code"] for f in report["findings"]] == ["RQD101", "RQD304", "RQD306"]
    assert "site1.local::scheduled_job::erpnext.tasks.daily" in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_hangs_opens_with_one_whole_line_per_job(columns: int, long_ids: Path) -> None:
    # GIVEN the incident's 7 jobs and the long-id bench
    for snapshot in (INCIDENT, long_ids):
        out, report = check(["hangs"], columns, snapshot)
        lines = out.splitlines()
        # THEN the summary comes before any job's details, one line per job, each with its id and pid
        start = lines.index("Jobs") + 2
        summary = lines[start:start + len(report["jobs"])]
        for job, line in zip(report["jobs"], summary, strict=True):
            tokens = re.split(r"\s+", line.strip())
            assert job["job_id"] in tokens and str(job["pid"]) in tokens, f"{job['job_id']} not in {line!r}"
            assert len(line) <= columns or len(job["job_id"]) + 20 > columns, line
        first_detail = next(i for i, line in enumerate(lines) if line.startswith("── "))
        assert start + len(report["jobs"]) <= first_detail < lines.index("Findings")


def test_workers_layout_narrows_by_width() -> None:
    wide = rqdoctor("workers", "--from", str(RECORDED), columns=200).stdout
    mid = rqdoctor("workers", "--from", str(RECORDED), columns=100).stdout
    narrow = rqdoctor("workers", "--from", str(RECORDED), columns=80).stdout
    assert "supervisor" in wide and "hidden" not in wide
    assert "supervisor hidden at 100 columns" in " ".join(mid.split()) and "│" in mid
    assert "│" not in narrow and "\nworker 265fc20cbe22415cb480a89bf0e4445e\n" in narrow
    assert "  current job: diag.localhost::lockwait" in narrow


def test_markdown_keeps_ids_in_code_and_commands_in_blocks(long_ids: Path) -> None:
    for command in ("hangs", "locks", "workers"):
        md = rqdoctor(command, "--from", str(long_ids), "--format", "markdown", columns=80).stdout
        report = json_report((command,), long_ids)
        assert f"`{LONG_IDS['diag.localhost::lockwait']}`" in md
        for f in report["findings"]:
            for c in f["commands"]:
                assert f"\n    {c}\n" in md, (c, md)
        pipes = [len(re.findall(r"(?<!\\)\|", line)) if line.startswith("|") else 0 for line in md.splitlines()]
        for before, after in itertools.pairwise(pipes):
            assert not (before and after) or before == after, f"a row with a stray pipe in:\n{md}"


# --- pure units of the layout --------------------------------------------------------------------------------


def render(renderable: Any, width: int) -> str:
    console = Console(width=width, file=open("/dev/null", "w"), record=True, highlight=False)  # noqa: SIM115
    console.print(renderable, crop=False)
    return console.export_text()


def test_records_drop_columns_then_stack() -> None:
    cols = [Col("job"), Col("pid"), Col("host", drop=1), Col("note", TEXT)]
    rows = [["site.example.com::scheduled_job::x", "1234567", "vm", "waits for a row lock on tabUser"]]
    assert "host" in render(Records(cols, rows), 120).splitlines()[0]
    mid = render(Records(cols, rows), 64)
    assert "host" not in mid.splitlines()[0] and "(host hidden at 64 columns" in mid
    narrow = render(Records(cols, rows), 40)
    assert narrow.splitlines()[:3] == ["job site.example.com::scheduled_job::x", "  pid: 1234567   host: vm",
                                       "  note: waits for a row lock on tabUser"]
    assert Col("x").kind == ID


def test_wrapping_never_splits_a_word() -> None:
    text = "kill advice for site.example.com::scheduled_job::erpnext.accounts.doctype.x now"
    lines = [str(line) for line in lines_of(text, 20, indent=2, hang=4)]
    assert lines == ["  kill advice for", "    site.example.com::scheduled_job::erpnext.accounts.doctype.x",
                     "    now"]


def test_one_line_cuts_only_the_free_text() -> None:
    assert one_line(["critical", "a::b", "17432"], "waiting for HTTP response", 32) == "critical  a::b  17432  waiting…"
    assert one_line(["critical", "a::b", "17432"], "waiting", 24) == "critical  a::b  17432"


def test_commands_are_never_wrapped_or_cropped() -> None:
    from rqdoctor.diagnose.findings import Finding
    from rqdoctor.render.document import FindingItem
    from rqdoctor.render.text import finding

    cmd = "redis-cli -h 127.0.0.1 -p 11000 DEL rq:worker:site.example.com::scheduled_job::erpnext.accounts.x"
    f = Finding("RQD202", "warning", "Ghost", "worker w", ["e " * 50], "fix " * 40, [cmd, "KILL 83;"])
    for width in (40, 80, 200):
        lines = render(finding(FindingItem.of(f)), width).splitlines()
        assert f"      {cmd}" in lines and "      KILL 83;" in lines


# --- a live bench ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_live_bench_at_80_columns(bench: Bench, workers: Workers, redis_client: redis.Redis) -> None:
    # GIVEN a real worker running a Frappe scheduled job with a long id
    worker = workers.frappe(bench, "rq115", ["long"])
    job = enqueue("rq115", bench.redis_url, f"{bench.bench_id}:long", "rqdoctor.scenarios.sleep_for",
                  {"seconds": 120}, job_id="scheduled_job::erpnext.accounts.doctype.payment_reconciliation."
                  "payment_reconciliation.reconcile_all_long_running_entries")
    wait_for_job_started(redis_client, job, worker)
    time.sleep(2)  # past --min-age, so that the text and the JSON run judge it alike
    args = ("--bench", str(bench.root), "--samples", "2", "--interval", "0.2", "--min-age", "1")
    for command in ("hangs", "workers"):
        # WHEN it is diagnosed into a pipe at 80 columns
        text = rqdoctor(command, *args[: 2 if command == "workers" else None], columns=80)
        report = json.loads(rqdoctor(command, *args[: 2 if command == "workers" else None], "--format", "json",
                                     columns=80).stdout)
        # THEN every pid and job id is whole, every command a line, nothing but commands runs past 80
        assert text.returncode in (0, 1), text.stderr
        ids = identifiers(command, report)
        assert job in ids and (command == "hangs" or str(worker.pid) in ids)
        assert_whole(text.stdout, ids, command, 80)
        assert_commands(text.stdout, report, f"live {command}")
        assert_fits(text.stdout, report, 80)
