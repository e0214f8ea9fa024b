"""``rqdoctor explain CODE``: a finding's documentation, from the catalogue shipped in the package."""

from __future__ import annotations

from typing import Annotated

import typer

from rqdoctor import catalogue
from rqdoctor.commands.common import emit_report
from rqdoctor.commands.options import Format, FormatOpt
from rqdoctor.errors import RqdoctorError
from rqdoctor.render.document import Report, report, section
from rqdoctor.render.prose import blocks

Code = Annotated[str, typer.Argument(help="A finding code, e.g. RQD401 (case does not matter).")]


def command(code: Code, fmt: FormatOpt = Format.text) -> None:
    """Print what a finding code means, why it happens and how to fix it (works offline)."""
    entry = catalogue.entries().get(code.strip().upper())
    if entry is None:
        raise RqdoctorError(f"unknown finding code {code!r}; the known ones: {', '.join(catalogue.entries())}")
    emit_report(explain_report(entry), fmt, None)


def explain_report(entry: catalogue.Entry) -> Report:
    """The entry's heading and body; JSON: its parts, the Markdown body and ``more_info``."""
    severity = entry.severity + (f"; {entry.note}" if entry.note else "")
    data = {"code": entry.code, "title": entry.title, "severity": entry.severity, "note": entry.note,
            "body": entry.body, "more_info": catalogue.more_info(entry.code)}
    return report("explain", lambda: data,
                  sections=[section(f"{entry.code}: {entry.title} ({severity})", *blocks(entry.body))])
