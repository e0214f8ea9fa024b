"""The JSON renderer: a report document's ``data`` (for the diagnosing commands: the snapshot plus views and
findings, with a schema version; see docs/json.md)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from rqdoctor.diagnose.run import Diagnosis
from rqdoctor.model import SCHEMA_VERSION, plain
from rqdoctor.render import header, indented
from rqdoctor.render.document import Report
from rqdoctor.views import fold_errors


def report(command: str, diagnosis: Diagnosis, **sections: Any) -> dict[str, Any]:
    """``{schema_version, command, host, generated_at, target, <sections>, findings, errors, errors_folded,
    snapshot}`` (``errors_folded``: the "Could not see" lines, repeats of one kind about several pids as one)."""
    snapshot = diagnosis.context.snapshot
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "host": snapshot.host,
        "generated_at": snapshot.generated_at,
        "target": header.as_dict(snapshot),
        **sections,
        "findings": [finding_dict(f) for f in diagnosis.findings],
        "errors": [plain(e) for e in snapshot.errors],
        "errors_folded": [plain(e) for e in fold_errors(snapshot.errors)],
        "snapshot": snapshot.to_dict(),
    }


def finding_dict(finding: Any) -> dict[str, Any]:
    """A finding with its documentation link."""
    data = plain(finding)
    data["more_info"] = finding.more_info
    return data


def render(report: Report, console: Console) -> None:
    """Write the report's JSON data."""
    console.file.write(text(report))


def text(report: Report) -> str:
    """The report's data, indented, one trailing newline."""
    return indented.dumps(report.data(), default=str) + "\n"
