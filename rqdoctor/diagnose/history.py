"""Hung versus slow: a method's recent run durations, and how a running job compares with them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rqdoctor.model import RunHistory

MIN_RUNS = 5
"""Fewer finished runs than this say too little about what is usual."""
FAR_RATIO = 5.0
FAR_MARGIN_S = 60.0
"""A run is far past its usual runs beyond ``max(FAR_RATIO x p95, p95 + FAR_MARGIN_S)`` (see docs/findings.md)."""


@dataclass(frozen=True)
class UsualDuration:
    """Statistics of one method's recent finished runs (failed runs are counted apart)."""

    runs: int
    p50_s: float
    p95_s: float
    max_s: float
    failed_runs: int = 0
    failed_max_s: float | None = None

    def far_past(self) -> float:
        """The run age beyond which a run is far longer than usual."""
        return max(FAR_RATIO * self.p95_s, self.p95_s + FAR_MARGIN_S)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty list: always one of the values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def usual_durations(history: RunHistory) -> dict[str, UsualDuration]:
    """Per method with at least one finished run: runs, p50, p95 and max, plus its failed runs."""
    usual = {}
    for runs in history.methods:
        done, failed = runs.finished, runs.failed
        if done:
            usual[runs.method] = UsualDuration(len(done), percentile(done, 0.5), percentile(done, 0.95), max(done),
                                               len(failed), max(failed) if failed else None)
    return usual


def runs_far_longer(usual: UsualDuration, running_s: float) -> bool:
    """Enough finished runs, and this one is far past them."""
    return usual.runs >= MIN_RUNS and running_s > usual.far_past()


def compare_line(usual: UsualDuration, running_s: float | None) -> str:
    """``this method usually takes 4 s (p95 of 120 recent runs, median 2 s, longest 9 s); this run is at 340 s``."""
    if usual.runs < MIN_RUNS:
        line = (f"only {usual.runs} recent finished run(s) of this method (longest {seconds(usual.max_s)}), "
                "too few to say what is usual")
    else:
        line = (f"this method usually takes {seconds(usual.p95_s)} (p95 of {usual.runs} recent runs, "
                f"median {seconds(usual.p50_s)}, longest {seconds(usual.max_s)})")
    if usual.failed_runs:
        line += f"; {usual.failed_runs} recent failed run(s), longest {seconds(usual.failed_max_s or 0)}"
    if running_s is not None:
        line += f"; this run is at {seconds(running_s)}"
    return line


def seconds(value: float) -> str:
    """``0.25 s``, ``4 s``, ``340 s``: two significant digits below 10 s, whole seconds above."""
    if value < 0.01:
        return "<0.01 s"
    return f"{value:.2g} s" if value < 10 else f"{value:.0f} s"
