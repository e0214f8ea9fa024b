"""Rebuild the recorded snapshots from tests/data/frappe-15.54.1 (needs a local Redis; run from the repo root).

    python -m tests.data.snapshots.build

The Redis part goes through the real probe (the fixture's keys are loaded into a scratch database);
processes, py-spy dumps and the MariaDB lock wait are converted from the recorded files.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from rqdoctor.model import (
    Connection,
    DatabaseState,
    DbSession,
    LockWait,
    ProcessInfo,
    ProcessStacks,
    SiteInfo,
    Snapshot,
    StackSample,
    TargetInfo,
)
from rqdoctor.probes.redis_rq import connect, read_rq_state
from rqdoctor.probes.stacks import parse_dump
from tests.test_redis_probe import load_keys

FIXTURE = Path(__file__).resolve().parents[1] / "frappe-15.54.1"
OUT = Path(__file__).with_name("frappe-15.54.1-lockwait.json")
SCRATCH_URL = "redis://127.0.0.1:6379/7"
SERVER = "mysql://root@127.0.0.1:3306"


def build() -> Snapshot:
    """The recorded bench as a snapshot taken at the moment of recording."""
    state = json.loads((FIXTURE / "state.json").read_text())
    at = state["recorded_at"]
    raw = redis.Redis.from_url(SCRATCH_URL)
    raw.flushdb()
    load_keys(raw, state["redis"])
    errors: list = []
    redis_state = read_rq_state(connect(SCRATCH_URL, 5.0), "home-frappe-frappe-bench:", errors)
    raw.flushdb()
    redis_state.server_time = at
    processes = [ProcessInfo(
        pid=p["pid"], ppid=p["ppid"], pgid=p["pgid"], sid=p["sid"], create_time=p["create_time"],
        cmdline=p["cmdline"], cwd=p["cwd"], status=p["status"], username="frappe", cpu_percent=0.0,
        cpu_time=1.0, worker_like=True,
        connections=[Connection(c["laddr"], c["raddr"], c["status"]) for c in p["tcp"]],
    ) for p in state["processes"]]
    stacks = []
    for dump in sorted(FIXTURE.glob("pyspy-*.json")):
        pid = int(dump.stem.rsplit("-", 1)[1])
        threads = parse_dump(json.loads(dump.read_text()))
        samples = [StackSample(taken_at=at - 0.8 + 0.4 * i, threads=threads, cpu_time=1.0) for i in range(3)]
        stacks.append(ProcessStacks(pid=pid, samples=samples))
    ports = {c.laddr.rsplit(":", 1)[1]: p.pid for p in processes for c in p.connections if c.raddr.endswith(":3306")}
    sessions = []
    for row in state["mariadb"]["processlist"]:
        host, port = row["host"].rsplit(":", 1)
        sessions.append(DbSession(
            server=SERVER, session_id=row["id"], user=row["user"], db=row["db"], client_host=host,
            client_port=int(port), client_pid=ports.get(port), client_match="tcp", command=row["command"],
            state=row["state"], time_s=row["time"], query=row["info"], trx_age_s=float(row["time"]) + 1,
            idle_in_transaction=row["command"] == "Sleep"))
    waits = [LockWait(SERVER, w["waiting"], w["blocking"], "row", "diag_site.tabUser", "X", 11.0)
             for w in state["mariadb"]["lock_waits"]]
    return Snapshot(
        host=state["hostname"], generated_at=at, rqdoctor_version="recorded",
        target=TargetInfo(redis_url=state["redis_url"], redis_url_source="recorded", bench_path=state["bench"],
                          bench_source="recorded", bench_id="home-frappe-frappe-bench",
                          bench_id_source="derived from the bench path", queue_filter="home-frappe-frappe-bench:",
                          queue_timeouts={"short": 300, "default": 300, "long": 1500},
                          sites=[SiteInfo("diag.localhost", "mariadb", "127.0.0.1", 3306, "", "diag_site",
                                          "diag_site")]),
        redis=redis_state, processes=processes, stacks=stacks,
        database=DatabaseState(servers=[SERVER], sessions=sessions, lock_waits=waits), errors=errors,
    )


if __name__ == "__main__":
    OUT.write_text(json.dumps(build().to_dict(), indent=1) + "\n")
    print(f"wrote {OUT}")
