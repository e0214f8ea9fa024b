"""``rqdoctor report``: the bundle's structure (Markdown parsed by markdown-it, Jira markup), its files' modes,
secrets that never reach it, and hosts masked consistently."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from rqdoctor.bundle import HostMasker, scrub

pytestmark = pytest.mark.cli

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
SECTIONS = ["Verdict", "Hung jobs", "Stuck jobs", "Lock waits", "Workers", "Queues", "Scheduler", "Recent failures",
            "Findings"]
SEEDED = ["SeededRedisPw9", "SeededCmdPw8", "SeededDescKey7", "SeededSqlPw6", "SeededLocal5"]


def rqdoctor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
                          cwd=cwd, preexec_fn=lambda: os.umask(0))  # files must be private whatever the umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_markdown_bundle_structure_and_modes(tmp_path: Path) -> None:
    # WHEN a bundle is written into a new directory
    run = rqdoctor("report", "--from", str(RECORDED), "--output", str(tmp_path / "b"), cwd=tmp_path)
    # THEN it exits 1 (problems found), says where it wrote, and everything is the owner's only
    assert run.returncode == 1, run.stderr
    assert run.stdout == "" and "report written to" in run.stderr and "sensitive" in run.stderr
    md_path, json_path = tmp_path / "b" / "report.md", tmp_path / "b" / "report.json"
    assert (mode(tmp_path / "b"), mode(md_path), mode(json_path)) == (0o700, 0o600, 0o600)
    md = md_path.read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    h2 = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    assert h2 == SECTIONS
    # the banner first, then the header: UTC time, host, version, severity counts
    first = next(i for i, t in enumerate(tokens) if t.type == "blockquote_open")
    assert "may contain sensitive data" in tokens[first + 2].content
    assert re.search(r"- \*\*generated:\*\* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", md)
    assert "- **rqdoctor:** " in md and "- **findings:** 2 critical, 0 warning, 1 info" in md
    # stacks folded, both graphs as Mermaid, the kill command whole in a block
    assert sum(1 for t in tokens if t.type == "html_block" and t.content.startswith("<details>")) == 2
    mermaid = [t.content for t in tokens if t.type == "fence" and t.info == "mermaid"]
    assert len(mermaid) == 2 and all(m.startswith("flowchart LR\n") for m in mermaid)
    assert 'j1["job diag.localhost::lockwait (critical)"] --> p1["pid 19307 (horse)"]' in mermaid[0]
    assert re.search(r's1 -->\|"waits: row diag_site.tabUser 11s"\| s2', mermaid[1])
    assert any(t.info == "sh" and "KILL 83;" in t.content for t in tokens if t.type == "fence")
    # the JSON beside it: the snapshot with its findings
    data = json.loads(json_path.read_text())
    assert data["command"] == "report" and data["snapshot"]["host"] == "vm"
    assert [f["code"] for f in data["findings"]] == ["RQD401", "RQD402", "RQD113"]
    assert {"jobs", "workers", "queues", "locks"} <= set(data)
    # and never overwritten
    again = rqdoctor("report", "--from", str(RECORDED), "--output", str(tmp_path / "b"), cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith(f"rqdoctor: error: {md_path}: already exists")
    assert md_path.read_text() == md


def test_jira_bundle_to_a_file(tmp_path: Path) -> None:
    run = rqdoctor("report", "--from", str(RECORDED), "--format", "jira", "-o", str(tmp_path / "t.jira"), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    jira = (tmp_path / "t.jira").read_text()
    assert mode(tmp_path / "t.jira") == 0o600 and mode(tmp_path / "t.json") == 0o600
    lines = jira.splitlines()
    assert lines[0] == "h1. rqdoctor report" and lines[2].startswith("{warning}This report may contain sensitive")
    assert [line[4:] for line in lines if line.startswith("h2. ")] == SECTIONS
    assert jira.count("{noformat}") % 2 == 0 and jira.count("{code:bash}") == jira.count("{code}")
    assert "{noformat}\nmermaid:\nflowchart LR" in jira
    tables = [line for line in lines if line.startswith("|")]
    assert tables and all(line.endswith("|") for line in tables)
    bad = rqdoctor("report", "--from", str(RECORDED), "--format", "text", "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 2 and not (tmp_path / "x").exists()


def seeded_snapshot(path: Path) -> Path:
    """The recorded bench with a secret in the Redis URL, a command line, a job, a query and a frame's locals."""
    data = json.loads(RECORDED.read_text())
    data["target"]["redis_url"] = f"redis://default:{SEEDED[0]}@10.20.30.40:6379/0"
    data["processes"][0]["cmdline"] = [*data["processes"][0]["cmdline"], f"--password={SEEDED[1]}"]
    data["redis"]["jobs"][0]["description"] = f"hangjobs.jobs.lock_wait(api_key='{SEEDED[2]}')"
    for session in data["database"]["sessions"]:
        session["query"] = f"SET PASSWORD FOR 'u'@'%' = PASSWORD('{SEEDED[3]}')"
    frame = data["stacks"][0]["samples"][0]["threads"][0]["frames"][0]
    frame["locals"] = {"secret": SEEDED[4]}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("fmt", ["markdown", "jira"])
@pytest.mark.parametrize("hosts", [False, True], ids=["hosts-shown", "redact-hosts"])
def test_seeded_secrets_never_reach_the_bundle(tmp_path: Path, fmt: str, hosts: bool) -> None:
    snapshot = seeded_snapshot(tmp_path / "seeded.json")
    args = ["report", "--from", str(snapshot), "-f", fmt, "-o", str(tmp_path / "b"), *(["--redact-hosts"] * hosts)]
    run = rqdoctor(*args, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    for path in (tmp_path / "b").iterdir():
        body = path.read_text()
        for secret in SEEDED:
            assert secret not in body, (secret, path.name)
        assert ("10.20.30.40" in body) is not hosts, path.name
        if hosts:
            assert not re.search(r"(?<![\w.-])vm(?![\w-])", body), path.name
            assert "diag.localhost" not in body


def test_redact_hosts_gives_one_token_per_name_everywhere(tmp_path: Path) -> None:
    run = rqdoctor("report", "--from", str(seeded_snapshot(tmp_path / "s.json")), "-o", str(tmp_path / "b"),
                   "--redact-hosts", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    md = (tmp_path / "b" / "report.md").read_text()
    data = json.loads((tmp_path / "b" / "report.json").read_text())
    host = data["snapshot"]["host"]
    assert re.fullmatch(r"host-\d+", host) and f"- **host:** `{host}`" in md
    assert data["snapshot"]["target"]["redis_url"] == "redis://default:***@ip-1:6379/0"
    assert "redis://default:\\*\\*\\*@ip-1:6379/0" in md or "redis://default:***@ip-1:6379/0" in md
    site = data["jobs"][0]["site"]
    assert re.fullmatch(r"site-\d+", site) and f"`{site}::lockwait`" in md
    assert "127.0.0.1" in md  # loopback identifies nothing: kept


@pytest.mark.unit
def test_host_masker_is_consistent_and_leaves_other_words() -> None:
    data: dict[str, Any] = {"host": "db1.corp", "workers": [{"hostname": "db1.corp"}, {"hostname": "web2"}],
                            "server": "mysql://u@10.0.0.5:3306", "note": "web2 talked to 10.0.0.5 and db1.corp.x"}
    masker = HostMasker(data)
    assert masker.tokens == {"db1.corp": "host-1", "web2": "host-2", "10.0.0.5": "ip-1"}
    masked = masker.value(data)
    assert masked["note"] == "host-2 talked to ip-1 and db1.corp.x"  # another name that only starts alike
    assert masked["server"] == "mysql://u@ip-1:3306" and masked["workers"][0]["hostname"] == "host-1"
    assert scrub({"a": ["x password=hunter2 y"]}) == {"a": ["x password='***' y"]}
