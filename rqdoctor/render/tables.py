"""The ``workers`` and ``queues`` views as report-document blocks."""

from __future__ import annotations

from typing import Any

from rqdoctor.render.document import Block, Items, Limit, Table, spans
from rqdoctor.render.fmt import duration, short_queue, value
from rqdoctor.render.layout import TEXT, Col
from rqdoctor.render.workers import more_line, summary_lines
from rqdoctor.views import worker_summary, workers_shown

WORKER_COLUMNS = (Col("worker", code=True), Col("host", drop=4), Col("pid", justify="right", code=True),
                  Col("where", drop=3), Col("state"), Col("queues", TEXT, drop=2),
                  Col("current job", code=True), Col("running", drop=1), Col("beat", drop=2, label="heartbeat"),
                  Col("horse", justify="right", code=True), Col("supervisor", drop=5), Col("findings", TEXT))
"""Workers' columns; when narrow, hidden from the highest ``drop`` down (supervisor first, running last)."""


def workers_blocks(rows: list[dict[str, Any]], prefix: str | None, verbose: bool) -> list[Block]:
    """Counts by state, where, queue and host, then the workers worth showing first (with findings, busy, then
    the others), as many as the output shows (``verbose``: all of them, and every host and queue named)."""
    ordered, _ = workers_shown(rows, None)
    lines = summary_lines(worker_summary(rows), prefix, verbose)
    table = Table(WORKER_COLUMNS, tuple(
        (value(r["name"]), value(r["host"]), value(r["pid"]), value(r["location"]), value(r["state"]),
         value(", ".join(short_queue(q, prefix) for q in r["queues"])), value(r["current_job"]),
         duration(r["job_running_for_s"]), duration(r["heartbeat_age_s"]), value(r["horse_pid"]),
         value(r["supervisor_program"]), value(", ".join(r["findings"]))) for r in ordered),
        limit=Limit(least=sum(1 for r in ordered if r["findings"]), more=lambda shown: more_line(ordered[shown:]),
                    everything=verbose))
    head: list[Block] = [Items((spans(lines[0]),)), Items(tuple(spans(line) for line in lines[1:]), level=1)] \
        if lines else []
    return [*head, table]


QUEUE_COLUMNS = (Col("queue", code=True), Col("queued", justify="right"), Col("oldest", justify="right"),
                 Col("started", justify="right"), Col("failed", drop=1, justify="right"),
                 Col("finished", drop=3, justify="right"), Col("deferred", drop=2, justify="right"),
                 Col("scheduled", drop=2, justify="right"), Col("workers", justify="right"), Col("findings", TEXT))


def queues_blocks(rows: list[dict[str, Any]], prefix: str | None) -> list[Block]:
    """The queues table."""
    return [Table(QUEUE_COLUMNS, tuple(
        (short_queue(r["name"], prefix), value(r["queued"]), duration(r["oldest_queued_age_s"]), value(r["started"]),
         value(r["failed"]), value(r["finished"]), value(r["deferred"]), value(r["scheduled"]),
         value(r["listening_workers"]), value(", ".join(r["findings"]))) for r in rows))]
