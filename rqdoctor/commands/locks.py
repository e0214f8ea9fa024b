"""``rqdoctor locks``: the database lock-wait graph, mapped to processes and jobs."""

from __future__ import annotations

from typing import Any

import typer

from rqdoctor.collect import CollectOptions
from rqdoctor.commands.common import emit_report, exit_code, snapshot_for, snapshot_report
from rqdoctor.commands.options import (
    AllQueues,
    Bench,
    DbUrl,
    Format,
    FormatOpt,
    FromFile,
    KeyPrefix,
    NoRootDb,
    Output,
    RedisUrl,
    Timeout,
)
from rqdoctor.diagnose.dbjoin import access_dicts, access_lines, blocker_dict, likely_blocker_dict
from rqdoctor.diagnose.rules_queues import TARGET_CODES
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.model import Snapshot
from rqdoctor.render.document import Items, Report, Table, section, spans
from rqdoctor.render.fmt import duration, value
from rqdoctor.render.layout import TEXT, Col


def lock_rows(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One row per waiter -> blocker edge."""
    graph = diagnosis.context.graph
    rows = []
    for wait in graph.waits:
        waiter = graph.session(wait.server, wait.waiting_session)
        role = graph.role(wait.server, wait.waiting_session)
        rows.append({
            "server": wait.server, "kind": wait.kind, "table": wait.table, "wait_age_s": wait.wait_age_s,
            "waiting": {"session_id": wait.waiting_session, "pid": role.pid, "host": role.host, "role": role.role,
                        "job_id": role.job_id, "query": waiter.query if waiter else None},
            "blocker": blocker_dict(graph, wait),
        })
    for likely in graph.likely:
        waiter = graph.session(likely.server, likely.waiting_session)
        for holder in likely.holders or [None]:
            rows.append({
                "server": likely.server, "kind": "row (likely)", "table": None, "wait_age_s": likely.waited_s,
                "waiting": {"session_id": likely.waiting_session, "pid": likely.pid, "host": likely.host,
                            "role": "rq-job", "job_id": likely.job_id, "query": waiter.query if waiter else None},
                "blocker": likely_blocker_dict(graph, likely, holder) if holder is not None else _unseen(likely),
            })
    return rows


def _unseen(likely: Any) -> dict[str, Any]:
    """The blocker of a likely wait when no session of this account could hold the lock."""
    return {"server": likely.server, "session_id": None, "pid": None, "host": None, "role": "not visible",
            "job_id": None,
            "doing": "held by another account's session", "inferred": True, "kill": "",
            "summary": "not visible to this account"}


def _cells(rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(value(v) for v in (
        r["waiting"]["session_id"], r["waiting"]["role"], r["waiting"]["job_id"] or r["waiting"]["pid"],
        duration(r["wait_age_s"]), r["kind"], r["table"], r["blocker"]["session_id"], r["blocker"]["role"],
        r["blocker"]["job_id"] or r["blocker"]["pid"], r["blocker"]["doing"], r["blocker"]["kill"])) for r in rows)


COLUMNS = (Col("waiter", label="waiting session", code=True), Col("role", drop=3, label="waiter role"),
           Col("job/pid", label="waiter job/pid", code=True), Col("waiting"), Col("lock", drop=3),
           Col("table", drop=2), Col("blocker", label="blocking session", code=True),
           Col("role", drop=2, label="blocker role"), Col("job/pid", label="blocker job/pid", code=True),
           Col("blocker doing", TEXT, drop=1), Col("to end it", drop=1, code=True))
"""The lock table (the kill statements are also printed whole under each finding)."""


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, timeout: Timeout = 10.0,
            fmt: FormatOpt = Format.text, output: Output = None, from_file: FromFile = None,
            db_url: DbUrl = None, no_root_db: NoRootDb = False, key_prefix: KeyPrefix = None) -> None:
    """Show who waits for whom in the databases (row and metadata locks, chains, cycles) and the fix."""
    options = CollectOptions(timeout=timeout, database=True, root_db=not no_root_db, stacks=True, samples=3,
                             interval=0.2)
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url, key_prefix=key_prefix)
    tried = any(e.probe == "database" for e in snapshot.errors)
    if (snapshot.database is None or not snapshot.database.servers) and not tried:
        raise RqdoctorError("no database to inspect",
                            "give --db-url mysql://root@127.0.0.1:3306/ (or postgresql://…), or run it in a bench")
    diagnosis = diagnose(snapshot, codes={"RQD4", *TARGET_CODES})
    emit_report(locks_report(snapshot, diagnosis), fmt, output)
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("database",)))


def locks_report(snapshot: Snapshot, diagnosis: Diagnosis) -> Report:
    """The database access lines and the lock table; JSON: the waits and how each server was seen."""
    rows = lock_rows(diagnosis)
    servers = snapshot.database.servers if snapshot.database else []
    line = f"{len(rows)} lock wait(s) on {len(servers)} database server(s)"
    access = access_lines(snapshot.database)
    blocks = [Items(tuple(spans(a) for a in access)) if access else None, Table(COLUMNS, _cells(rows))]
    return snapshot_report("locks", snapshot, diagnosis, line, [section(None, *blocks)], locks=rows,
                           database_access=access_dicts(snapshot.database))
