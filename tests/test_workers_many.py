"""``rqdoctor workers`` at 1,000 workers: the summary counts, the cap and its "N more" line, ``-v``, JSON.

The worker hashes are written into a private Redis DB by a small generator (remote hostnames, so no worker
process is needed); one live JSON run reads them, and the other outputs are rendered from that report
(``--from``) and checked against counts computed here from the generator, not from rqdoctor.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from rqdoctor.render.workers import PIPE_ROWS, row_cap
from rqdoctor.views import worker_summary, workers_shown
from tests.harness.bench import Bench
from tests.harness.services import private_redis_db
from tests.test_render_narrow import assert_fits, assert_whole

BENCH_ID = "many"
COUNT = 1_000
STALE = range(940, 1_000)
"""Workers whose heartbeat is an hour old (RQD203): 60, more than the cap, all late in Redis's order."""
HOSTS = ("app-1", "app-2", "app-3")
QUEUES = (("short", "default"), ("long",), ("default",))


def state_of(i: int) -> str:
    return "busy" if i % 20 == 0 else "suspended" if i % 125 == 1 else "idle"


def host_of(i: int) -> str:
    return HOSTS[i % 7 % 3]


def name_of(i: int) -> str:
    return f"w{i:04d}"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load(r: redis.Redis, now: float) -> None:
    """``COUNT`` rq 2.6 worker hashes on remote hosts, with the worker sets."""
    pipe = r.pipeline(transaction=False)
    for i in range(COUNT):
        key = f"rq:worker:{name_of(i)}"
        queues = [f"{BENCH_ID}:{q}" for q in QUEUES[i % 3]]
        pipe.hset(key, mapping={
            "birth": _iso(now - 86400), "last_heartbeat": _iso(now - (3600 if i in STALE else 5)),
            "queues": ",".join(queues), "pid": 20_000 + i, "hostname": host_of(i), "version": "2.6.1",
            "state": state_of(i), "current_job_working_time": "0",
        })
        pipe.expire(key, 7200)
        pipe.sadd("rq:workers", key)
        for q in queues:
            pipe.sadd(f"rq:workers:{q}", key)
    pipe.sadd("rq:queues", *(f"rq:queue:{BENCH_ID}:{q}" for q in ("short", "default", "long")))
    pipe.execute()


def rqdoctor(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """The CLI into a pipe (not a terminal: the 50-row cap), sized by ``COLUMNS``."""
    return subprocess.run([sys.executable, "-m", "rqdoctor", "workers", *args], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


@dataclass
class Many:
    """The live JSON report of the 1,000 workers, and where it was saved."""

    report: dict[str, Any]
    path: Path

    def text(self, *args: str, columns: int = 200) -> str:
        run = rqdoctor("--from", str(self.path), *args, columns=columns)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        return run.stdout


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Many]:
    tmp = tmp_path_factory.mktemp("many")
    with private_redis_db() as url:
        bench = Bench.create(tmp / "bench", url, bench_id=BENCH_ID, sites=("site1.local",), db_type="sqlite")
        client = redis.Redis.from_url(url)
        load(client, time.time())
        client.close()
        run = rqdoctor("--bench", str(bench.root), "--format", "json")
    assert run.returncode == 1, run.stderr  # the stale heartbeats
    path = tmp / "report.json"
    path.write_text(run.stdout)
    yield Many(json.loads(run.stdout), path)


def table_names(out: str) -> list[str]:
    """Worker names in the order the table lists them."""
    return re.findall(r"(?m)^ (w\d{4}) ", out)


@pytest.mark.integration
def test_json_has_every_worker_and_the_findings(many: Many) -> None:
    rows = many.report["workers"]
    assert sorted(r["name"] for r in rows) == [name_of(i) for i in range(COUNT)]
    stale = {f["worker"] for f in many.report["findings"] if f["code"] == "RQD203"}
    assert stale == {name_of(i) for i in STALE}


@pytest.mark.integration
def test_summary_counts_by_state_where_queue_and_host(many: Many) -> None:
    out = " ".join(many.text().split())
    states = Counter(state_of(i) for i in range(COUNT))
    assert states == {"idle": 942, "busy": 50, "suspended": 8}
    assert "1,000 workers on 3 hosts: 942 idle, 50 busy, 8 suspended, 60 with findings" in out
    assert "where: 1,000 remote" in out
    for queue in ("short", "default", "long"):
        members = [i for i in range(COUNT) if queue in QUEUES[i % 3]]
        busy = sum(1 for i in members if state_of(i) == "busy")
        assert re.search(rf"by queue: .*\b{queue} {len(members):,} \({busy} busy\b", out), (queue, out[:2000])
    for host in HOSTS:
        members = [i for i in range(COUNT) if host_of(i) == host]
        assert re.search(rf"by host: .*\b{host} {len(members):,} \(", out), host


@pytest.mark.integration
def test_text_is_capped_with_a_more_line_and_v_lists_all(many: Many) -> None:
    # GIVEN 60 workers with findings (more than the cap) and 940 without
    out = many.text()
    names = table_names(out)
    # THEN every worker with a finding is listed, first, and nothing else (the cap is full)
    assert len(names) == len(STALE) > PIPE_ROWS
    assert set(names) == {name_of(i) for i in STALE}
    rest = Counter(state_of(i) for i in range(COUNT) if i not in STALE)
    assert rest == {"idle": 885, "busy": 47, "suspended": 8}
    assert "… and 940 more workers (885 idle, 47 busy, 8 suspended, none with findings): -v lists them all; " \
           "--format json has every worker" in " ".join(out.split())
    # WHEN -v
    every = table_names(many.text("-v"))
    # THEN all of them, findings first, then busy, then the others
    assert sorted(every) == [name_of(i) for i in range(COUNT)] and every[:60] == names
    after = [state_of(int(n[1:])) for n in every[60:]]
    assert after == sorted(after, key=lambda s: {"busy": 0, "suspended": 1, "idle": 2}[s])
    assert "more workers" not in many.text("-v")


@pytest.mark.integration
def test_without_findings_the_cap_holds_and_busy_workers_come_first(many: Many, tmp_path: Path) -> None:
    # GIVEN the same workers, every heartbeat fresh (no finding)
    data = json.loads(many.path.read_text())["snapshot"]
    for w in data["redis"]["workers"]:
        w["last_heartbeat"] = data["generated_at"] - 5
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(data))
    # WHEN it is rendered into a pipe
    run = rqdoctor("--from", str(path))
    # THEN 50 rows, the 50 busy workers, and the line for the 950 others
    assert run.returncode == 0, run.stderr
    assert sorted(table_names(run.stdout)) == [name_of(i) for i in range(COUNT) if state_of(i) == "busy"]
    assert "… and 950 more workers (942 idle, 8 suspended, none with findings)" in " ".join(run.stdout.split())


@pytest.mark.integration
def test_markdown_is_capped_too(many: Many) -> None:
    md = many.text("--format", "markdown")
    rows = re.findall(r"(?m)^\| `(w\d{4})` \|", md)
    assert len(rows) == 60 and "_… and 940 more workers" in md
    assert "- 1,000 workers on 3 hosts: 942 idle, 50 busy, 8 suspended, 60 with findings" in md
    assert len(re.findall(r"(?m)^\| `(w\d{4})` \|", many.text("--format", "markdown", "-v"))) == COUNT


@pytest.mark.integration
def test_80_columns_keeps_names_and_pids_whole(many: Many) -> None:
    out = many.text(columns=80)
    shown, _ = workers_shown(many.report["workers"], PIPE_ROWS)
    ids = {r["name"] for r in shown} | {str(r["pid"]) for r in shown}
    assert_whole(out, ids, "workers", 80)
    assert_fits(out, many.report, 80)


# --- pure units ---------------------------------------------------------------------------------------------


def row(i: int, state: str = "idle", findings: tuple[str, ...] = (), host: str = "a") -> dict[str, Any]:
    return {"name": f"w{i}", "state": state, "findings": list(findings), "host": host, "location": "remote",
            "queues": ["q"]}


def test_cap_keeps_findings_then_busy_then_the_rest() -> None:
    rows = [row(i) for i in range(10)] + [row(10, "busy"), row(11, findings=("RQD203",)), row(12, "suspended")]
    shown, rest = workers_shown(rows, 3)
    assert [r["name"] for r in shown] == ["w11", "w10", "w12"] and len(rest) == 10
    shown, rest = workers_shown([row(i, findings=("RQD203",)) for i in range(5)], 2)
    assert len(shown) == 5 and rest == []
    assert len(workers_shown(rows, None)[0]) == len(rows)


def test_row_cap_follows_the_terminal() -> None:
    assert row_cap(True, 40) is None and row_cap(False, None) == PIPE_ROWS
    assert row_cap(False, 60) == 45 and row_cap(False, 12) == 10


def test_summary_orders_groups_findings_first() -> None:
    rows = [row(0, host="b"), row(1, host="b"), row(2, "busy", ("RQD203",), host="a"), row(3, host="c")]
    summary = worker_summary(rows)
    assert [g["name"] for g in summary["hosts"]] == ["a", "b", "c"]
    assert summary["states"] == {"idle": 3, "busy": 1} and summary["with_findings"] == 1
    assert summary["queues"] == [{"name": "q", "workers": 4, "states": {"idle": 3, "busy": 1}, "with_findings": 1}]


def test_a_terminal_shows_as_many_rows_as_its_height_allows() -> None:
    from rich.console import Console

    from rqdoctor.render.tables import workers_blocks
    from rqdoctor.render.text import block

    rows = [{**row(i), "pid": 100 + i, "current_job": None, "job_running_for_s": None, "heartbeat_age_s": 1.0,
             "horse_pid": None, "supervisor_program": None} for i in range(100)]
    console = Console(width=200, height=40, force_terminal=True, file=open("/dev/null", "w"), record=True)  # noqa: SIM115
    for b in workers_blocks(rows, None, verbose=False):
        for item in block(b):
            console.print(item, crop=False)
    out = console.export_text()
    assert len(re.findall(r"(?m)^ w\d+ ", out)) == 40 - 15 and "… and 75 more workers (75 idle" in out
