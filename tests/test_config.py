"""Target discovery: flags > environment > bench files > defaults, on real files and real processes.

Benches are laid out in ``tmp_path`` by a small helper (no Redis needed: discovery only reads
files). The running-worker case starts real processes whose argv is Frappe's worker command,
with a stub ``frappe.utils.bench_helper`` that only sleeps, in ``<bench>/sites``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rqdoctor import config
from rqdoctor.config import (
    DEFAULT_REDIS_URL,
    FRAPPE_QUEUE_TIMEOUTS,
    REDIS_ENV_VARS,
    derive_bench_id,
    discover,
    parse_db_url,
    read_json,
)
from rqdoctor.errors import ConfigError

SECRET = "rqdsecret-Zq8!x"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_bench(root: Path, common: dict[str, Any] | None = None,
               sites: dict[str, dict[str, Any]] | None = None) -> Path:
    """``<root>/sites/common_site_config.json`` and one ``site_config.json`` per site."""
    write_json(root / "sites" / "common_site_config.json", {"redis_queue": "redis://127.0.0.1:11311"}
               if common is None else common)
    for name, conf in (sites or {}).items():
        write_json(root / "sites" / name / "site_config.json", conf)
    return root


def find(tmp_path: Path, **kwargs: Any) -> config.Target:
    """discover() isolated from this host: empty env, a cwd outside any bench, no process scan."""
    kwargs.setdefault("env", {})
    kwargs.setdefault("cwd", tmp_path / "elsewhere")
    kwargs.setdefault("scan_processes", False)
    return discover(**kwargs)


# --- Redis URL -------------------------------------------------------------------------------------------------

def test_default_when_nothing_is_found(tmp_path: Path) -> None:
    target = find(tmp_path)
    assert (target.redis_url, target.redis_url_source) == (DEFAULT_REDIS_URL, "default")
    assert target.bench is None and target.bench_id is None and target.queue_filter is None
    assert target.bench_source.startswith("none: not in a bench directory")
    assert target.sites == [] and target.db_targets == []
    assert target.queue_timeouts == FRAPPE_QUEUE_TIMEOUTS


def test_flag_beats_env_and_bench(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": "redis://bench:11000"})
    env = {name: f"redis://{name.lower()}:1" for name in REDIS_ENV_VARS}
    target = find(tmp_path, redis_url="redis://flag:2/3", bench=str(bench), env=env)
    assert (target.redis_url, target.redis_url_source) == ("redis://flag:2/3", "--redis-url")


@pytest.mark.parametrize("first", range(len(REDIS_ENV_VARS)))
def test_env_order(tmp_path: Path, first: int) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": "redis://bench:11000"})
    env = {name: f"redis://{name.lower()}:1" for name in REDIS_ENV_VARS[first:]}
    env["FRAPPE_DB_HOST"] = "unrelated"
    target = find(tmp_path, bench=str(bench), env=env)
    name = REDIS_ENV_VARS[first]
    assert (target.redis_url, target.redis_url_source) == (f"redis://{name.lower()}:1", f"env {name}")


def test_env_order_is_the_documented_one() -> None:
    assert REDIS_ENV_VARS == ("RQDOCTOR_REDIS_URL", "FRAPPE_REDIS_QUEUE", "RQ_REDIS_URL", "REDIS_URL")


def test_empty_env_value_is_skipped(tmp_path: Path) -> None:
    target = find(tmp_path, env={"RQDOCTOR_REDIS_URL": "", "REDIS_URL": "redis://r:1"})
    assert target.redis_url_source == "env REDIS_URL"


def test_bench_redis_queue(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": "redis://127.0.0.1:11000"})
    target = find(tmp_path, bench=str(bench))
    assert target.redis_url == "redis://127.0.0.1:11000"
    assert target.redis_url_source == f"{bench / 'sites' / 'common_site_config.json'} redis_queue"


def test_bench_without_redis_queue_falls_back_to_default(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {})
    assert find(tmp_path, bench=str(bench)).redis_url_source == "default"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cr3t@10.0.0.5:6379/1", "redis://:***@10.0.0.5:6379/1"),
    ("rediss://default:s3cr3t@redis.example.com:6380/0", "rediss://default:***@redis.example.com:6380/0"),
    ("unix:///var/run/redis/redis.sock?db=2", "unix:///var/run/redis/redis.sock?db=2"),
    ("unix:///var/run/redis.sock?db=2&password=s3cr3t", "unix:///var/run/redis.sock?db=2&password=***"),
])
def test_redis_url_forms_are_accepted_and_masked(tmp_path: Path, url: str, shown: str) -> None:
    for target in (find(tmp_path, redis_url=url), find(tmp_path, env={"REDIS_URL": url}),
                   find(tmp_path, bench=str(make_bench(tmp_path / "b", {"redis_queue": url})))):
        assert target.redis_url == url
        info = json.dumps(dataclasses.asdict(target.info()))
        assert target.info().redis_url == shown and "s3cr3t" not in info
        assert "s3cr3t" not in repr(target)


@pytest.mark.parametrize("url", ["http://h:6379", "127.0.0.1:6379", "user:hunter2@h", "redis://h:port",
                                 "redis://h:99999", "redis://[::1", "redis://:hunter2@h?db=x"])
def test_unusable_redis_url_is_a_config_error_naming_its_source(tmp_path: Path, url: str) -> None:
    for kwargs, source in (({"redis_url": url}, "--redis-url"), ({"env": {"RQ_REDIS_URL": url}}, "env RQ_REDIS_URL"),
                           ({"bench": str(make_bench(tmp_path / "b", {"redis_queue": url}))}, "redis_queue")):
        with pytest.raises(ConfigError) as err:
            find(tmp_path, **kwargs)
        assert source in err.value.message and "hunter2" not in err.value.message
        assert "\n" not in err.value.message and err.value.hint


# --- where the bench comes from ----------------------------------------------------------------------------------

def test_bench_flag_beats_env_and_cwd(tmp_path: Path) -> None:
    flag, env_bench, cwd_bench = (make_bench(tmp_path / n) for n in ("flag", "env", "cwd"))
    target = find(tmp_path, bench=str(flag), env={"FRAPPE_BENCH_ROOT": str(env_bench)}, cwd=cwd_bench / "sites")
    assert (target.bench, target.bench_source) == (flag, "--bench")


def test_bench_env_beats_cwd(tmp_path: Path) -> None:
    env_bench, cwd_bench = make_bench(tmp_path / "env"), make_bench(tmp_path / "cwd")
    target = find(tmp_path, env={"FRAPPE_BENCH_ROOT": str(env_bench)}, cwd=cwd_bench)
    assert (target.bench, target.bench_source) == (env_bench, "FRAPPE_BENCH_ROOT")


@pytest.mark.parametrize("sub", [".", "sites", "sites/site1.local", "apps/frappe/frappe"])
def test_bench_from_cwd_or_a_parent(tmp_path: Path, sub: str) -> None:
    bench = make_bench(tmp_path / "frappe-bench", sites={"site1.local": {"db_name": "_x"}})
    (bench / "apps" / "frappe" / "frappe").mkdir(parents=True)
    target = find(tmp_path, cwd=(bench / sub).resolve())
    assert (target.bench, target.bench_source) == (bench.resolve(), "current directory")


@pytest.mark.parametrize(("how", "kwargs"), [
    ("--bench", {"bench": "{root}"}),
    ("FRAPPE_BENCH_ROOT", {"env": {"FRAPPE_BENCH_ROOT": "{root}"}}),
])
def test_given_bench_must_hold_common_config(tmp_path: Path, how: str, kwargs: dict[str, Any]) -> None:
    root = tmp_path / "not-a-bench"
    root.mkdir()
    kwargs = json.loads(json.dumps(kwargs).replace("{root}", str(root)))
    with pytest.raises(ConfigError) as err:
        find(tmp_path, **kwargs)
    assert str(root / "sites" / "common_site_config.json") in err.value.message and how in err.value.message
    assert "\n" not in err.value.message and err.value.hint


# --- bench id, queues, timeouts ----------------------------------------------------------------------------------

def test_bench_id_from_config(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": "redis://x", "bench_id": "prod"})
    target = find(tmp_path, bench=str(bench))
    assert (target.bench_id, target.queue_filter) == ("prod", "prod:")
    assert "bench_id" in target.bench_id_source


def test_bench_id_derived_from_the_real_path(tmp_path: Path) -> None:
    real = make_bench(tmp_path / "srv" / "real-bench")
    link = tmp_path / "home" / "frappe" / "frappe-bench"
    link.parent.mkdir(parents=True)
    link.symlink_to(real, target_is_directory=True)
    expected = str(real.resolve()).strip("/").replace("/", "-")
    for kwargs in ({"bench": str(link)}, {"env": {"FRAPPE_BENCH_ROOT": str(link)}}, {"cwd": link / "sites"},
                   {"bench": str(link) + "/"}):
        target = find(tmp_path, **kwargs)
        assert target.bench_id == expected == derive_bench_id(link), kwargs
        assert target.queue_filter == f"{expected}:"
        assert target.bench_id_source == "derived from the bench path"
    assert derive_bench_id(Path("/home/frappe/frappe-bench")) == "home-frappe-frappe-bench"


def test_all_queues_disables_the_filter(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"bench_id": "prod"})
    assert find(tmp_path, bench=str(bench), all_queues=True).queue_filter is None


def test_custom_worker_queues_and_timeouts(tmp_path: Path) -> None:
    workers = {"big": {"timeout": 5000}, "plain": {}, "forever": {"timeout": -1}, "decimal": {"timeout": 600.0},
               "text": {"timeout": "900"}, "junk": {"timeout": "soon"}, "odd": None}
    bench = make_bench(tmp_path / "b", {"workers": workers})
    timeouts = find(tmp_path, bench=str(bench)).queue_timeouts
    assert timeouts == {"short": 300, "default": 300, "long": 1500, "big": 5000, "plain": 300, "forever": -1,
                        "decimal": 600, "text": 900, "junk": 300, "odd": 300}
    assert find(tmp_path, bench=str(bench)).info().queue_timeouts == timeouts


def test_custom_workers_may_override_builtin_timeouts(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"workers": {"long": {"timeout": 3600}}})
    assert find(tmp_path, bench=str(bench)).queue_timeouts["long"] == 3600


# --- sites and their databases -----------------------------------------------------------------------------------

def test_sites_merge_over_common_and_site_wins(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": "redis://x", "db_host": "db.common", "db_port": 3307},
                       sites={"a.local": {"db_name": "_a", "db_password": SECRET},
                              "b.local": {"db_name": "_b", "db_password": SECRET, "db_host": "db.b", "db_port": "3310",
                                          "db_user": "b_user"},
                              "pg.local": {"db_name": "_pg", "db_password": SECRET, "db_type": "postgres",
                                           "db_port": 5433}})
    (bench / "sites" / "assets").mkdir()  # no site_config.json: not a site
    (bench / "sites" / "apps.txt").write_text("frappe\n")
    target = find(tmp_path, bench=str(bench))
    assert [s.name for s in target.sites] == ["a.local", "b.local", "pg.local"]
    a, b, pg = (s.db_target({}) for s in target.sites)
    assert (a.kind, a.host, a.port, a.user, a.database, a.password) == (
        "mariadb", "db.common", 3307, "_a", "_a", SECRET)
    assert (b.host, b.port, b.user, b.database) == ("db.b", 3310, "b_user", "_b")
    assert (pg.kind, pg.port, pg.user) == ("postgres", 5433, "_pg")
    assert [d.source for d in target.db_targets] == ["site:a.local", "site:b.local", "site:pg.local"]
    assert not any(d.admin for d in target.db_targets)


def test_frappe_db_env_overrides(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", sites={"s.local": {"db_name": "_s", "db_password": "file-pw", "db_host": "h"}})
    env = {"FRAPPE_DB_HOST": "envhost", "FRAPPE_DB_PORT": "3399", "FRAPPE_DB_USER": "envuser",
           "FRAPPE_DB_PASSWORD": SECRET, "FRAPPE_DB_NAME": "envdb", "FRAPPE_DB_SOCKET": "/run/mysqld/mysqld.sock"}
    db = find(tmp_path, bench=str(bench), env=env).sites[0].db_target(env)
    assert (db.host, db.port, db.user, db.password, db.database, db.socket) == (
        "envhost", 3399, "envuser", SECRET, "envdb", "/run/mysqld/mysqld.sock")
    pg = find(tmp_path, bench=str(bench), env={"FRAPPE_DB_TYPE": "postgres"}).db_targets[0]
    assert pg.kind == "postgres"


def test_sqlite_sites_have_no_server_to_probe(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", sites={"lite.local": {"db_name": "_l", "db_type": "sqlite"}})
    target = find(tmp_path, bench=str(bench))
    assert target.db_targets == [] and target.info().sites[0].db_type == "sqlite"


def test_db_url_flag_comes_first_and_is_admin(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", sites={"s.local": {"db_name": "_s", "db_password": SECRET}})
    target = find(tmp_path, bench=str(bench), db_urls=[f"mysql://root:{SECRET}@127.0.0.1:3306/"])
    assert [(d.source, d.admin) for d in target.db_targets] == [("--db-url", True), ("site:s.local", False)]
    assert target.info().db_urls == ["mysql://root:***@127.0.0.1:3306"]


def test_info_and_repr_hold_no_secret(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", {"redis_queue": f"redis://:{SECRET}@h:6379", "db_password": SECRET},
                       sites={"s.local": {"db_name": "_s", "db_password": SECRET, "db_user": "u"}})
    target = find(tmp_path, bench=str(bench), db_urls=[f"postgresql://pg:{SECRET}@h/db"])
    info = target.info()
    assert SECRET not in json.dumps(dataclasses.asdict(info)) and SECRET not in repr(target)
    assert info.sites[0] == config.SiteInfo("s.local", "mariadb", "127.0.0.1", None, "", "_s", "u")


def test_bad_db_port_is_a_config_error(tmp_path: Path) -> None:
    bench = make_bench(tmp_path / "b", sites={"s.local": {"db_name": "_s", "db_port": "mysql"}})
    with pytest.raises(ConfigError, match=r"s\.local.*db_port"):
        find(tmp_path, bench=str(bench))


# --- bench files that cannot be read -----------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "why"), [
    (b'{"redis_queue": "redis://x",}', "malformed JSON at line 1"),
    (b"", "malformed JSON"),
    (b'["not", "an", "object"]', "expected a JSON object, found list"),
    (b'"text"', "expected a JSON object, found str"),
    (b"\xff\xfe\x00garbage", "cannot read"),
])
@pytest.mark.parametrize("which", ["common", "site"])
def test_unreadable_bench_files(tmp_path: Path, content: bytes, why: str, which: str) -> None:
    bench = make_bench(tmp_path / "b", sites={"s.local": {"db_name": "_s"}})
    path = bench / "sites" / ("common_site_config.json" if which == "common" else "s.local/site_config.json")
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        find(tmp_path, bench=str(bench))
    assert err.value.message.startswith(f"{path}: ") and why in err.value.message
    assert "\n" not in err.value.message


def test_read_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        read_json(tmp_path / "nope.json")


# --- --db-url ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://root:pw@db.example.com:3307/erp", ("mariadb", "db.example.com", 3307, "", "root", "pw", "erp")),
    ("mariadb://root@127.0.0.1/", ("mariadb", "127.0.0.1", None, "", "root", "", "")),
    ("mysql+pymysql://u:pw@h/db", ("mariadb", "h", None, "", "u", "pw", "db")),
    ("postgresql://postgres@127.0.0.1:5432/postgres", ("postgres", "127.0.0.1", 5432, "", "postgres", "", "postgres")),
    ("postgres://u:pw@h/db", ("postgres", "h", None, "", "u", "pw", "db")),
    ("mysql://root:pw@localhost/?unix_socket=/run/mysqld/mysqld.sock",
     ("mariadb", "localhost", None, "/run/mysqld/mysqld.sock", "root", "pw", "")),
    ("mysql://root@/?unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
     ("mariadb", "127.0.0.1", None, "/run/mysqld/mysqld.sock", "root", "", "")),
    ("postgresql://postgres@/db?host=/var/run/postgresql",
     ("postgres", "127.0.0.1", None, "/var/run/postgresql", "postgres", "", "db")),
    ("mysql://us%40er:p%40ss%3Aw%2Frd%25@h:3306/d%20b", ("mariadb", "h", 3306, "", "us@er", "p@ss:w/rd%", "d b")),
    ("mysql://root:p@ss@h/db", ("mariadb", "h", None, "", "root", "p@ss", "db")),
])
def test_parse_db_url(url: str, expected: tuple[Any, ...]) -> None:
    db = parse_db_url(url)
    assert (db.kind, db.host, db.port, db.socket, db.user, db.password, db.database) == expected
    assert db.admin and db.source == "--db-url"
    if db.password:
        assert db.password not in db.redacted() and ":***@" in db.redacted()
        assert db.password not in repr(db)


def test_redacted_dsn_and_server_key() -> None:
    assert parse_db_url("mysql://root:pw@h/erp").redacted() == "mysql://root:***@h:3306/erp"
    assert parse_db_url("postgresql://pg@h/db").redacted() == "postgresql://pg@h:5432/db"
    assert parse_db_url("mysql://root@x/?unix_socket=/s.sock").redacted() == "mysql://root@localhost?unix_socket=/s.sock"
    assert parse_db_url("mysql://a@h/x").key() == parse_db_url("mariadb://b:pw@h:3306/y").key()
    assert parse_db_url("mysql://a@h/x").key() != parse_db_url("postgresql://a@h/x").key()


@pytest.mark.parametrize("url", ["http://root:hunter2@h/", "redis://:hunter2@h:6379", "root:hunter2@h",
                                 "mysql://root:hunter2@h:notaport/", "mysql://root:hunter2@h:99999/",
                                 "mysql://root:hunter2@[::1/", ""])
def test_bad_db_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_db_url(url)
    assert "hunter2" not in err.value.message and "\n" not in err.value.message
    assert err.value.message.startswith("--db-url")


# --- the bench of running Frappe workers (real processes) --------------------------------------------------------

STUB = "import time\ntime.sleep(60)\n"


@pytest.fixture
def stub_frappe(tmp_path: Path) -> Path:
    """A ``frappe.utils.bench_helper`` that only sleeps, for a real ``python -m … frappe worker`` argv."""
    root = tmp_path / "stub"
    (root / "frappe" / "utils").mkdir(parents=True)
    (root / "frappe" / "__init__.py").write_text("")
    (root / "frappe" / "utils" / "__init__.py").write_text("")
    (root / "frappe" / "utils" / "bench_helper.py").write_text(STUB)
    return root


@pytest.fixture
def spawn(stub_frappe: Path) -> Iterator[Any]:
    """Start a process (argv, cwd); all are killed by pid at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], cwd: Path, executable: str | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(stub_frappe)}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, executable=executable,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).cmdline() != argv and time.monotonic() < deadline:
            time.sleep(0.02)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def only_my_processes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Hide Frappe-like processes that other tests on this host may be running; everything else stays visible."""
    mine: list[int] = []
    real_iter = psutil.process_iter

    def process_iter(*args: Any, **kwargs: Any) -> Iterator[psutil.Process]:
        for proc in real_iter(*args, **kwargs):
            argv = " ".join(proc.info.get("cmdline") or [])
            if proc.pid in mine or ("bench_helper" not in argv and not argv.startswith("rq:worker:")):
                yield proc

    monkeypatch.setattr(config.psutil, "process_iter", process_iter)
    return mine


WORKER_ARGV = [sys.executable, "-m", "frappe.utils.bench_helper", "frappe", "worker", "--queue", "short"]


@pytest.mark.parametrize("argv", [
    WORKER_ARGV,
    [sys.executable, "-m", "frappe.utils.bench_helper", "frappe", "worker-pool", "--num-workers", "2"],
])
def test_bench_of_running_workers(tmp_path: Path, spawn: Any, only_my_processes: list[int], argv: list[str]) -> None:
    bench = make_bench(tmp_path / "frappe-bench", {"redis_queue": "redis://127.0.0.1:11000"})
    not_a_bench = tmp_path / "other" / "sites"
    not_a_bench.mkdir(parents=True)
    other_bench = make_bench(tmp_path / "scheduler-bench")
    only_my_processes.append(spawn(WORKER_ARGV, cwd=not_a_bench).pid)  # cwd/.. holds no bench: skipped
    only_my_processes.append(spawn([*argv[:4], "schedule"], cwd=other_bench / "sites").pid)  # not a worker
    assert find(tmp_path, scan_processes=True).bench is None
    only_my_processes.append(spawn(argv, cwd=bench / "sites").pid)
    target = find(tmp_path, scan_processes=True)
    assert target.bench == bench.resolve()
    assert target.bench_source == f"running Frappe workers (pid {only_my_processes[-1]})"
    assert target.redis_url == "redis://127.0.0.1:11000"
    assert target.bench_id == derive_bench_id(bench)


def test_bench_of_a_worker_with_an_rq_title(tmp_path: Path, spawn: Any, only_my_processes: list[int]) -> None:
    """With setproctitle, rq replaces the argv by ``rq:worker:<name>: Listening on …``."""
    bench = make_bench(tmp_path / "frappe-bench")
    argv = [f"rq:worker:{os.urandom(4).hex()}: Listening on {derive_bench_id(bench)}:short", "-c", STUB]
    only_my_processes.append(spawn(argv, cwd=bench / "sites", executable=sys.executable).pid)
    assert find(tmp_path, scan_processes=True).bench == bench.resolve()


def test_cwd_beats_running_workers(tmp_path: Path, spawn: Any, only_my_processes: list[int]) -> None:
    running, here = make_bench(tmp_path / "running"), make_bench(tmp_path / "here")
    only_my_processes.append(spawn(WORKER_ARGV, cwd=running / "sites").pid)
    assert find(tmp_path, cwd=here, scan_processes=True).bench == here
    assert find(tmp_path, scan_processes=True).bench == running.resolve()


def test_a_chosen_redis_never_adopts_the_bench_of_running_workers(tmp_path: Path, spawn: Any,
                                                                   only_my_processes: list[int]) -> None:
    running = make_bench(tmp_path / "running", {"redis_queue": "redis://127.0.0.1:11000", "bench_id": "running"})
    only_my_processes.append(spawn(WORKER_ARGV, cwd=running / "sites").pid)
    assert find(tmp_path, scan_processes=True).bench == running.resolve()  # nothing chosen: adopted
    for kwargs, source in (({"redis_url": "redis://127.0.0.1:6379/11"}, "--redis-url"),
                           ({"env": {"REDIS_URL": "redis://127.0.0.1:6379/11"}}, "env REDIS_URL")):
        target = find(tmp_path, scan_processes=True, **kwargs)
        assert target.bench is None and target.bench_id is None and target.queue_filter is None, kwargs
        assert target.redis_url == "redis://127.0.0.1:6379/11"
        assert target.bench_source.startswith(f"none: Redis chosen by {source} without --bench"), target.bench_source
        assert target.info().bench_source == target.bench_source
    chosen = find(tmp_path, scan_processes=True, redis_url="redis://127.0.0.1:6379/11", bench=str(running))
    assert (chosen.bench_id, chosen.queue_filter) == ("running", "running:")  # --bench still works with it


def test_several_running_benches_ask_for_bench(tmp_path: Path, spawn: Any, only_my_processes: list[int]) -> None:
    benches = [make_bench(tmp_path / name, {"redis_queue": f"redis://:{SECRET}@127.0.0.1:{port}"})
               for name, port in (("zeta-bench", 11001), ("alpha-bench", 11000))]
    pids = [spawn(WORKER_ARGV, cwd=b / "sites").pid for b in benches]
    only_my_processes.extend(pids)
    messages = []
    for _ in range(3):  # the same answer every time, whatever order psutil lists processes in
        with pytest.raises(ConfigError) as err:
            find(tmp_path, scan_processes=True)
        messages.append((err.value.message, err.value.details, err.value.hint))
    assert messages[0] == messages[1] == messages[2]
    message, details, hint = messages[0]
    assert "2 benches" in message and "--bench" in message and "\n" not in message and hint
    alpha, zeta = (b.resolve() for b in reversed(benches))
    assert [d.split(":")[0] for d in details] == [str(alpha), str(zeta)]  # one line per bench, sorted
    assert f"worker pids {pids[1]}" in details[0] and f"worker pids {pids[0]}" in details[1]
    assert f"bench_id {derive_bench_id(alpha)}" in details[0] and "redis://:***@127.0.0.1:11000" in details[0]
    assert all(SECRET not in d for d in details)
    assert find(tmp_path, scan_processes=True, bench=str(zeta)).bench == zeta  # choosing one works
    assert find(tmp_path, scan_processes=True, cwd=alpha / "sites").bench == alpha
