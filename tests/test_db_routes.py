"""End to end: zero-flag lock diagnosis on a Frappe-like bench whose site account has exactly Frappe's grants.

Run as OS root with cwd = the bench and no ``--db-url``: rqdoctor reaches the server over its Unix socket
(MariaDB ``unix_socket`` auth; PostgreSQL ``trust`` on this host), names the blocker and its ``KILL``, and
says which route it used. With the routes turned off (``--no-root-db`` / ``RQDOCTOR_NO_ROOT_DB=1``), the site
account's own view still names the victim and the likely holder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from rqdoctor.diagnose.dbjoin import LIKELY_WAIT_S
from tests import test_locks_cli
from tests.harness.bench import Bench, seeded_secret
from tests.harness.services import DBInfo, private_database
from tests.harness.workers import Workers
from tests.test_locks_cli import (
    FAST,
    WAIT,
    Clients,
    _db,
    findings,
    hold_row,
    ident,
    job_row,
    kill,
    lock_kwargs,
    make_table,
    one_site_bench,
    rqdoctor,
    start_job,
    wait_for_waiters,
)

clients, db, site_account = test_locks_cli.clients, test_locks_cli.db, test_locks_cli.site_account  # fixtures
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the socket route is for OS root")]
PARAMS = [_db("mariadb", "rq115"), _db("postgres", "rq26")]


def zero_flag(command: str, bench: Bench, *extra: str) -> Any:
    """``rqdoctor <command>`` from inside the bench, no --bench, no --db-url."""
    args = ("--format", "json", "--timeout", "20", *extra)
    if command == "hangs":
        args = (*args, *FAST)
    return rqdoctor(command, *args, cwd=bench.root)


def setup_lock(db: DBInfo, site_account: tuple[str, str], make_bench: Callable[..., Bench], workers: Workers,
               redis_client: redis.Redis, clients: Clients, flavour: str) -> tuple[Bench, Any, str, int]:
    """A bench on the site account, a console-like process holding row 1 FOR UPDATE, a job waiting for it."""
    user, password = site_account
    bench = one_site_bench(make_bench, db.kind, db_name=db.database, db_password=password)
    worker = workers.frappe(bench, flavour, ("long",))
    make_table(db)
    if db.kind == "postgres":  # Frappe's site role owns its tables
        test_locks_cli.sql(db, f'ALTER TABLE "{test_locks_cli.TABLE}" OWNER TO "{user}"')
    console = clients.python("console", db, *hold_row(db), user=user, password=password,
                             argv=("frappe", "--site", "site1.local", "console"))
    job_id, horse = start_job(redis_client, flavour, bench, worker, "long", WAIT[db.kind],
                              lock_kwargs(db, seconds=120, user=user, password=password))
    wait_for_waiters(db, 1)
    time.sleep(LIKELY_WAIT_S + 0.5)  # the fallback calls a locking statement a wait only past this age
    return bench, console, job_id, horse


@pytest.mark.parametrize(("db", "flavour"), PARAMS, indirect=["db"])
def test_zero_flags_as_root_name_the_blocker_and_the_route(db: DBInfo, flavour: str, site_account: tuple[str, str],
                                                           make_bench: Callable[..., Bench], workers: Workers,
                                                           redis_client: redis.Redis, clients: Clients) -> None:
    bench, console, job_id, horse = setup_lock(db, site_account, make_bench, workers, redis_client, clients, flavour)
    run = zero_flag("hangs", bench)
    report = run.json()
    assert run.code == 1, run
    (access,) = report["database_access"]
    assert (access["route"], access["privileged"]) == ("unix_socket", True), access
    assert access["user"] in ("root", "postgres") and "as OS root" in access["detail"]
    assert report["snapshot"]["database"]["access"][0]["route"] == "unix_socket"
    assert report["snapshot"]["database"]["limited_view"] == []
    (victim,) = findings(report, "RQD401")
    blocker = victim["data"]["blocker"]
    assert (victim["job_id"], victim["pid"]) == (job_id, horse), victim
    assert (blocker["pid"], blocker["session_id"], blocker["role"]) == (console.pid, console.session, "console")
    assert victim["commands"] == [kill(db.kind, console.session)]
    assert job_row(report, job_id)["activity"]["kind"] == "db_lock_wait"
    scope = report["snapshot"]["database"]["scope"]
    assert scope == [db.database]
    waits = {(w["waiting_session"], w["blocking_session"]) for w in report["snapshot"]["database"]["lock_waits"]}
    linked = {sid for pair in waits for sid in pair}
    assert all(s["db"] == db.database or s["session_id"] in linked
               for s in report["snapshot"]["database"]["sessions"])  # other tests' databases are hidden

    graph = zero_flag("locks", bench)
    assert graph.code == 1, graph
    locks = graph.json()
    rows = [r for r in locks["locks"] if r["waiting"]["job_id"] == job_id]
    assert rows and rows[0]["blocker"]["pid"] == console.pid and not rows[0]["blocker"]["inferred"], rows
    assert locks["database_access"][0]["route"] == "unix_socket"
    text = rqdoctor("locks", "--timeout", "20", cwd=bench.root)
    assert "via unix_socket" in text.stdout and "as OS root" in text.stdout, text.stdout
    assert kill(db.kind, console.session) in text.stdout
    assert site_account[1] not in text.stdout + graph.stdout + run.stdout


@pytest.mark.parametrize(("db", "flavour"), PARAMS, indirect=["db"])
def test_without_root_routes_the_site_account_names_victim_and_likely_holder(
        db: DBInfo, flavour: str, site_account: tuple[str, str], make_bench: Callable[..., Bench], workers: Workers,
        redis_client: redis.Redis, clients: Clients) -> None:
    bench, console, job_id, horse = setup_lock(db, site_account, make_bench, workers, redis_client, clients, flavour)
    user = site_account[0]
    run = zero_flag("hangs", bench, "--no-root-db")
    report = run.json()
    assert run.code == 1, run
    (access,) = report["database_access"]
    assert (access["route"], access["user"], access["tried"]) == ("site_account", user, []), access
    if db.kind == "mariadb":  # no lock views: the fallback guesses from PROCESSLIST
        assert access["privileged"] is False
        (likely,) = [f for f in findings(report, "RQD406") if f["job_id"] == job_id]
        assert likely["pid"] == horse
        holders = likely["data"]["likely_holders"]
        assert holders[0]["session_id"] == console.session and holders[0]["pid"] == console.pid, holders
        assert holders[0]["role"] == "console" and holders[0]["inferred"] is True
        assert likely["commands"][0] == kill(db.kind, console.session)
        assert any("likely" in e for e in likely["evidence"])
    else:  # the site role sees its own sessions' Lock waits, and pg_blocking_pids names the blocker
        (victim,) = findings(report, "RQD401")
        assert victim["data"]["blocker"]["pid"] == console.pid
        assert victim["commands"] == [kill(db.kind, console.session)]

    env_off = rqdoctor("locks", "--format", "json", "--timeout", "20", cwd=bench.root,
                       env={"RQDOCTOR_NO_ROOT_DB": "1"})
    assert env_off.code == 1, env_off
    locks = env_off.json()
    assert locks["database_access"][0]["route"] == "site_account"
    rows = [r for r in locks["locks"] if r["waiting"]["job_id"] == job_id]
    assert rows and rows[0]["blocker"]["session_id"] == console.session, locks["locks"]
    assert locks["findings"], locks


@pytest.mark.parametrize(("db", "flavour"), PARAMS, indirect=["db"])
def test_root_view_hides_another_databases_lock_wait(db: DBInfo, flavour: str, site_account: tuple[str, str],
                                                      make_bench: Callable[..., Bench], clients: Clients) -> None:
    _, password = site_account
    bench = one_site_bench(make_bench, db.kind, db_name=db.database, db_password=password)
    with private_database(db.kind) as other:  # another bench's database, with a real lock wait in it
        make_table(other)
        clients.python("holder", other, *hold_row(other))
        clients.python("waiter", other, f"SELECT * FROM {ident(other.kind, test_locks_cli.TABLE)} WHERE id = 1 "
                       "FOR UPDATE", wait_ready=False)
        wait_for_waiters(other, 1)
        run = zero_flag("locks", bench)
        report = run.json()
        database = report["snapshot"]["database"]
        assert report["database_access"][0]["privileged"] is True, report["database_access"]
        assert database["scope"] == [db.database]
        assert database["hidden_lock_waits"] >= 1 and database["hidden_sessions"] >= 2, database
        assert all(s["db"] != other.database for s in database["sessions"]), database["sessions"]
        assert report["locks"] == [] and not findings(report, "RQD401"), report["locks"]
        assert run.code == 0, run
        text = rqdoctor("locks", "--timeout", "20", cwd=bench.root)
        assert "hidden" in text.stdout and "no problems" in text.stdout.lower(), text.stdout


@pytest.mark.parametrize(("db", "flavour"), PARAMS, indirect=["db"])
def test_root_password_from_common_site_config_is_the_first_route(db: DBInfo, flavour: str,
                                                                   site_account: tuple[str, str],
                                                                   make_bench: Callable[..., Bench]) -> None:
    _, password = site_account
    bench = one_site_bench(make_bench, db.kind, db_name=db.database, db_password=password)
    admin_user, admin_password = f"{db.database}_adm", seeded_secret(db.database, "root-route")
    if db.kind == "mariadb":
        test_locks_cli.sql(db, f"CREATE USER '{admin_user}'@'127.0.0.1' IDENTIFIED BY '{admin_password}'",
                           f"GRANT PROCESS, SELECT ON *.* TO '{admin_user}'@'127.0.0.1'")
    else:  # trust on this host: any password logs in; the route, user and redaction are what is tested
        admin_user = "postgres"
    common = bench.root / "sites" / "common_site_config.json"
    common.write_text(json.dumps({**json.loads(common.read_text()), "root_login": admin_user,
                                  "root_password": admin_password}, indent=1))
    try:
        run = zero_flag("locks", bench)
        text = rqdoctor("locks", "--format", "markdown", "--timeout", "20", cwd=bench.root)
    finally:
        if db.kind == "mariadb":
            test_locks_cli.sql(db, f"DROP USER IF EXISTS '{admin_user}'@'127.0.0.1'")
    (access,) = run.json()["database_access"]
    assert (access["route"], access["user"], access["privileged"]) == ("root_password", admin_user, True), access
    assert "site1.local" in access["detail"]
    assert f"account '{admin_user}' via root_password" in text.stdout, text.stdout
    for out in (run.stdout, run.stderr, text.stdout, text.stderr):
        assert admin_password not in out and password not in out
