"""Fuzzing the bench files: common_site_config.json and site_config.json with wrong types, huge numbers,
non-UTF-8 bytes, truncated text and nested junk.

Discovery either works or raises a one-line ConfigError (pure, hundreds of examples); the CLI
(``target``, ``preflight``, ``workers``, ``hangs`` in-process, every format) ends with exit 0, 1 or
2, no traceback, valid JSON or the one error line. Redis is a refused port, so every run is quick.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from rqdoctor.config import discover
from rqdoctor.errors import ConfigError
from tests.test_fuzz_harness import FORMATS, refused_port, run

pytestmark = pytest.mark.cli

KEYS = ["redis_queue", "redis_cache", "redis_socketio", "bench_id", "workers", "db_name", "db_user", "db_password",
        "db_host", "db_port", "db_socket", "db_type", "root_login", "root_password", "host_name"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=False), st.text(max_size=20),
                    st.sampled_from(["", "²", "١٢", "3306", "-1", "1e400", "postgres", "sqlite", "redis://h:99999",
                                     "redis://:p%zz@h", "unix:///x?db=a", "../../etc"]))
junk_json = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                         max_leaves=8)


@st.composite
def config(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6))
    conf = {k: draw(junk_json) for k in keys}
    if "workers" in conf and draw(st.booleans()):
        conf["workers"] = {draw(st.text(max_size=6)): {"timeout": draw(junk_json)}}
    return conf


@st.composite
def file_bytes(draw: st.DrawFn) -> bytes:
    """A JSON object, or something that is not one: another JSON type, truncated, non-UTF-8, empty."""
    text = json.dumps(draw(config()), allow_nan=True)
    how = draw(st.sampled_from(["ok", "ok", "ok", "other", "truncated", "binary", "bom", "empty"]))
    if how == "other":
        return json.dumps(draw(junk_json)).encode()
    if how == "truncated":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "binary":
        return text.encode() + draw(st.binary(min_size=1, max_size=8)) + b"\xff"
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    return b"" if how == "empty" else text.encode()


def lay_out(root: Path, common: bytes, sites: list[bytes]) -> Path:
    (root / "sites").mkdir(parents=True)
    (root / "sites" / "common_site_config.json").write_bytes(common)
    for i, content in enumerate(sites):
        (root / "sites" / f"site{i}.local").mkdir()
        (root / "sites" / f"site{i}.local" / "site_config.json").write_bytes(content)
    return root


@given(common=file_bytes(), sites=st.lists(file_bytes(), max_size=2))
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@example(common=b'{"redis_queue": "redis://127.0.0.1:1"}', sites=[b'{"db_port": "\\u00b2"}'])
@example(common=b'{"redis_queue": "redis://127.0.0.1:1", "db_port": 99999999999}', sites=[b'{"db_name": "x"}'])
@example(common=b'{"redis_queue": "redis://127.0.0.1:1"}', sites=[b'{"db_host": {"a": 1}, "db_port": true}'])
def test_discovery_works_or_raises_one_config_error(common: bytes, sites: list[bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="rqdfuzz-") as tmp:
        bench = lay_out(Path(tmp) / "b", common, sites)
        try:
            target = discover(bench=str(bench), env={}, cwd=Path(tmp), scan_processes=False)
        except ConfigError as exc:
            assert exc.message and "\n" not in exc.message, exc.message
            return
        json.dumps(target.info().__dict__, default=lambda o: o.__dict__)  # the snapshot's target serialises
        for db in target.db_targets:
            assert isinstance(db.host, str) and isinstance(db.user, str) and isinstance(db.database, str), db
            assert db.port is None or 0 < db.port < 65536, db
            assert isinstance(db.socket, str), db


@given(common=file_bytes(), sites=st.lists(file_bytes(), max_size=2),
       command=st.sampled_from(["target", "preflight", "workers", "hangs"]), fmt=st.sampled_from(FORMATS))
@settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow])
@example(common=b'{"redis_queue": "redis://127.0.0.1:1"}', sites=[b'{"db_port": "\\u00b2"}'], command="target",
         fmt="json")
def test_every_command_on_malformed_bench_files(common: bytes, sites: list[bytes], command: str, fmt: str) -> None:
    extra = {"hangs": ["--no-db", "--samples", "1", "--timeout", "4"], "workers": ["--timeout", "3"],
             "preflight": ["--timeout", "4"], "target": []}[command]
    with tempfile.TemporaryDirectory(prefix="rqdfuzz-") as tmp, refused_port() as port:
        bench = lay_out(Path(tmp) / "b", common, sites)
        env = {"RQ_REDIS_URL": f"redis://127.0.0.1:{port}/0"} if b"redis_queue" not in common else {}
        run(command, *extra, "--bench", str(bench), "--format", fmt, env=env).check()
