"""The renderers on one report document: golden outputs of a recorded snapshot (and of a hand-built one with
stuck work), the Markdown parsed by a real Markdown parser, the Jira markup checked (also of the ``stuck --kill``
report), and every renderer handling every block.

Regenerate the golden files after an intended change with ``RQDOCTOR_UPDATE_GOLDEN=1 pytest tests/test_renderers.py``
and read their diff.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from rqdoctor.actions.act import Result
from rqdoctor.actions.plan import build_plan
from rqdoctor.actions.report import KillReport, document
from rqdoctor.commands.common import load_snapshot, table_report
from rqdoctor.commands.hangs import report as hangs_report
from rqdoctor.commands.locks import locks_report
from rqdoctor.commands.options import Format
from rqdoctor.commands.stuck import report as stuck_report
from rqdoctor.diagnose.findings import Finding, Remedy
from rqdoctor.diagnose.rules_queues import TARGET_CODES
from rqdoctor.diagnose.rules_stuck import STUCK_CODES
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import FrappeState, QueueInfo, Snapshot
from rqdoctor.render import document as doc
from rqdoctor.render import jira, markdown
from rqdoctor.render.formats import RENDERERS, renderer
from rqdoctor.render.layout import TEXT, Col
from rqdoctor.render.tables import queues_blocks, workers_blocks
from rqdoctor.views import job_rows, queue_rows, worker_rows
from tests.test_stuck_rules import SITE, doc_lock, job, proc, snap, start_row, worker, zombie

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "snapshots" / "frappe-15.54.1-lockwait.json"
GOLDEN = DATA / "golden"
SUFFIX = {Format.text: "txt", Format.markdown: "md", Format.json: "json", Format.jira: "jira"}


def recorded_report(command: str = "hangs") -> doc.Report:
    """The command's report document on the recorded snapshot (``stuck``: :func:`stuck_snapshot`), diagnosed as
    the command does."""
    if command == "stuck":
        stuck = stuck_snapshot()
        return stuck_report(stuck, diagnose(stuck, codes=set(STUCK_CODES | TARGET_CODES)), None)
    snapshot = load_snapshot(RECORDED)
    if command == "hangs":
        diagnosis = diagnose(snapshot)
        return hangs_report("hangs", snapshot, diagnosis, job_rows(diagnosis), verbose=False)
    if command == "locks":
        return locks_report(snapshot, diagnose(snapshot, codes={"RQD4", *TARGET_CODES}))
    if command == "workers":
        diagnosis = diagnose(snapshot, codes={"RQD2", *TARGET_CODES})
        rows = worker_rows(diagnosis)
        return table_report("workers", snapshot, diagnosis, rows, workers_blocks(rows, "home-frappe-frappe-bench:",
                                                                                 verbose=False))
    diagnosis = diagnose(snapshot, codes={"RQD5"})
    rows = queue_rows(diagnosis)
    return table_report("queues", snapshot, diagnosis, rows, queues_blocks(rows, "home-frappe-frappe-bench:"))


def stuck_snapshot() -> Snapshot:
    """A bench with stuck work (the recorded one has none): a horse far past its timeout, a zombie scheduled-job
    hash, a document lock no job could be matched to and a Scheduled Job Log row left in Start."""
    return snap([worker(current_job="site1.local::j1")], [job(running=4000)], [proc(100), proc(101, ppid=100)],
                [QueueInfo("short")], scan=[zombie()],
                frappe=FrappeState(lock_dirs=[f"/b/sites/{SITE}/locks"], locks=[doc_lock()], job_log_sites=[SITE],
                                   job_log_rows=[start_row()], scheduled_methods={SITE: ["erpnext.tasks.daily"]}))


def rendered(report: doc.Report, fmt: Format, width: int = 100) -> str:
    buffer = io.StringIO()
    renderer(fmt)(report, Console(file=buffer, width=width, highlight=False, color_system=None, force_terminal=False))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
@pytest.mark.parametrize("command", ["hangs", "locks", "workers", "queues", "stuck"])
def test_golden_output_of_the_recorded_snapshot(command: str, fmt: Format) -> None:
    # GIVEN the recorded lock-wait bench's report WHEN rendered
    out = rendered(recorded_report(command), fmt)
    golden = GOLDEN / f"{command}.{SUFFIX[fmt]}"
    if os.environ.get("RQDOCTOR_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out, encoding="utf-8")
    # THEN it is exactly the reviewed output
    assert out == golden.read_text(encoding="utf-8")


def test_every_format_has_one_renderer() -> None:
    assert set(RENDERERS) == set(Format)


def test_markdown_structure_parsed_by_markdown_it() -> None:
    tokens = MarkdownIt("commonmark").enable("table").parse(rendered(recorded_report(), Format.markdown))
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["rqdoctor hangs", "Jobs", "Findings"]
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h1", "h2", "h2"]
    # the jobs table: its header cells, one row per job, job ids as code spans
    table = tokens[next(i for i, t in enumerate(tokens) if t.type == "table_open"):]
    header = [table[i + 1].content for i, t in enumerate(table) if t.type == "th_open"]
    assert header == ["severity", "job", "method", "site", "age", "pid", "waiting on", "findings"]
    assert sum(1 for t in table if t.type == "tr_open") == 1 + 2
    code = {c.content for t in tokens if t.type == "inline" for c in t.children or [] if c.type == "code_inline"}
    assert {"diag.localhost::lockwait", "diag.localhost::holdlock", "19307"} <= code
    # a <details> block per job, its stack a fence; the kill command a fence of its own, whole
    assert sum(1 for t in tokens if t.type == "html_block" and t.content.startswith("<details>")) == 2
    fences = [t for t in tokens if t.type == "fence"]
    assert any("lock_wait  hangjobs/hangjobs/jobs.py:19" in f.content for f in fences if f.info == "")
    assert any(f.info == "sh" and "KILL 83;" in f.content.splitlines() for f in fences)
    # no prose became emphasis or a link by accident
    assert not [t for t in tokens if t.type == "inline" for c in t.children or [] if c.type in ("em_open", "link_open")]


def test_jira_markup() -> None:
    out = rendered(recorded_report(), Format.jira)
    lines = out.splitlines()
    assert lines[0] == "h1. rqdoctor hangs"
    assert "h2. Jobs" in lines and "h2. Findings" in lines
    assert "||severity||job||method||site||age||pid||waiting on||findings||" in lines
    rows = [line for line in lines if line.startswith("|") and not line.startswith("||")]
    assert len(rows) == 2 and all(len(re.findall(r"(?<!\\)\|", r)) == 9 for r in rows)
    assert "{{diag.localhost::lockwait}}" in out
    assert "h3. diag.localhost::lockwait — hangjobs.jobs.lock\\_wait (diag.localhost)" not in out  # mid-word: as is
    assert "h3. diag.localhost::lockwait — hangjobs.jobs.lock_wait (diag.localhost)" in lines
    for macro in ("{noformat}", "{code:bash}"):
        assert out.count(macro) >= 1
    assert out.count("{noformat}") % 2 == 0 and out.count("{code:bash}") == out.count("{code}")
    assert "{code:bash}\nKILL 83;\n{code}" in out
    assert re.search(r"\{color:red\}\d+ critical\{color\}", out)


def test_stuck_report_has_its_coverage_and_json_keys() -> None:
    report = recorded_report("stuck")
    data = json.loads(rendered(report, Format.json))
    assert list(data)[5:8] == ["coverage", "older_than_s", "remedies"]
    assert [f["code"] for f in data["findings"]] == ["RQD101", "RQD304", "RQD306"]
    assert [r["action"] for r in data["remedies"]] == ["stop_horse", "clear_job_hash"]
    out = rendered(report, Format.jira)
    assert "* job hashes: 1 key(s) scanned (complete), 1 queued/started checked against their queues and registries" \
        in out.splitlines()
    assert "{code:bash}\nkill -KILL -101\n{code}" in out


def kill_report() -> KillReport:
    """A ``stuck --kill`` run from hand-made step results: one step done, one failed, one refused; a fresh look
    still finds one, and a stopped job left a lock file."""
    horse = Remedy("stop_horse", "hung 2 h past its timeout", host="vm", pid=4242, pgid=4242, create_time=1.0,
                   parent_pid=4000, parent_create_time=0.5, worker="w1", job_id="site1.local::j1", queue="q",
                   member="site1.local::j1")
    started = Remedy("fail_started", "its worker is dead", job_id="site1||j2", queue="q", member="site1||j2")
    ghost = Remedy("prune_worker", "no process, no connection", worker="ghost-1")
    steps = build_plan([Finding("RQD101", "critical", "t", "job site1.local::j1", remedy=horse),
                        Finding("RQD503", "critical", "t", "job site1||j2", remedy=started),
                        Finding("RQD202", "warning", "t", "worker ghost-1", remedy=ghost)], set(), "vm")
    results = [Result(steps[0], "done", "the horse ended; the job is failed",
                      [{"change": "SIGTERM", "result": "sent"}, {"change": "none", "result": "verified"}]),
               Result(steps[1], "failed", "the job was no longer in the started registry")]
    return KillReport(steps, results, rechecked=True, audit_path="/var/log/rqdoctor.jsonl", exit_code=4,
                      remaining=[Finding("RQD503", "critical", "t", "job site1||j2", remedy=started)],
                      leftovers=["RQD305 document lock site1.local/x: delete `/b/sites/site1.local/locks/x.lock`"])


def test_kill_report_jira_markup() -> None:
    # GIVEN a kill run's report WHEN rendered as Jira markup
    lines = rendered(document(kill_report()), Format.jira).splitlines()
    # THEN the plan is a numbered list, each action a heading with its changes, then what is left and the audit log
    assert lines[0] == "h1. rqdoctor stuck \\-\\-kill"
    assert [line for line in lines if line.startswith("h2. ")] == [
        "h2. Plan (3 steps)", "h2. Actions taken", "h2. Still to do after a fresh look",
        "h2. Left behind by the stopped jobs"]
    plan = [line for line in lines if line.startswith("# ")]
    assert len(plan) == 3 and plan[0].startswith("# stop work-horse pid 4242 of worker w1 running job site1.local::j1")
    assert plan[1].startswith("# move job site1\\|\\|j2 from the started registry of q to failed")
    assert plan[2].endswith("\\[refused: needs \\-\\-prune-ghosts\\]")
    assert [line.split(" — ")[0] for line in lines if line.startswith("h3. ")] == ["h3. 1. DONE", "h3. 2. FAILED"]
    assert "* SIGTERM: sent" in lines and not [line for line in lines if line.startswith("* none")]
    assert "* RQD503 job site1\\|\\|j2: its worker is dead" in lines
    assert "* RQD305 document lock site1.local/x: delete {{/b/sites/site1.local/locks/x.lock}}" in lines
    assert "* *audit log:* {{/var/log/rqdoctor.jsonl}}" in lines


def test_kill_report_text_keeps_the_plan_off_the_terminal_and_json_as_it_was() -> None:
    report = kill_report()
    out = rendered(document(report, with_plan=False), Format.text, width=80)
    assert "Plan" not in out and "── 1. DONE" in out.splitlines() and "── 2. FAILED" in out.splitlines()
    assert all(len(line) <= 80 for line in out.splitlines()), out
    data = json.loads(rendered(document(report), Format.json))
    assert list(data) == ["command", "dry_run", "exit_code", "plan", "actions", "rechecked", "remaining",
                          "leftovers", "audit_log"]
    assert data["command"] == "stuck --kill" and [a["result"] for a in data["actions"]] == ["done", "failed"]


def test_prose_markup_is_escaped() -> None:
    assert markdown.escape("a *b* <c> [d](e) _f_ g_h") == "a \\*b\\* \\<c\\> \\[d\\](e) \\_f\\_ g_h"
    assert jira.escape("x *y* {z} [a|b] -c- --all-queues well-known") == \
        "x \\*y\\* \\{z\\} \\[a\\|b\\] \\-c\\- \\-\\-all-queues well-known"
    assert markdown.code("a`b") == "``a`b``" and markdown.fenced(["```"]).startswith("````")
    assert jira.verbatim("noformat", ["{noformat}"]) == "{noformat}\n{noformat }\n{noformat}\n"


ALL_BLOCKS = (
    doc.Paragraph(("see ", doc.Code("rq:worker:x"))),
    doc.Items((("a",), ("b",)), level=1),
    doc.Items((("first step",), ("second step",)), numbered=True),
    doc.Facts((doc.Fact("host", ("vm",)),)),
    doc.Checks((doc.Check("failed", "redis", "cannot connect", ("rqdoctor target",)),)),
    doc.Table((Col("job", code=True), Col("note", TEXT)), (("j1", "waits"),), brief=True, tones=("critical",)),
    doc.Table((Col("worker"),), (("w1",), ("w2",)), limit=doc.Limit(0, lambda shown: f"{2 - shown} more")),
    doc.CodeBlock(("frame 1",), short=()),
    doc.Commands(("KILL 1;",)),
    doc.Details("job j1", "m (site)", (doc.Items((("fact",),)),), tone="warning"),
)


@pytest.mark.parametrize("fmt", [f for f in Format if f is not Format.json], ids=lambda f: f.value)
def test_every_renderer_renders_every_block(fmt: Format) -> None:
    report = doc.report("x", dict, summary="1 thing", sections=[doc.Section("All", ALL_BLOCKS)])
    out = rendered(report, fmt)
    for word in ("rq:worker:x", "host", "cannot connect", "j1", "w1", "KILL 1;", "job j1", "fact", "second step"):
        assert word in out, (word, out)


def test_json_renders_the_data_only_when_asked() -> None:
    calls = []
    report = doc.report("x", lambda: calls.append(1) or {"a": 1}, summary="s")
    rendered(report, Format.text)
    assert calls == []
    assert json.loads(rendered(report, Format.json)) == {"a": 1} and calls == [1]
