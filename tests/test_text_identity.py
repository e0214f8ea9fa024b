"""The text renderer's exact bytes, plain and in colour, at 80, 120 and 250 columns: every recorded report and the
benchmark's scaled one (16 running jobs), against reference renderings kept in tests/data/golden/text.

The references were written by the renderer before it printed the whole report in one call (issue 8); a change
of the output must be deliberate: regenerate with ``RQDOCTOR_UPDATE_GOLDEN=1`` and read the diff.
"""

from __future__ import annotations

import io
import os
from functools import cache

import pytest
from rich.console import Console

from benchmarks.render import scaled_report
from rqdoctor.render import document as doc
from rqdoctor.render import text
from tests.test_renderers import GOLDEN, recorded_report

pytestmark = pytest.mark.unit

REPORTS = ("hangs", "stuck", "locks", "workers", "queues", "hangs-16")
WIDTHS = (80, 120, 250)


@cache
def report(name: str) -> doc.Report:
    return scaled_report(16) if name == "hangs-16" else recorded_report(name)


def rendered(report: doc.Report, width: int, colour: bool) -> str:
    """The text report on a console of ``width`` columns and 25 lines; ``colour``: a terminal's ANSI styles."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, height=25, highlight=False, force_terminal=colour,
                      color_system="truecolor" if colour else None)
    text.render(report, console)
    return buffer.getvalue()


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", REPORTS)
def test_text_output_is_byte_identical_to_the_reference(name: str, width: int, colour: bool) -> None:
    reference = GOLDEN / "text" / f"{name}-{width}{'-colour' if colour else ''}.txt"
    out = rendered(report(name), width, colour)
    if os.environ.get("RQDOCTOR_UPDATE_GOLDEN"):
        reference.write_bytes(out.encode())
    assert out.encode() == reference.read_bytes()
