"""Redaction stays linear on huge values: a 200 kB job description or command line is masked in well under a
second (its regexes start only where a word starts; before, every position of one long word was tried again to
its end, and a 200 kB description found by the Redis fuzz took minutes, holding ``hangs`` past any deadline)."""

from __future__ import annotations

import time

import pytest

from rqdoctor.redact import redact_text, redact_url

HUGE = 200_000


@pytest.mark.parametrize("text", [
    "x" * HUGE, "a=" * (HUGE // 2), "redis://" + "x:" * (HUGE // 2), "ab.c-d+" * (HUGE // 7),
    "redis://:" + "p" * HUGE, ":" * HUGE, "'x" * (HUGE // 2), "f(" * (HUGE // 2), "password" * (HUGE // 8),
    "x-" * (HUGE // 2), "--x" * (HUGE // 3), "-" * HUGE,
])
def test_huge_values_are_redacted_in_linear_time(text: str) -> None:
    start = time.process_time()
    redact_text(text)
    redact_url(text)
    assert time.process_time() - start < 5.0  # quadratic: minutes; linear: ~0.1 s of CPU


def test_a_secret_after_a_huge_word_is_still_masked() -> None:
    text = "x" * HUGE + " f(password='hunter2', n=1) redis://:hunter2@h:6379/0"
    assert "hunter2" not in redact_text(text)


def test_option_values_after_dashes_are_still_masked() -> None:
    assert redact_text("rq worker --token=abc --queue q") == "rq worker --token='***' --queue q"
