"""The fast indented JSON encoder writes exactly what ``json.dumps(indent=2)`` writes: on generated values and on
every recorded report."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rqdoctor.render import indented
from rqdoctor.render.json import text
from tests.test_renderers import recorded_report

pytestmark = pytest.mark.unit

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | \
    st.sampled_from([math.inf, -math.inf, math.nan, PurePosixPath("/b/sites"), dt.date(2026, 12, 2)])
KEYS = st.text() | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=30)


def reference(value: object) -> str:
    return json.dumps(value, indent=2, default=str)


@given(VALUES)
def test_same_text_as_json_dumps_with_indent(value: object) -> None:
    assert indented.dumps(value, default=str) == reference(value)


@pytest.mark.parametrize("command", ["hangs", "stuck", "locks", "workers", "queues"])
def test_same_report_as_json_dumps_with_indent(command: str) -> None:
    report = recorded_report(command)
    assert text(report) == reference(report.data()) + "\n"


def test_an_unusable_key_is_refused_as_json_does() -> None:
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None, not tuple"):
        indented.dumps({(1, 2): 3}, default=str)
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None, not tuple"):
        reference({(1, 2): 3})
