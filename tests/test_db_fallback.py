"""Pure tests: the privileged-route plan, the bench scope, and the site-account fallback (RQD406)."""

from __future__ import annotations

import copy
from pathlib import Path

from rqdoctor import dbroutes
from rqdoctor.commands.common import load_snapshot
from rqdoctor.config import DbTarget, Site, Target
from rqdoctor.diagnose.dbjoin import access_lines
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import DbSession, LockWait, Snapshot
from rqdoctor.probes.database import ServerView, keep_scope

INCIDENT = Path(__file__).parent / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"
VICTIM_JOB = "rqd1.localhost::6e9113e8-e638-4d8e-983a-4e8b36d7b085"


def incident() -> Snapshot:
    return load_snapshot(INCIDENT)


def rqd406(snapshot: Snapshot) -> list:
    return [f for f in diagnose(snapshot).findings if f.code == "RQD406"]


def test_rqd406_fires_recorded_incident_names_console_session_140() -> None:
    (finding,) = rqd406(incident())
    assert (finding.job_id, finding.pid, finding.severity) == (VICTIM_JOB, 18533, "warning")
    holders = finding.data["likely_holders"]
    assert [(h["session_id"], h["pid"], h["role"]) for h in holders] == [(140, 18250, "console")]
    assert finding.commands == ["KILL 140;"]  # not the healthy job's session 143
    assert any("FOR UPDATE" in e and "Statistics" in e and "20 s" in e for e in finding.evidence)
    assert any("likely holder" in e and "session 140" in e for e in finding.evidence)


def test_rqd406_fires_recorded_incident_job_row_and_locks_exit() -> None:
    diagnosis = diagnose(incident())
    blocker = diagnosis.blockers[VICTIM_JOB]
    assert (blocker["session_id"], blocker["pid"], blocker["inferred"], blocker["kill"]) == (140, 18250, True,
                                                                                            "KILL 140;")
    assert diagnosis.activities[diagnosis.links.local(18533)].kind == "db_lock_wait"
    assert "likely" in diagnosis.activities[diagnosis.links.local(18533)].detail
    assert diagnosis.problems()  # `locks` exits 1, never "no problems"


def _victim(snapshot: Snapshot) -> DbSession:
    assert snapshot.database is not None
    return next(s for s in snapshot.database.sessions if s.session_id == 142)


def test_rqd406_near_miss_examined_rows_moving() -> None:
    snapshot = incident()
    victim = _victim(snapshot)
    victim.examined_rows, victim.examined_rows_later = 100, 5000
    assert rqd406(snapshot) == []


def test_rqd406_fires_on_unchanged_examined_rows_without_stacks() -> None:
    snapshot = incident()
    snapshot.stacks = []
    victim = _victim(snapshot)
    victim.examined_rows = victim.examined_rows_later = 17
    (finding,) = rqd406(snapshot)
    assert any("rows examined did not move" in e for e in finding.evidence)


def test_rqd406_near_miss_examined_rows_stuck_at_zero_prove_nothing() -> None:
    # MariaDB 10.11 keeps EXAMINED_ROWS at 0 while a scan or join runs (measured): a working UPDATE looks the same
    snapshot = incident()
    snapshot.stacks = []
    victim = _victim(snapshot)
    victim.examined_rows = victim.examined_rows_later = 0
    assert rqd406(snapshot) == []


def test_rqd109_near_miss_query_whose_rows_examined_move() -> None:
    from rqdoctor.diagnose.run import diagnose

    snapshot = incident()
    victim = _victim(snapshot)
    victim.examined_rows, victim.examined_rows_later = 1000, 5000
    diagnosis = diagnose(snapshot)
    key = next(k for k, a in diagnosis.activities.items() if any("examined +4000 rows" in e for e in
                                                                  a.progress_evidence))
    pid = key.pid
    assert diagnosis.activities[key].progress == "progressing"
    assert not [f for f in diagnosis.findings if f.pid == pid and f.severity in ("critical", "warning")]


def test_rqd406_near_miss_no_progress_evidence_at_all() -> None:
    snapshot = incident()
    snapshot.stacks = []  # no stack, no second read: no positive evidence, no verdict
    assert rqd406(snapshot) == []


def test_rqd406_near_miss_short_or_non_locking_query() -> None:
    short = incident()
    _victim(short).time_s = 2.0
    assert rqd406(short) == []
    plain = incident()
    _victim(plain).query = "SELECT * FROM `tabToDo` WHERE `name`='bb28q3oakh' LIMIT 1"
    assert rqd406(plain) == []


def test_rqd406_near_miss_full_view_has_exact_edges() -> None:
    snapshot = incident()
    assert snapshot.database is not None
    snapshot.database.limited_view = []  # a privileged view: no guessing (exact edges or nothing)
    assert rqd406(snapshot) == []
    exact = incident()
    assert exact.database is not None
    server = exact.database.servers[0]
    exact.database.lock_waits = [LockWait(server=server, waiting_session=142, blocking_session=140, wait_age_s=20)]
    findings = diagnose(exact).findings
    assert [f.code for f in findings if f.code == "RQD406"] == []
    assert [f.job_id for f in findings if f.code == "RQD401"] == [VICTIM_JOB]


def test_rqd406_weaker_guess_when_no_session_idled_since_before_the_wait() -> None:
    snapshot = incident()
    assert snapshot.database is not None
    console = next(s for s in snapshot.database.sessions if s.session_id == 140)
    console.time_s = 1.0
    (finding,) = rqd406(snapshot)
    assert {h["session_id"] for h in finding.data["likely_holders"]} >= {140}
    assert any("none was idle since before" in e for e in finding.evidence)


def test_recorded_snapshot_access_line_without_route_record() -> None:
    lines = access_lines(incident().database)
    assert lines and "route not recorded" in lines[0] and "limited view" in lines[0]


# --- routes ------------------------------------------------------------------------------------------------


def _target(tmp_path: Path, config: dict, host: str = "127.0.0.1") -> Target:
    site = Site("site1.local", {"db_name": "_site1", "db_password": "Site-Secret-1", "db_host": host, **config})
    target = Target(redis_url="redis://127.0.0.1:6379", redis_url_source="test", bench=tmp_path, sites=[site])
    target.db_targets = [site.db_target({})]
    return target


def test_plan_orders_root_password_then_socket_then_site(tmp_path: Path) -> None:
    target = _target(tmp_path, {"root_password": "Root-Secret-1"})
    (group,) = dbroutes.plan(target, allow_root=True)
    routes = [dbroutes.route_of(t) for t in group]
    assert routes[0] == "root_password" and routes[-1] == "site_account"
    assert group[0].user == "root" and group[0].password == "Root-Secret-1" and group[0].port is None
    assert "Root-Secret-1" not in group[0].redacted()
    assert dbroutes.plan(target, allow_root=False) == [[target.db_targets[0]]]
    assert dbroutes.scope(target) == ["_site1"]


def test_plan_postgres_root_login_and_no_socket_for_a_remote_server(tmp_path: Path) -> None:
    target = _target(tmp_path, {"db_type": "postgres", "root_login": "admin", "root_password": "pw"},
                     host="10.9.9.9")
    (group,) = dbroutes.plan(target, allow_root=True)
    assert [(dbroutes.route_of(t), t.user, t.host) for t in group] == [
        ("root_password", "admin", "10.9.9.9"), ("site_account", "_site1", "10.9.9.9")]
    assert dbroutes.socket_routes(group[-1], os_root=True) == []
    local = DbTarget(kind="mariadb", host="127.0.0.1", user="u")
    assert dbroutes.socket_routes(local, os_root=False) == []


def test_disabled_by_flag_or_env() -> None:
    assert dbroutes.disabled(True, {}) and dbroutes.disabled(False, {"RQDOCTOR_NO_ROOT_DB": "1"})
    assert not dbroutes.disabled(False, {}) and not dbroutes.disabled(False, {"RQDOCTOR_NO_ROOT_DB": "0"})


def test_keep_scope_hides_other_databases_but_keeps_a_cross_database_blocker() -> None:
    server = "mysql://root@localhost"
    view = ServerView(target=DbTarget(kind="mariadb", user="root"))
    view.sessions = [DbSession(server, 1, db="ours"), DbSession(server, 2, db="theirs"),
                     DbSession(server, 3, db="theirs"), DbSession(server, 4, db="theirs"), DbSession(server, 5)]
    view.lock_waits = [LockWait(server, 1, 2), LockWait(server, 3, 4)]  # 2 blocks us; 3 -> 4 is unrelated
    hidden = keep_scope(view, {"ours"})
    assert hidden == (3, 1)
    assert [s.session_id for s in view.sessions] == [1, 2]
    assert [(w.waiting_session, w.blocking_session) for w in view.lock_waits] == [(1, 2)]
    untouched = copy.deepcopy(view)
    assert keep_scope(untouched, {"ours", "theirs"}) == (0, 0)
