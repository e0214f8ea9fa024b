"""``stuck --kill`` pure parts: the plan, static refusals, the audit line format, the flow's refusals."""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path

import pytest

from rqdoctor.actions import flow
from rqdoctor.actions.audit import default_path, open_log
from rqdoctor.actions.flow import EXIT_CANNOT_DIAGNOSE, EXIT_DONE, EXIT_PLANNED, EXIT_REFUSED, KillOptions, run_kill
from rqdoctor.actions.identity import static_refusal
from rqdoctor.actions.plan import build_plan, describe
from rqdoctor.actions.redis_moves import _glob_escape, exc_text
from rqdoctor.commands.options import Format
from rqdoctor.diagnose.findings import Finding, Remedy
from rqdoctor.model import RedisState, Snapshot, TargetInfo

pytestmark = pytest.mark.unit
HOST = "here"
NOW = 1_800_000_000.0


def finding(remedy: Remedy | None, code: str = "RQD101", subject: str = "job j1") -> Finding:
    return Finding(code, "critical", "title", subject, remedy=remedy)


def horse(pid: int = 4242, **kw: object) -> Remedy:
    fields: dict[str, object] = dict(host=HOST, pid=pid, pgid=pid, create_time=NOW, parent_pid=4000,
                                     parent_create_time=NOW - 10, worker="w1", job_id="j1", queue="q", member="j1")
    fields.update(kw)
    return Remedy("stop_horse", "hung 2 h past its timeout", **fields)  # type: ignore[arg-type]


def test_plan_orders_signals_first_and_deduplicates() -> None:
    steps = build_plan([
        finding(Remedy("prune_worker", "ghost", worker="g1", needs="--prune-ghosts"), "RQD202", "worker g1"),
        finding(Remedy("fail_started", "no process", host=HOST, job_id="j2", queue="q", member="j2"), "RQD503"),
        finding(horse()),
        finding(horse(), "RQD107"),
        finding(Remedy("clear_job_hash", "zombie", job_id="j3", queue="q"), "RQD5xx"),
    ], {"--prune-ghosts"}, HOST)
    assert [s.action for s in steps] == ["stop_horse", "fail_started", "clear_job_hash", "prune_worker"]
    assert steps[0].also == ["RQD107"]
    assert not any(s.refused for s in steps)


def test_plan_refuses_what_needs_a_flag_not_given() -> None:
    worker_remedy = horse(needs="--kill-worker")
    worker_remedy.action = "stop_worker"
    steps = build_plan([finding(worker_remedy), finding(Remedy("prune_worker", "ghost", worker="g1"), "RQD202")],
                       set(), HOST)
    assert [(s.action, s.refused) for s in steps] == [("stop_worker", "needs --kill-worker"),
                                                     ("prune_worker", "needs --prune-ghosts")]


def test_plan_ignores_advice_and_findings_without_remedy() -> None:
    steps = build_plan([finding(None), finding(Remedy("restart_bench", "advice only"))], set(), HOST)
    assert steps == []


@pytest.mark.parametrize(("changes", "why"), [
    ({"pid": None}, "no process identity"),
    ({"create_time": None}, "no process identity"),
    ({"pid": 1}, "init, rqdoctor or its parent"),
    ({"pid": os.getpid()}, "init, rqdoctor or its parent"),
    ({"pid": os.getppid()}, "init, rqdoctor or its parent"),
    ({"host": "elsewhere"}, "not this host"),
])
def test_signals_refused_without_a_verifiable_local_identity(changes: dict[str, object], why: str) -> None:
    remedy = horse(**changes)
    assert why in (static_refusal(remedy, HOST) or "")
    (step,) = build_plan([finding(remedy)], {"--kill-worker"}, HOST)
    assert why in (step.refused or "")


def test_signal_step_covers_the_same_jobs_redis_step() -> None:
    orphan = Remedy("stop_orphan", "orphan", host=HOST, pid=77, pgid=77, create_time=NOW, job_id="j1", queue="q",
                    member="j1")
    steps = build_plan([finding(orphan, "RQD110"),
                        finding(Remedy("fail_started", "x", job_id="j1", queue="q", member="j1"), "RQD503")],
                       set(), HOST)
    assert [(s.action, s.also) for s in steps] == [("stop_orphan", ["RQD503"])]
    assert "moved to failed" in describe(steps[0], 10, False)
    assert "moved to its queue" in describe(steps[0], 10, True)


def test_audit_log_is_private_json_lines_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rqdoctor" / "audit.jsonl"
    log = open_log(path, HOST)
    log.write({"action": "stop_horse", "evidence": "job kwargs password='hunter2'", "change": "SIGTERM",
               "result": "sent"})
    log.write({"action": "fail_started", "evidence": "redis://:s3cret@h:6379/0 unreachable", "result": "done"})
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [list(line)[:3] for line in lines] == [["time", "user", "host"]] * 2
    assert lines[0]["host"] == HOST and lines[0]["result"] == "sent"
    text = path.read_text()
    assert "hunter2" not in text and "s3cret" not in text


def test_audit_default_path_follows_xdg_state_home(tmp_path: Path) -> None:
    assert default_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "rqdoctor" / "audit.jsonl"
    assert default_path({}) == Path.home() / ".local" / "state" / "rqdoctor" / "audit.jsonl"
    assert default_path({"XDG_STATE_HOME": "relative"}) == Path.home() / ".local" / "state" / "rqdoctor" / "audit.jsonl"


def test_exc_info_names_rqdoctor_and_the_reason() -> None:
    text = exc_text("its worker died 2 h ago", NOW, "ops")
    assert text.startswith("Moved to FailedJobRegistry by rqdoctor") and "its worker died 2 h ago" in text
    assert zlib.decompress(zlib.compress(text.encode())).decode() == text


def test_glob_escape_keeps_frappe_ids_literal() -> None:
    assert _glob_escape(b"site1.local::scheduled_job::a.b[1]*?") == b"site1.local::scheduled_job::a.b\\[1\\]\\*\\?"


def snapshot(redis: bool = True) -> Snapshot:
    return Snapshot(host=HOST, generated_at=NOW, target=TargetInfo("redis://127.0.0.1:1/0", "test"),
                    redis=RedisState(server_time=NOW) if redis else None)


def test_no_redis_plans_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    code = run_kill(snapshot(redis=False), [finding(horse())], KillOptions(yes=True, audit_log=audit))
    assert code == EXIT_CANNOT_DIAGNOSE
    assert "nothing signalled" in capsys.readouterr().err
    assert not audit.exists()


def test_nothing_to_do_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_kill(snapshot(), [finding(None)], KillOptions(yes=True, audit_log=tmp_path / "a")) == EXIT_DONE
    assert "nothing to do" in capsys.readouterr().out


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remedy = Remedy("fail_started", "its worker is dead", host=HOST, job_id="j1", queue="q", member="j1")
    code = run_kill(snapshot(), [finding(remedy, "RQD503")], KillOptions(dry_run=True, audit_log=tmp_path / "a"))
    assert code == EXIT_PLANNED
    out = capsys.readouterr().out
    assert "Plan (1 step)" in out and "move job j1 from the started registry of q to failed" in out
    assert not (tmp_path / "a").exists()


def test_non_terminal_without_yes_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "_is_terminal", lambda: False)
    remedy = Remedy("fail_started", "its worker is dead", host=HOST, job_id="j1", queue="q", member="j1")
    code = run_kill(snapshot(), [finding(remedy, "RQD503")], KillOptions(audit_log=tmp_path / "a"))
    assert code == EXIT_REFUSED
    assert "not on a terminal and --yes not given: nothing done" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_terminal_answer_no_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "_is_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    remedy = Remedy("fail_started", "x", host=HOST, job_id="j1", queue="q", member="j1")
    assert run_kill(snapshot(), [finding(remedy)], KillOptions(audit_log=tmp_path / "a")) == EXIT_REFUSED
    assert not (tmp_path / "a").exists()


def test_all_refused_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_kill(snapshot(), [finding(horse(host="elsewhere"))], KillOptions(yes=True, audit_log=tmp_path / "a"))
    assert code == EXIT_REFUSED
    captured = capsys.readouterr()
    assert "[refused: the process is on host 'elsewhere'" in " ".join(captured.out.split())  # wrapped at spaces
    assert "every step is refused" in captured.err


def test_json_dry_run_keeps_stdout_a_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remedy = Remedy("fail_started", "x", host=HOST, job_id="j1", queue="q", member="j1")
    code = run_kill(snapshot(), [finding(remedy)], KillOptions(dry_run=True, fmt=Format.json))
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == EXIT_PLANNED and doc["dry_run"] is True and doc["exit_code"] == EXIT_PLANNED
    assert [p["action"] for p in doc["plan"]] == ["fail_started"] and doc["actions"] == []
    assert "Plan (1 step)" in captured.err


def test_text_report_file_holds_the_plan_and_markdown_escapes_pipes(tmp_path: Path) -> None:
    remedy = Remedy("fail_started", "x", host=HOST, job_id="site1||j1", queue="q", member="site1||j1")
    out = tmp_path / "report.txt"
    assert run_kill(snapshot(), [finding(remedy)], KillOptions(dry_run=True, output=out)) == EXIT_PLANNED
    assert "Plan (1 step)" in out.read_text()
    md = tmp_path / "report.md"
    run_kill(snapshot(), [finding(remedy)], KillOptions(dry_run=True, output=md, fmt=Format.markdown))
    assert md.read_text().startswith("# rqdoctor stuck --kill") and "site1||j1" in md.read_text()
