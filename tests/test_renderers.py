"""The renderers on one report document: golden outputs of a recorded snapshot, the Markdown parsed by a real
Markdown parser, the Jira markup checked, and every renderer handling every block.

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

from rqdoctor.commands.common import load_snapshot
from rqdoctor.commands.hangs import report as hangs_report
from rqdoctor.commands.options import Format
from rqdoctor.diagnose.run import diagnose
from rqdoctor.render import document as doc
from rqdoctor.render import jira, markdown
from rqdoctor.render.formats import RENDERERS, renderer
from rqdoctor.render.layout import TEXT, Col
from rqdoctor.views import job_rows

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "snapshots" / "frappe-15.54.1-lockwait.json"
GOLDEN = DATA / "golden"
SUFFIX = {Format.text: "txt", Format.markdown: "md", Format.json: "json", Format.jira: "jira"}


def recorded_report() -> doc.Report:
    snapshot = load_snapshot(RECORDED)
    diagnosis = diagnose(snapshot)
    return hangs_report("hangs", snapshot, diagnosis, job_rows(diagnosis), verbose=False)


def rendered(report: doc.Report, fmt: Format, width: int = 100) -> str:
    buffer = io.StringIO()
    renderer(fmt)(report, Console(file=buffer, width=width, highlight=False, color_system=None, force_terminal=False))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_golden_output_of_the_recorded_snapshot(fmt: Format) -> None:
    # GIVEN the recorded lock-wait bench's hangs report WHEN rendered
    out = rendered(recorded_report(), fmt)
    golden = GOLDEN / f"hangs.{SUFFIX[fmt]}"
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


def test_prose_markup_is_escaped() -> None:
    assert markdown.escape("a *b* <c> [d](e) _f_ g_h") == "a \\*b\\* \\<c\\> \\[d\\](e) \\_f\\_ g_h"
    assert jira.escape("x *y* {z} [a|b] -c- --all-queues well-known") == \
        "x \\*y\\* \\{z\\} \\[a\\|b\\] \\-c\\- \\-\\-all-queues well-known"
    assert markdown.code("a`b") == "``a`b``" and markdown.fenced(["```"]).startswith("````")
    assert jira.verbatim("noformat", ["{noformat}"]) == "{noformat}\n{noformat }\n{noformat}\n"


ALL_BLOCKS = (
    doc.Paragraph(("see ", doc.Code("rq:worker:x"))),
    doc.Items((("a",), ("b",)), level=1),
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
    for word in ("rq:worker:x", "host", "cannot connect", "j1", "w1", "KILL 1;", "job j1", "fact"):
        assert word in out, (word, out)


def test_json_renders_the_data_only_when_asked() -> None:
    calls = []
    report = doc.report("x", lambda: calls.append(1) or {"a": 1}, summary="s")
    rendered(report, Format.text)
    assert calls == []
    assert json.loads(rendered(report, Format.json)) == {"a": 1} and calls == [1]
