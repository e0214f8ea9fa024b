"""Secrets in errors too: generated passwords never reach any output of any read-only command.

Passwords are drawn from pieces of rare letters joined by ``/ # ? @ % :`` and percent-escapes, and
put, raw or percent-encoded, into ``--redis-url``, ``--db-url``, the Redis environment variables,
``FRAPPE_DB_PASSWORD``, and common_site_config.json (``redis_queue``, ``redis_cache``,
``db_password``, ``root_password``) or site_config.json. Every command runs in every format against
a real Redis (which refuses the AUTH), a refused port, or the real MariaDB/PostgreSQL. No piece of
the password (4+ rare letters: what a URL parser may cut out as host, port or path), nor the
password raw, percent-decoded or percent-encoded, may appear in stdout or stderr, wrapped or not.
Hypothesis is derandomized: a failure reproduces with the same command, and prints its example.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rqdoctor.config import ENCODE_HINT, check_redis_url, parse_db_url
from rqdoctor.errors import ConfigError
from rqdoctor.redact import password_needs_encoding, redact_reason, redact_text, redact_url
from tests.test_fuzz_harness import FORMATS, READ_ONLY, Outcome, refused_port, run

pytestmark = pytest.mark.integration

RARE = "QWXZJKqwxzjk"
"""Letters of a password's pieces: no hex digit (percent-decoding cannot touch them), rare in any report."""
SEPARATORS = ["/", "#", "?", "@", "%", ":", "%40", "%2F", "%23", "%3F", "%25", "%3A", "/#", "?@", "@/", "%2"]
MARIADB, POSTGRES = "127.0.0.1:3306", "127.0.0.1:5432"
DB_URL_COMMANDS = ("hangs", "stack", "locks", "target", "preflight")
"""The commands that take ``--db-url``."""


@dataclass
class Secret:
    """A password and the pieces of it that must never be seen."""

    password: str
    pieces: list[str] = field(default_factory=list)

    def forms(self) -> set[str]:
        return {self.password, unquote(self.password), quote(self.password, safe=""), quote(self.password)}

    def leaks(self, text: str) -> list[str]:
        """Forms and pieces of the password found in ``text`` (also once its whitespace is removed: wrapping)."""
        squeezed = "".join(text.split())
        found = [f for f in self.forms() if len(f) >= 4 and (f in text or f in squeezed)]
        return found + [p for p in self.pieces if p in text or p in squeezed]


@st.composite
def secrets(draw: st.DrawFn) -> Secret:
    pieces = draw(st.lists(st.text(alphabet=RARE, min_size=4, max_size=8), min_size=1, max_size=4))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(pieces) + 1, max_size=len(pieces) + 1))
    lead, trail = draw(st.booleans()), draw(st.booleans())
    body = "".join(s + p for s, p in zip(seps, pieces, strict=False))[0 if lead else len(seps[0]):]
    return Secret(body + (seps[-1] if trail else ""), pieces)


def redis_url_with(secret: Secret, hostport: str, db: int, user: str, encoded: bool) -> str:
    password = quote(secret.password, safe="") if encoded else secret.password
    return f"redis://{user}:{password}@{hostport}/{db}"


def db_url_with(secret: Secret, kind: str, hostport: str, encoded: bool) -> str:
    password = quote(secret.password, safe="") if encoded else secret.password
    if kind == "mariadb":
        return f"mysql://root:{password}@{hostport}/"
    return f"postgresql://postgres:{password}@{hostport}/postgres"


def write_bench(root: Path, common: dict[str, object], site: dict[str, object] | None) -> Path:
    (root / "sites").mkdir(parents=True)
    (root / "sites" / "common_site_config.json").write_text(json.dumps(common))
    if site is not None:
        (root / "sites" / "site1.local").mkdir()
        (root / "sites" / "site1.local" / "site_config.json").write_text(json.dumps(site))
    return root


def command_args(command: str, fmt: str) -> list[str]:
    extra = {"hangs": ["--samples", "1", "--min-age", "0", "--timeout", "6"], "stack": ["nojob", "--samples", "1"],
             "locks": ["--timeout", "6"], "workers": ["--timeout", "4"], "queues": ["--timeout", "4"],
             "preflight": ["--timeout", "6"], "target": []}[command]
    return [command, *extra, "--format", fmt]


def assert_no_leak(outcome: Outcome, secret: Secret) -> None:
    outcome.check()
    for stream in (outcome.stdout, outcome.stderr):
        assert not secret.leaks(stream), (secret.leaks(stream), str(outcome))


# --- pure: the URL checks and the redaction of their messages -------------------------------------------


@given(secret=secrets(), encoded=st.booleans(), user=st.sampled_from(["", "default", "frappe"]))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_redis_url_errors_and_redaction_never_show_the_password(secret: Secret, encoded: bool, user: str) -> None:
    url = redis_url_with(secret, "127.0.0.1:6379", 0, user, encoded)
    assert not secret.leaks(redact_url(url)) and not secret.leaks(redact_text(f"connecting to {url} failed"))
    try:
        check_redis_url(url, "--redis-url")
    except ConfigError as exc:
        assert not secret.leaks(f"{exc.message} {exc.hint}"), exc.message
    else:
        assert not password_needs_encoding(url)  # a URL that is used parses as it was meant: host and port exact
        assert (urlsplit(url).hostname, urlsplit(url).port) == ("127.0.0.1", 6379)


@given(secret=secrets(), encoded=st.booleans(), kind=st.sampled_from(["mariadb", "postgres"]))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_db_url_errors_never_show_the_password(secret: Secret, encoded: bool, kind: str) -> None:
    url = db_url_with(secret, kind, "127.0.0.1:3306", encoded)
    try:
        target = parse_db_url(url)
    except ConfigError as exc:
        assert not secret.leaks(f"{exc.message} {exc.hint}"), exc.message
    else:
        assert not secret.leaks(target.redacted()) and not secret.leaks(repr(target))
        assert (target.host, target.port) == ("127.0.0.1", 3306)


@pytest.mark.parametrize(("url", "fragment"), [
    ("redis://:pa/ss@h:6379/0", "pa"), ("redis://:pa#ss@h:6379/0", "pa"), ("redis://:pa?ss@h:6379/0", "pa"),
    ("redis://:12#x@127.0.0.1:6379/0", "12"), ("redis://u:pw#x@h:6379/0", "pw"),
])
def test_unencoded_delimiters_in_a_redis_password_are_refused_not_parsed(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_redis_url(url, "--redis-url")
    assert "unencoded / ? or #" in err.value.message and ENCODE_HINT in err.value.hint
    assert f"'{fragment}'" not in err.value.message and f":{fragment}" not in err.value.message, err.value.message


def test_quoted_values_of_parse_errors_are_masked() -> None:
    with pytest.raises(ValueError) as err:
        _ = urlsplit("redis://:pa/ss@h:6379/0").port
    assert redact_reason(err.value) == "Port could not be cast to integer value as '***'"


# --- the CLI: every read-only command, every format, every place a password is read from ----------------


PLACES = ["--redis-url", "env", "redis_queue", "redis_cache", "--db-url", "db_password", "root_password",
          "FRAPPE_DB_PASSWORD"]


def scenario(command: str, place: str, secret: Secret, encoded: bool, redis_hostport: str, refused: str, db_kind: str,
             db_reachable: bool, root: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment that put the password in ``place`` (every other value plain)."""
    db_hostport = (MARIADB if db_kind == "mariadb" else POSTGRES) if db_reachable else refused
    plain_redis = f"redis://{redis_hostport}/0"
    args: list[str] = []
    env: dict[str, str] = {}
    common: dict[str, object] = {"redis_queue": plain_redis, "bench_id": "rqdsecret"}
    site: dict[str, object] | None = None
    url = redis_url_with(secret, redis_hostport, 0, "", encoded)
    if place == "--redis-url":
        args += ["--redis-url", url]
    elif place == "env":
        env["RQ_REDIS_URL"] = url
    elif place in ("redis_queue", "redis_cache"):
        common[place] = url
    elif place == "--db-url" and command in DB_URL_COMMANDS:
        args += ["--db-url", db_url_with(secret, db_kind, db_hostport, encoded)]
    else:
        host, port = db_hostport.split(":")
        site = {"db_name": "rqd_nosuchdb", "db_type": db_kind, "db_host": host, "db_port": int(port)}
        if place in ("db_password", "--db-url"):
            site["db_password"] = secret.password
        elif place == "root_password":
            common["root_password"] = secret.password
        else:
            site["db_password"] = "plain-site-pw"
            env["FRAPPE_DB_PASSWORD"] = secret.password
    bench = write_bench(root, common, site)
    return [*args, "--bench", str(bench)], env


@given(secret=secrets(), encoded=st.booleans(), place=st.sampled_from(PLACES), command=st.sampled_from(READ_ONLY),
       fmt=st.sampled_from(FORMATS), redis_reachable=st.booleans(), db_kind=st.sampled_from(["mariadb", "postgres"]),
       db_reachable=st.booleans())
@settings(max_examples=36, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(secret=Secret("p%40ss%2Fw0rd", ["w0rd"]), encoded=False, place="--redis-url", command="workers", fmt="json",
         redis_reachable=True, db_kind="mariadb", db_reachable=False)
@example(secret=Secret("pa/ss#wo?rd"), encoded=False, place="--db-url", command="locks", fmt="text",
         redis_reachable=True, db_kind="mariadb", db_reachable=True)
@example(secret=Secret("QWXZ/jkqw#xzQW"), encoded=True, place="root_password", command="locks", fmt="markdown",
         redis_reachable=True, db_kind="mariadb", db_reachable=True)
def test_no_command_shows_the_password(redis_url: str, secret: Secret, encoded: bool, place: str, command: str,
                                       fmt: str, redis_reachable: bool, db_kind: str, db_reachable: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="rqdfuzz-") as tmp, refused_port() as port:
        refused = f"127.0.0.1:{port}"
        redis_hostport = urlsplit(redis_url).netloc if redis_reachable else refused
        where, env = scenario(command, place, secret, encoded, redis_hostport, refused, db_kind, db_reachable,
                              Path(tmp) / "b")
        outcome = run(*command_args(command, fmt), *where, env=env)
        assert_no_leak(outcome, secret)
        if "pa/ss" in secret.password:
            assert "'pa'" not in outcome.stderr + outcome.stdout, str(outcome)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", READ_ONLY)
def test_issue_examples_in_every_command_and_format(redis_url: str, tmp_path: Path, command: str, fmt: str) -> None:
    """The two URLs of issue 8, given together, in every command and format."""
    db_url = ["--db-url", "mysql://u:pa/ss#wo?rd@h/db"] if command in DB_URL_COMMANDS else []
    with refused_port() as port:
        for hostport in (urlsplit(redis_url).netloc, f"127.0.0.1:{port}"):
            outcome = run(*command_args(command, fmt), "--redis-url", f"redis://:p%40ss%2Fw0rd@{hostport}/0", *db_url)
            assert_no_leak(outcome, Secret("p%40ss%2Fw0rd"))
            assert_no_leak(outcome, Secret("pa/ss#wo?rd"))
            assert not re.search(r"'(pa|ss|wo|rd)'", outcome.stdout + outcome.stderr), str(outcome)
            if db_url:
                assert outcome.code == 2 and "percent-encode" in outcome.stderr, str(outcome)
