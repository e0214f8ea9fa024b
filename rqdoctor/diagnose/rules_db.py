"""RQD4xx: database sessions, lock waits and the transactions that block them."""

from __future__ import annotations

from collections.abc import Iterator

from rqdoctor.diagnose.context import Context
from rqdoctor.diagnose.dbjoin import blocker_dict, holding, is_postgres, job_waits, kill_statement, likely_blocker_dict
from rqdoctor.diagnose.findings import Hit, rule

LONG_TRANSACTION_S = 300
"""A transaction open longer than this holds its locks (and MVCC history) for too long."""


@rule("RQD401", "critical", "Job waits on a database lock")
def lock_wait_victim(ctx: Context) -> Iterator[Hit]:
    for job_id, wait in job_waits(ctx.graph).items():
        blocker = blocker_dict(ctx.graph, wait)
        victim = ctx.graph.role(wait.server, wait.waiting_session)
        what = "a metadata lock" if wait.kind == "metadata" else "a row lock"
        on = f" on {victim.host}" if victim.host is not None and victim.host != ctx.here else ""
        evidence = [f"session {wait.waiting_session} (pid {victim.pid}{on}) waits "
                    f"{wait.wait_age_s or 0:.0f} s for {what}" + (f" on {wait.table}" if wait.table else ""),
                    f"held by {blocker['summary']}"]
        if blocker["job_id"]:
            evidence.append(f"the blocker is RQ job {blocker['job_id']}")
        if is_postgres(wait.server):
            outcome = ("On PostgreSQL `lock_timeout` defaults to 0: unless it is freed, the victim waits forever.")
        else:
            outcome = ("The victim fails with 1205 after innodb_lock_wait_timeout (MariaDB default 50 s) unless it "
                       "is freed first; Frappe does not retry QueryTimeoutError.")
        yield Hit(
            f"job {job_id}", evidence=evidence, job_id=job_id, pid=victim.pid, host=victim.host,
            data={"blocker": blocker},
            commands=[blocker["kill"]],
            fix=f"End the blocker, not the victim: run the statement below on {wait.server} (printed, never run by "
                f"rqdoctor{'; check first: the blocker is a guess' if wait.inferred else ''}). {outcome} Then fix "
                "the blocker's code: short transactions, commit in chunks, no network calls or sleeps inside a "
                "transaction.",
        )


@rule("RQD402", "critical", "Blocker is idle in transaction")
def idle_blocker(ctx: Context) -> Iterator[Hit]:
    seen: set[tuple[str, int]] = set()
    for wait in ctx.graph.waits:
        key = (wait.server, wait.blocking_session)
        session = ctx.graph.session(*key)
        if key in seen or session is None or holding(session).startswith("running"):
            continue
        seen.add(key)
        role = ctx.graph.role(*key)
        victims = [w.waiting_session for w in ctx.graph.waits if (w.server, w.blocking_session) == key]
        yield Hit(
            f"db session {wait.blocking_session}",
            evidence=[f"{role.description or role.role}: {holding(session)}, transaction open "
                      f"{session.trx_age_s or 0:.0f} s", f"blocks session(s) {', '.join(map(str, victims))}"],
            pid=role.pid, host=role.host, job_id=role.job_id,
            data={"server": wait.server, "session_id": wait.blocking_session},
            fix="Its client holds a transaction open while doing something else (sleeping, a network call, an "
                "open console). End it now with the statement below; then make that code commit before slow work.",
            commands=[kill_statement(*key)],
        )


@rule("RQD403", "warning", "Long-running transaction")
def long_transaction(ctx: Context) -> Iterator[Hit]:
    for (server, sid), session in ctx.graph.sessions.items():
        if session.trx_age_s is None or session.trx_age_s <= LONG_TRANSACTION_S:
            continue
        role = ctx.graph.role(server, sid)
        yield Hit(
            f"db session {sid}",
            evidence=[f"{role.description or role.role}: transaction open {session.trx_age_s:.0f} s, "
                      f"{session.trx_rows_locked or 0} row(s) locked; {holding(session)}"],
            pid=role.pid, host=role.host, job_id=role.job_id, data={"server": server, "session_id": sid},
            fix="Long transactions hold row locks and block others: commit in chunks and keep network calls "
                "outside transactions. If it is stuck, end it with the statement below.",
            commands=[kill_statement(server, sid)],
        )


@rule("RQD404", "critical", "Metadata-lock wait")
def metadata_lock_wait(ctx: Context) -> Iterator[Hit]:
    for wait in ctx.graph.waits:
        if wait.kind != "metadata":
            continue
        waiter = ctx.graph.session(wait.server, wait.waiting_session)
        blocker = blocker_dict(ctx.graph, wait)
        yield Hit(
            f"db session {wait.waiting_session}",
            evidence=[f"`{(waiter.query if waiter else None) or '?'}` waits for a metadata lock"
                      + (f" on {wait.table}" if wait.table else ""), f"held by {blocker['summary']}"],
            pid=ctx.graph.role(wait.server, wait.waiting_session).pid,
            host=ctx.graph.role(wait.server, wait.waiting_session).host, data={"blocker": blocker},
            fix="DDL (a migrate, an ALTER) waits until every open transaction on the table ends, and every new "
                "query queues behind it. End the holder (an idle console or a long job) with the statement below, "
                "then run migrations when no long job holds the table.",
            commands=[blocker["kill"]],
        )


@rule("RQD405", "critical", "Lock-wait chain or cycle")
def lock_chain(ctx: Context) -> Iterator[Hit]:
    chains = []
    for wait in ctx.graph.waits:
        chain, cycle = ctx.graph.chain(wait)
        if len(chain) >= 3 or cycle:
            chains.append((wait.server, chain, cycle))
    reported: list[tuple[str, set[int]]] = []
    for server, chain, cycle in sorted(chains, key=lambda c: -len(set(c[1]))):
        members = set(chain)
        if any(server == s and members <= seen for s, seen in reported):
            continue
        reported.append((server, members))
        kind = "cycle (a deadlock the server has not broken yet)" if cycle else "chain"
        head = chain[-1]

        def who(sid: int, server: str = server) -> str:
            role = ctx.graph.role(server, sid)
            return f"{sid} ({role.description or role.role})"

        yield Hit(
            f"db sessions {' -> '.join(map(str, chain))}",
            evidence=[f"lock-wait {kind}: " + " waits for ".join(who(sid) for sid in chain)],
            data={"server": server, "chain": chain, "cycle": cycle},
            fix="End the session at the head of the chain; everything behind it then proceeds." if not cycle
            else "The server's deadlock detector normally breaks cycles within seconds; if it persists end one member.",
            commands=[kill_statement(server, head)],
        )


@rule("RQD406", "warning", "Job likely waits on a database lock (holder not visible)")
def likely_lock_wait(ctx: Context) -> Iterator[Hit]:
    for likely in ctx.graph.likely:
        holders = [likely_blocker_dict(ctx.graph, likely, sid) for sid in likely.holders]
        evidence = list(likely.evidence)
        if holders:
            basis = ("idle in this account since before the wait began" if likely.holders_idle_before
                     else "idle in this account now (none was idle since before the wait began)")
            evidence.append(f"likely holder(s), {basis}: " + "; ".join(
                f"session {h['session_id']} = {h['summary'].split(' = ', 1)[1]}" for h in holders))
        else:
            evidence.append("no idle session of this account could hold it: the holder is another account's")
        yield Hit(
            f"job {likely.job_id}", evidence=evidence, job_id=likely.job_id, pid=likely.pid, host=likely.host,
            data={"server": likely.server, "session_id": likely.waiting_session, "likely_holders": holders},
            commands=[h["kill"] for h in holders],
            fix=f"The account rqdoctor used on {likely.server} cannot read the lock views, so the holder is a guess: "
                "check each candidate below (its process, what it runs) before ending it, the likeliest first, with "
                "the statement below (printed, never run by rqdoctor). Killing the victim does not help. To name "
                "the holder for sure, run rqdoctor as OS root on the database host, put root_password in "
                "common_site_config.json, or pass --db-url with an account that has the PROCESS privilege "
                "(PostgreSQL: pg_read_all_stats).",
        )
