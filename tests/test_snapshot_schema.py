"""``--from FILE`` and ``--from -`` on every command that reads a snapshot; older schemas migrated, newer refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rqdoctor import model, schema

RECORDED = Path(__file__).parent / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
READERS = [["hangs"], ["stack", "diag.localhost::lockwait"], ["locks"], ["workers"], ["queues"]]


def rqdoctor(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=60,
                          input=stdin, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


@pytest.mark.unit
def test_every_schema_before_the_current_one_has_its_migration() -> None:
    assert set(schema.MIGRATIONS) == set(range(schema.FIRST_VERSION, model.SCHEMA_VERSION))


@pytest.mark.unit
def test_an_older_schema_is_migrated_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a rqdoctor at schema 3, whose steps rename a field (1 -> 2) and add one (2 -> 3)
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in data.items() if k != "hostname"}, "host": data["hostname"]}

    monkeypatch.setattr(model, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: rename, 2: lambda d: {**d, "added": True}})
    # WHEN a schema 1 snapshot is read
    data = schema.upgrade({"schema_version": 1, "hostname": "vm"})
    # THEN both steps ran, in order, and it is at schema 3
    assert data == {"schema_version": 3, "host": "vm", "added": True}
    assert schema.upgrade({"schema_version": 3, "host": "vm"}) == {"schema_version": 3, "host": "vm"}


@pytest.mark.unit
@pytest.mark.parametrize(("version", "error", "says"), [
    (model.SCHEMA_VERSION + 1, schema.NewerSchema, "newer than this rqdoctor's"),
    (0, ValueError, "the first one is 1"), (None, ValueError, "not an rqdoctor snapshot"),
    ("1", ValueError, "not an rqdoctor snapshot")])
def test_newer_missing_or_impossible_schemas_are_refused(version: Any, error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        schema.upgrade({"schema_version": version})


@pytest.mark.cli
@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_from_stdin_is_the_same_as_from_the_file(args: list[str]) -> None:
    # WHEN a command reads the recorded snapshot from stdin and from the file
    piped = rqdoctor(*args, "--from", "-", "--format", "json", stdin=RECORDED.read_text())
    saved = rqdoctor(*args, "--from", str(RECORDED), "--format", "json")
    # THEN the reports are the same
    assert piped.returncode == saved.returncode and piped.returncode in (0, 1), piped.stderr
    assert json.loads(piped.stdout) == json.loads(saved.stdout)


@pytest.mark.cli
def test_a_saved_report_piped_back_in_and_a_newer_schema(tmp_path: Path) -> None:
    report = rqdoctor("hangs", "--from", str(RECORDED), "--format", "json").stdout
    again = rqdoctor("hangs", "--from", "-", "--format", "json", stdin=report)
    assert [f["code"] for f in json.loads(again.stdout)["findings"]] == \
        [f["code"] for f in json.loads(report)["findings"]]
    newer = json.loads(report)
    newer["snapshot"]["schema_version"] = model.SCHEMA_VERSION + 1
    future = tmp_path / "future.json"
    future.write_text(json.dumps(newer))
    run = rqdoctor("workers", "--from", str(future))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"rqdoctor: error: {future}: written by a newer rqdoctor: snapshot schema_version {model.SCHEMA_VERSION + 1} "
        f"is newer than this rqdoctor's ({model.SCHEMA_VERSION})",
        "rqdoctor: hint: upgrade rqdoctor (pip install -U rqdoctor) to read it"]
    piped = rqdoctor("queues", "--from", "-", stdin="[1]")
    assert piped.returncode == 2 and piped.stderr.startswith("rqdoctor: error: stdin: not a JSON snapshot")
