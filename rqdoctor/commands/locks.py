"""``rqdoctor locks``: the database lock-wait graph, mapped to processes and jobs."""

from __future__ import annotations

from typing import Any

import typer

from rqdoctor.collect import CollectOptions
from rqdoctor.commands.common import emit, exit_code, snapshot_for
from rqdoctor.commands.options import AllQueues, Bench, DbUrl, Format, FormatOpt, FromFile, Output, RedisUrl, Timeout
from rqdoctor.diagnose.dbjoin import blocker_dict
from rqdoctor.diagnose.rules_queues import TARGET_CODES
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.errors import RqdoctorError
from rqdoctor.render import header, text
from rqdoctor.render import json as json_render
from rqdoctor.render import markdown as md
from rqdoctor.render.fmt import duration


def lock_rows(diagnosis: Diagnosis) -> list[dict[str, Any]]:
    """One row per waiter -> blocker edge."""
    graph = diagnosis.context.graph
    rows = []
    for wait in graph.waits:
        waiter = graph.session(wait.server, wait.waiting_session)
        role = graph.role(wait.server, wait.waiting_session)
        rows.append({
            "server": wait.server, "kind": wait.kind, "table": wait.table, "wait_age_s": wait.wait_age_s,
            "waiting": {"session_id": wait.waiting_session, "pid": role.pid, "role": role.role,
                        "job_id": role.job_id, "query": waiter.query if waiter else None},
            "blocker": blocker_dict(graph, wait),
        })
    return rows


def _cells(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["waiting"]["session_id"], r["waiting"]["role"], r["waiting"]["job_id"] or r["waiting"]["pid"],
             duration(r["wait_age_s"]), r["kind"], r["table"], r["blocker"]["session_id"], r["blocker"]["role"],
             r["blocker"]["job_id"] or r["blocker"]["pid"], r["blocker"]["doing"], r["blocker"]["kill"]]
            for r in rows]


COLUMNS = ["waiter", "role", "job/pid", "waiting", "lock", "table", "blocker", "role", "job/pid", "blocker doing",
           "to end it"]


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, timeout: Timeout = 10.0,
            fmt: FormatOpt = Format.text, output: Output = None, from_file: FromFile = None,
            db_url: DbUrl = None) -> None:
    """Show who waits for whom in the databases (row and metadata locks, chains, cycles) and the fix."""
    options = CollectOptions(timeout=timeout, database=True)
    snapshot = snapshot_for(from_file, options, redis_url, bench, all_queues, db_url)
    tried = any(e.probe == "database" for e in snapshot.errors)
    if (snapshot.database is None or not snapshot.database.servers) and not tried:
        raise RqdoctorError("no database to inspect",
                            "give --db-url mysql://root@127.0.0.1:3306/ (or postgresql://…), or run it in a bench")
    diagnosis = diagnose(snapshot, codes={"RQD4", *TARGET_CODES})
    rows = lock_rows(diagnosis)
    servers = snapshot.database.servers if snapshot.database else []
    line = f"{len(rows)} lock wait(s) on {len(servers)} database server(s)"
    emit(
        fmt, output,
        text=lambda: [header.text(snapshot), text.summary(line, diagnosis.findings, snapshot.errors),
                      text.table(COLUMNS, _cells(rows)),
                      *text.findings(diagnosis.findings), *text.errors(snapshot.errors)],
        markdown=lambda: "\n".join([f"# rqdoctor locks\n\n{header.markdown(snapshot)}\n{line}\n",
                                    md.table(COLUMNS, _cells(rows)),
                                    md.findings(diagnosis.findings, snapshot.errors), md.errors(snapshot.errors)]),
        as_json=lambda: json_render.report("locks", diagnosis, locks=rows),
    )
    raise typer.Exit(exit_code(diagnosis, snapshot, essential=("database",)))
