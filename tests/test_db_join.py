"""Unit tests of the database join (dbjoin) and the RQD4xx rules on hand-built and recorded snapshots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from rqdoctor.diagnose.activity import KIND_DB_LOCK_WAIT
from rqdoctor.diagnose.dbjoin import SessionRole, build_graph, holding, kill_statement, role_of_process
from rqdoctor.diagnose.findings import Finding
from rqdoctor.diagnose.link import link
from rqdoctor.diagnose.run import Diagnosis, diagnose
from rqdoctor.model import (
    Connection,
    DatabaseState,
    DbSession,
    JobInfo,
    LockWait,
    ProcessInfo,
    ProcessStacks,
    RedisState,
    Snapshot,
    StackSample,
    TargetInfo,
    WorkerInfo,
)
from rqdoctor.probes.stacks import parse_dump
from rqdoctor.views import job_rows

FIXTURES = Path(__file__).parent / "data" / "frappe-15.54.1"
MY = "mysql://diag_site:***@127.0.0.1:3306"
PG = "postgresql://postgres@127.0.0.1:5432/site1"
T0 = 1_800_000_000.0
BENCH_PY = "/home/frappe/frappe-bench/env/bin/python"
WORKER_ARGV = [BENCH_PY, "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _snapshot(sessions: Sequence[DbSession] = (), waits: Sequence[LockWait] = (), processes: Sequence[ProcessInfo] = (),
              workers: Sequence[WorkerInfo] = (), jobs: Sequence[JobInfo] = (), host: str = "vm", now: float = T0,
              servers: list[str] | None = None) -> Snapshot:
    servers = servers if servers is not None else sorted({s.server for s in sessions} | {w.server for w in waits})
    return Snapshot(host=host, generated_at=now, target=TargetInfo("redis://127.0.0.1:6379/0", "test"),
                    redis=RedisState(server_time=now, workers=list(workers), jobs=list(jobs)),
                    processes=list(processes),
                    database=DatabaseState(servers=servers, sessions=list(sessions), lock_waits=list(waits)))


def _codes(diagnosis: Diagnosis, prefix: str = "RQD4") -> list[str]:
    return [f.code for f in diagnosis.findings if f.code.startswith(prefix)]


def _only(diagnosis: Diagnosis, code: str) -> Finding:
    found = [f for f in diagnosis.findings if f.code == code]
    assert len(found) == 1, [(f.code, f.subject) for f in diagnosis.findings]
    return found[0]


# --- the recorded Frappe 15.54.1 bench: session 85 (job lockwait) waits on 83 (job holdlock) -------------


def _recorded_snapshot(with_stacks: bool = False) -> Snapshot:
    """The recording as the probes store it; DB sessions tied to processes by their client port."""
    state = json.loads((FIXTURES / "state.json").read_text())
    keys = state["redis"]
    workers = []
    for key in sorted(k for k in keys if k.startswith("rq:worker:") and keys[k]["type"] == "hash"):
        h = keys[key]["value"]
        workers.append(WorkerInfo(name=key.removeprefix("rq:worker:"), key=key, hostname=h["hostname"],
                                  pid=int(h["pid"]), state=h["state"], queues=h["queues"].split(","),
                                  current_job=h.get("current_job"), birth=_ts(h["birth"]),
                                  last_heartbeat=_ts(h["last_heartbeat"]), version=h["version"]))
    jobs = []
    for key in sorted(k for k in keys if k.startswith("rq:wip:")):
        for member, score in keys[key]["value"]:
            h = keys[f"rq:job:{member}"]["value"]
            jobs.append(JobInfo(job_id=member, queue=key.removeprefix("rq:wip:"), registry_expires_at=score,
                                status=h["status"], origin=h["origin"], started_at=_ts(h["started_at"]),
                                worker_name=h["worker_name"]))
    processes = [ProcessInfo(pid=p["pid"], ppid=p["ppid"], pgid=p["pgid"], sid=p["sid"], create_time=p["create_time"],
                             cmdline=p["cmdline"], cwd=p["cwd"], status=p["status"], worker_like=True,
                             connections=[Connection(**c) for c in p["tcp"]])
                 for p in state["processes"]]
    mariadb = state["mariadb"]
    blocking = {w["blocking"] for w in mariadb["lock_waits"]}
    sessions = []
    for row in mariadb["processlist"]:
        host, _, port = row["host"].rpartition(":")
        owners = [p.pid for p in processes for c in p.connections
                  if c.laddr.endswith(f":{port}") and c.raddr.endswith(":3306")]
        assert len(owners) == 1, (row, owners)
        idle = row["command"] == "Sleep" and row["id"] in blocking
        sessions.append(DbSession(server=MY, session_id=row["id"], user=row["user"], db=row["db"], client_host=host,
                                  client_port=int(port), client_pid=owners[0], client_match="tcp",
                                  command=row["command"], state=row["state"] or None, time_s=float(row["time"]),
                                  query=row["info"], trx_age_s=float(row["time"]) if idle else None,
                                  idle_in_transaction=idle))
    waits = [LockWait(server=MY, waiting_session=w["waiting"], blocking_session=w["blocking"],
                      table="diag_site.tabUser",
                      wait_age_s=next(float(r["time"]) for r in mariadb["processlist"] if r["id"] == w["waiting"]))
             for w in mariadb["lock_waits"]]
    snapshot = _snapshot(sessions, waits, processes, workers, jobs, host=state["hostname"], now=state["recorded_at"])
    if with_stacks:
        for path in FIXTURES.glob("pyspy-*.json"):
            pid = int(path.stem.rsplit("-", 1)[1])
            sample = StackSample(taken_at=state["recorded_at"], threads=parse_dump(json.loads(path.read_text())))
            snapshot.stacks.append(ProcessStacks(pid=pid, samples=[sample, sample]))
    return snapshot


def test_recorded_sessions_are_the_two_horses_by_client_port() -> None:
    snapshot = _recorded_snapshot()
    by_id = {s.session_id: s for s in snapshot.database.sessions}  # type: ignore[union-attr]
    assert (by_id[85].client_port, by_id[85].client_pid) == (37780, 19307)
    assert (by_id[83].client_port, by_id[83].client_pid) == (50350, 19302)
    graph = build_graph(snapshot, link(snapshot))
    assert graph.role(MY, 85) == SessionRole("rq-job", 19307, "diag.localhost::lockwait",
                                             "RQ job diag.localhost::lockwait", snapshot.host)
    assert graph.role(MY, 83).job_id == "diag.localhost::holdlock"
    assert graph.blockers_of(MY, 85)[0].blocking_session == 83 and graph.blockers_of(MY, 83) == []


def test_rqd401_fires_recorded_row_lock_victim_with_its_blocking_job() -> None:
    diagnosis = diagnose(_recorded_snapshot())
    finding = _only(diagnosis, "RQD401")
    assert (finding.severity, finding.subject) == ("critical", "job diag.localhost::lockwait")
    assert (finding.job_id, finding.pid) == ("diag.localhost::lockwait", 19307)
    blocker = finding.data["blocker"]
    assert blocker == diagnosis.blockers["diag.localhost::lockwait"]
    assert {k: blocker[k] for k in ("server", "session_id", "pid", "role", "job_id", "table", "lock_kind",
                                     "chain", "cycle", "kill")} == {
        "server": MY, "session_id": 83, "pid": 19302, "role": "rq-job", "job_id": "diag.localhost::holdlock",
        "table": "diag_site.tabUser", "lock_kind": "row", "chain": [85, 83], "cycle": False, "kill": "KILL 83;"}
    assert blocker["doing"] == "idle in transaction for 14 s" and blocker["trx_age_s"] == 14.0
    assert "RQ job diag.localhost::holdlock" in blocker["summary"]
    assert "session 85 (pid 19307) waits 11 s for a row lock on diag_site.tabUser" in finding.evidence
    assert finding.commands == ["KILL 83;"] and MY in finding.fix
    assert list(diagnosis.blockers) == ["diag.localhost::lockwait"]  # the blocker job waits on nobody


def test_rqd402_fires_recorded_idle_blocker_session_83() -> None:
    finding = _only(diagnose(_recorded_snapshot()), "RQD402")
    assert finding.subject == "db session 83"
    assert (finding.pid, finding.job_id) == (19302, "diag.localhost::holdlock")
    assert finding.data == {"server": MY, "session_id": 83}
    assert "blocks session(s) 85" in finding.evidence
    assert finding.commands == ["KILL 83;"]


def test_recorded_victim_activity_is_db_lock_wait_over_its_stack() -> None:
    plain = diagnose(_recorded_snapshot())
    victim = plain.activities[plain.links.local(19307)]
    assert victim.kind == KIND_DB_LOCK_WAIT and victim.progress == "blocked"

    diagnosis = diagnose(_recorded_snapshot(with_stacks=True))
    victim = diagnosis.activities[diagnosis.links.local(19307)]
    assert victim.kind == KIND_DB_LOCK_WAIT
    assert victim.where is not None  # the stack's frame is kept, only the verdict changes
    assert "held by session 83" in victim.detail and "diag_site.tabUser" in victim.detail
    assert diagnosis.activities[diagnosis.links.local(19302)].kind != KIND_DB_LOCK_WAIT  # the blocker sleeps in Python
    rows = {r["job_id"]: r for r in job_rows(diagnosis)}
    assert rows["diag.localhost::lockwait"]["activity"]["kind"] == KIND_DB_LOCK_WAIT
    assert rows["diag.localhost::lockwait"]["blocker"]["kill"] == "KILL 83;"
    assert "RQD401" in rows["diag.localhost::lockwait"]["findings"]
    assert rows["diag.localhost::holdlock"]["blocker"] is None


def test_recorded_snapshot_survives_json() -> None:
    snapshot = _recorded_snapshot()
    again = Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    first, second = diagnose(snapshot), diagnose(again)
    assert [(f.code, f.subject, f.data) for f in first.findings] == [(f.code, f.subject, f.data)
                                                                       for f in second.findings]


# --- roles of client processes ---------------------------------------------------------------------------

ROLES = [
    ([BENCH_PY, "/home/frappe/frappe-bench/env/bin/gunicorn", "--chdir=/home/frappe/frappe-bench/sites",
      "--bind=127.0.0.1:8000", "--threads=4", "--workers=17", "--worker-class=gthread", "-t", "120",
      "frappe.app:application", "--preload"], "web-worker"),
    (["gunicorn: worker [frappe.app:application]"], "web-worker"),
    ([BENCH_PY, "-m", "frappe.utils.bench_helper", "frappe", "--site", "site1.local", "console"], "console"),
    (["/usr/bin/mysql", "-uroot", "-h127.0.0.1", "site1"], "db-client"),
    (["mariadb", "--user=_abc", "_abc"], "db-client"),
    (["/usr/lib/postgresql/15/bin/psql", "-h", "/var/run/postgresql", "-U", "postgres"], "db-client"),
    (["/usr/bin/python3", "/opt/tools/report.py", "--daily"], "process"),
    pytest.param([BENCH_PY, "/home/frappe/frappe-bench/env/bin/ipython"], "console"),
]


@pytest.mark.parametrize(("argv", "role"), ROLES)
def test_role_of_a_client_process(argv: list[str], role: str) -> None:
    process = ProcessInfo(pid=4242, ppid=1, cmdline=argv, worker_like=False)
    snapshot = _snapshot(processes=[process])
    found = role_of_process(process, link(snapshot), snapshot.own_host)
    assert (found.role, found.pid, found.job_id) == (role, 4242, None)
    assert "4242" in found.description


def _job_world() -> tuple[list[WorkerInfo], list[JobInfo], list[ProcessInfo]]:
    """One busy forking worker (pid 100) whose horse 101 runs job ``site1::j`` and has a child 102."""
    worker = WorkerInfo(name="w1", key="rq:worker:w1", hostname="vm", pid=100, state="busy", current_job="site1::j",
                        birth=T0 - 500, last_heartbeat=T0 - 1, version="1.15.1", queues=["b:short"])
    job = JobInfo(job_id="site1::j", queue="b:short", status="started", worker_name="w1", started_at=T0 - 60)
    processes = [ProcessInfo(pid=100, ppid=1, pgid=100, sid=100, create_time=T0 - 600, cmdline=WORKER_ARGV,
                             worker_like=True),
                 ProcessInfo(pid=101, ppid=100, pgid=101, sid=101, create_time=T0 - 60, cmdline=WORKER_ARGV,
                             worker_like=True),
                 ProcessInfo(pid=102, ppid=101, pgid=101, sid=101, create_time=T0 - 50,
                             cmdline=["/usr/bin/python3", "-c", "pass"])]
    return [worker], [job], processes


def test_session_roles_of_jobs_workers_remote_and_unmatched() -> None:
    workers, jobs, processes = _job_world()
    sessions = [
        DbSession(MY, 1, client_host="localhost", client_port=40001, client_pid=101, client_match="tcp"),
        DbSession(MY, 2, client_host="localhost", client_port=40002, client_pid=102, client_match="tcp"),
        DbSession(MY, 3, client_host="localhost", client_port=40003, client_pid=100, client_match="tcp"),
        DbSession(MY, 4, client_host="10.9.8.7", client_port=5555, client_match="remote"),
        DbSession(MY, 5, client_host="localhost", client_match="unix_ambiguous"),
        DbSession(MY, 6, client_host="127.0.0.1", client_port=40006, client_match="no_local_socket"),
        DbSession(MY, 7, client_host="localhost", client_port=40007, client_pid=999, client_match="_pid"),
        DbSession(MY, 8, client_match="hidden"),
    ]
    snapshot = _snapshot(sessions, processes=processes, workers=workers, jobs=jobs)
    graph = build_graph(snapshot, link(snapshot))
    roles = {sid: graph.role(MY, sid) for sid in range(1, 10)}
    assert (roles[1].role, roles[1].pid, roles[1].job_id) == ("rq-job", 101, "site1::j")
    assert (roles[2].role, roles[2].job_id) == ("rq-job", "site1::j")  # a child of the horse works for the job
    assert (roles[3].role, roles[3].pid) == ("rq-worker", 100)
    assert roles[4].role == "remote" and "10.9.8.7" in roles[4].description and roles[4].pid is None
    assert [roles[i].role for i in (5, 6, 8, 9)] == ["unmatched"] * 4
    assert (roles[7].role, roles[7].pid) == ("process", 999)  # pid known, process not in the snapshot
    assert graph.role(PG, 1).role == "unmatched"  # same id on another server is another session


def test_unmatched_local_sessions_are_not_remote() -> None:
    sessions = [DbSession(PG, 11, client_host="[local]", client_match="no_local_socket"),
                DbSession(MY, 12, client_host="localhost", client_match="unix_ambiguous")]
    snapshot = _snapshot(sessions)
    graph = build_graph(snapshot, link(snapshot))
    assert graph.role(PG, 11).role == "unmatched"
    assert graph.role(MY, 12).role == "unmatched"


# --- waits on other servers, PostgreSQL, holding(), limited views ---------------------------------------------


def test_postgres_job_wait_kill_statement_is_pg_terminate_backend() -> None:
    workers, jobs, processes = _job_world()
    gunicorn = ProcessInfo(pid=300, ppid=1, cmdline=[BENCH_PY, "/b/env/bin/gunicorn", "frappe.app:application"])
    sessions = [
        DbSession(PG, 7001, client_host="127.0.0.1", client_port=41000, client_pid=101, client_match="tcp",
                  state="active", query='SELECT * FROM "tabBin" WHERE id = 1 FOR UPDATE', time_s=30.0,
                  trx_age_s=30.0, wait_event="Lock:transactionid"),
        DbSession(PG, 7002, client_host="127.0.0.1", client_port=41001, client_pid=300, client_match="tcp",
                  state="idle in transaction", time_s=45.0, trx_age_s=46.0, idle_in_transaction=True),
    ]
    waits = [LockWait(PG, 7001, 7002, table='"tabBin"', lock_mode="ShareLock", wait_age_s=30.0)]
    diagnosis = diagnose(_snapshot(sessions, waits, [*processes, gunicorn], workers, jobs))
    assert kill_statement(PG, 7002) == "SELECT pg_terminate_backend(7002);"
    blocker = _only(diagnosis, "RQD401").data["blocker"]
    assert (blocker["role"], blocker["pid"], blocker["job_id"]) == ("web-worker", 300, None)
    assert blocker["kill"] == "SELECT pg_terminate_backend(7002);"
    assert blocker["doing"] == "idle in transaction for 45 s" and blocker["trx_age_s"] == 46.0
    assert _only(diagnosis, "RQD401").commands == ["SELECT pg_terminate_backend(7002);"]
    assert _only(diagnosis, "RQD402").commands == ["SELECT pg_terminate_backend(7002);"]
    assert diagnosis.activities[diagnosis.links.local(101)].kind == KIND_DB_LOCK_WAIT


def test_rqd402_near_miss_running_or_invisible_blocker() -> None:
    workers, jobs, processes = _job_world()
    sessions = [DbSession(MY, 1, client_host="localhost", client_port=1, client_pid=101, client_match="tcp",
                          command="Query", time_s=20.0),
                DbSession(MY, 2, client_host="localhost", client_port=2, command="Query", time_s=25.0,
                          query="UPDATE tabBin SET projected_qty = 0", trx_age_s=25.0)]
    diagnosis = diagnose(_snapshot(sessions, [LockWait(MY, 1, 2, table="db.tabBin")], processes, workers, jobs))
    assert _codes(diagnosis) == ["RQD401"]  # a blocker running a statement is not "idle in transaction"
    assert diagnosis.blockers["site1::j"]["doing"] == "running `UPDATE tabBin SET projected_qty = 0` for 25 s"
    assert diagnosis.blockers["site1::j"]["role"] == "unmatched" and diagnosis.blockers["site1::j"]["pid"] is None

    # a limited account sees the edge but not the blocker's session
    hidden = diagnose(_snapshot(sessions[:1], [LockWait(MY, 1, 2)], processes, workers, jobs))
    assert hidden.blockers["site1::j"]["doing"] == "unknown (session not visible)"
    assert hidden.blockers["site1::j"]["trx_age_s"] is None
    assert holding(None) == "unknown (session not visible)"


def test_no_database_state_means_no_db_findings() -> None:
    workers, jobs, processes = _job_world()
    snapshot = _snapshot(processes=processes, workers=workers, jobs=jobs)
    snapshot.database = None
    diagnosis = diagnose(snapshot)
    assert _codes(diagnosis) == [] and diagnosis.blockers == {}
    assert build_graph(snapshot, link(snapshot)).waits == []


# --- long transactions, metadata locks ---------------------------------------------------------------------


@pytest.mark.parametrize(("server", "kill"), [(MY, "KILL 9;"), (PG, "SELECT pg_terminate_backend(9);")])
def test_rqd403_fires_transaction_open_over_300_s(server: str, kill: str) -> None:
    sessions = [DbSession(server, 9, client_host="localhost", command="Sleep", time_s=290.0, trx_age_s=301.0,
                          trx_rows_locked=12, idle_in_transaction=True),
                DbSession(server, 10, client_host="localhost", command="Sleep", time_s=300.0, trx_age_s=300.0,
                          idle_in_transaction=True),
                DbSession(server, 11, client_host="localhost", command="Sleep", time_s=999.0)]
    diagnosis = diagnose(_snapshot(sessions))
    finding = _only(diagnosis, "RQD403")
    assert (finding.severity, finding.subject, finding.data) == ("warning", "db session 9",
                                                                 {"server": server, "session_id": 9})
    assert "transaction open 301 s, 12 row(s) locked" in finding.evidence[0]
    assert finding.commands == [kill]
    assert _codes(diagnosis) == ["RQD403"]  # no wait, so no RQD401/402


def test_rqd404_fires_ddl_waiting_on_a_metadata_lock_held_by_a_job() -> None:
    workers, jobs, processes = _job_world()
    console = ProcessInfo(pid=400, ppid=1, cmdline=[BENCH_PY, "-m", "frappe.utils.bench_helper", "frappe", "--site",
                                                    "site1", "migrate"])
    alter = "ALTER TABLE `tabBin` ADD COLUMN `x` INT"
    sessions = [DbSession(MY, 20, client_host="localhost", client_port=1, client_pid=101, client_match="tcp",
                          command="Sleep", time_s=40.0, trx_age_s=41.0, idle_in_transaction=True),
                DbSession(MY, 21, client_host="localhost", client_port=2, client_pid=400, client_match="tcp",
                          command="Query", state="Waiting for table metadata lock", time_s=15.0, query=alter)]
    waits = [LockWait(MY, 21, 20, kind="metadata", table="db.tabBin", wait_age_s=15.0, inferred=True)]
    diagnosis = diagnose(_snapshot(sessions, waits, [*processes, console], workers, jobs))
    finding = _only(diagnosis, "RQD404")
    assert (finding.subject, finding.pid) == ("db session 21", 400)
    assert f"`{alter}` waits for a metadata lock on db.tabBin" in finding.evidence
    blocker = finding.data["blocker"]
    assert (blocker["role"], blocker["job_id"], blocker["lock_kind"], blocker["kill"]) == (
        "rq-job", "site1::j", "metadata", "KILL 20;")
    assert finding.commands == ["KILL 20;"]
    assert sorted(_codes(diagnosis)) == ["RQD402", "RQD404"]  # the waiter is no job: no RQD401


def test_job_waiting_on_a_metadata_lock_says_so() -> None:
    workers, jobs, processes = _job_world()
    sessions = [DbSession(PG, 30, client_host="127.0.0.1", client_port=1, client_pid=101, client_match="tcp",
                          state="active", query='ALTER TABLE "tabBin" ADD COLUMN x int', time_s=8.0),
                DbSession(PG, 31, client_host="10.0.0.9", client_port=2, client_match="remote",
                          state="idle in transaction", time_s=70.0, trx_age_s=70.0, idle_in_transaction=True)]
    waits = [LockWait(PG, 30, 31, kind="metadata", table='"tabBin"', lock_mode="AccessExclusiveLock",
                      wait_age_s=8.0)]
    diagnosis = diagnose(_snapshot(sessions, waits, processes, workers, jobs))
    victim = _only(diagnosis, "RQD401")
    assert 'waits 8 s for a metadata lock on "tabBin"' in victim.evidence[0]
    assert victim.data["blocker"]["role"] == "remote"
    assert "remote host 10.0.0.9" in victim.data["blocker"]["summary"]
    detail = diagnosis.activities[diagnosis.links.local(101)].detail
    assert detail.startswith('waiting 8 s for a metadata lock on "tabBin"')
    assert sorted(_codes(diagnosis)) == ["RQD401", "RQD402", "RQD404"]


# --- chains and cycles -----------------------------------------------------------------------------------


def _chain_snapshot(edges: list[tuple[int, int]], server: str = MY) -> Snapshot:
    ids = sorted({i for edge in edges for i in edge})
    sessions = [DbSession(server, i, client_host="localhost", command="Query", time_s=5.0, query=f"q{i}")
                for i in ids]
    return _snapshot(sessions, [LockWait(server, w, b, table="db.t", wait_age_s=5.0) for w, b in edges])


def test_rqd405_fires_lock_wait_chain_with_the_head_to_kill() -> None:
    diagnosis = diagnose(_chain_snapshot([(1, 2), (2, 3)]))
    finding = _only(diagnosis, "RQD405")
    assert finding.subject == "db sessions 1 -> 2 -> 3"
    assert finding.data == {"server": MY, "chain": [1, 2, 3], "cycle": False}
    assert "lock-wait chain: 1 (unmatched) waits for 2 (unmatched) waits for 3 (unmatched)" in finding.evidence
    assert finding.commands == ["KILL 3;"]
    graph = diagnosis.context.graph
    assert graph.chain(graph.waits[0]) == ([1, 2, 3], False)


def test_rqd405_near_miss_two_session_wait_is_no_chain() -> None:
    assert _codes(diagnose(_chain_snapshot([(1, 2)])), "RQD405") == []


def test_rqd405_fires_lock_wait_cycle_once() -> None:
    diagnosis = diagnose(_chain_snapshot([(5, 6), (6, 5)], server=PG))
    finding = _only(diagnosis, "RQD405")
    assert finding.data["cycle"] is True and set(finding.data["chain"]) == {5, 6}
    assert "cycle (a deadlock the server has not broken yet)" in finding.evidence[0]
    assert "pg_terminate_backend(" in finding.commands[0]


def test_job_blocker_chain_is_in_its_blocker_object() -> None:
    workers, jobs, processes = _job_world()
    sessions = [DbSession(MY, 1, client_host="localhost", client_port=1, client_pid=101, client_match="tcp",
                          command="Query", time_s=9.0),
                DbSession(MY, 2, client_host="localhost", command="Query", time_s=12.0, query="UPDATE t SET a = 1"),
                DbSession(MY, 3, client_host="localhost", command="Sleep", time_s=60.0, trx_age_s=61.0,
                          idle_in_transaction=True)]
    diagnosis = diagnose(_snapshot(sessions, [LockWait(MY, 1, 2), LockWait(MY, 2, 3)], processes, workers, jobs))
    blocker = diagnosis.blockers["site1::j"]
    assert (blocker["session_id"], blocker["chain"], blocker["cycle"]) == (2, [1, 2, 3], False)
    assert _only(diagnosis, "RQD402").subject == "db session 3"  # the idle head, not the running middle
    assert _only(diagnosis, "RQD405").subject == "db sessions 1 -> 2 -> 3"


def test_chain_reported_once_whatever_the_edge_order() -> None:
    assert [f.subject for f in diagnose(_chain_snapshot([(3, 4), (2, 3), (1, 2)])).findings
            if f.code == "RQD405"] == ["db sessions 1 -> 2 -> 3 -> 4"]


def test_cycle_with_a_tail_reported_once_whatever_the_edge_order() -> None:
    assert len([f for f in diagnose(_chain_snapshot([(3, 2), (2, 3), (1, 2)])).findings if f.code == "RQD405"]) == 1


# --- reported product bugs -------------------------------------------------------------------------------


def test_postgres_victim_fix_speaks_postgres() -> None:
    workers, jobs, processes = _job_world()
    sessions = [DbSession(PG, 1, client_host="127.0.0.1", client_port=1, client_pid=101, client_match="tcp",
                          state="active", time_s=9.0),
                DbSession(PG, 2, client_host="127.0.0.1", client_port=2, state="idle in transaction", time_s=9.0,
                          trx_age_s=9.0, idle_in_transaction=True)]
    fix = _only(diagnose(_snapshot(sessions, [LockWait(PG, 1, 2)], processes, workers, jobs)), "RQD401").fix
    assert "innodb_lock_wait_timeout" not in fix and "1205" not in fix
    assert "lock_timeout" in fix


def test_guessed_metadata_blocker_is_shown_as_a_guess() -> None:
    sessions = [DbSession(MY, 40, client_host="localhost", command="Sleep", time_s=50.0, trx_age_s=50.0,
                          idle_in_transaction=True),
                DbSession(MY, 41, client_host="localhost", command="Query", time_s=5.0,
                          state="Waiting for table metadata lock", query="ALTER TABLE t ADD COLUMN x INT")]
    waits = [LockWait(MY, 41, 40, kind="metadata", table="db.t", wait_age_s=5.0, inferred=True)]
    finding = _only(diagnose(_snapshot(sessions, waits)), "RQD404")
    blocker = finding.data["blocker"]
    assert blocker.get("inferred") is True
    assert "likely" in blocker["summary"] or "guess" in blocker["summary"]
