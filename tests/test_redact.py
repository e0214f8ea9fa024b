"""Redaction (pure units): URL passwords, secret kwargs in call strings, SQL literals, mappings.

Besides the hand-picked cases, property-style tests render many generated strings around a
seeded secret (call strings as rq renders them, with rq's 75-character cuts, dict reprs, JSON,
URLs, SQL) and check that no 8-character piece of the secret survives, while the non-secret
parts next to it stay exactly as they were.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from urllib.parse import quote

import pytest

from rqdoctor.redact import MASK, is_secret_name, redact_mapping, redact_text, redact_url

FRAPPE = "frappe.utils.background_jobs.execute_job"
SECRET_NAMES = ["password", "db_password", "passwd", "pwd", "api_key", "api-key", "apikey", "API_KEY", "secret",
                "client_secret", "api_secret", "encryption_key", "token", "access_token", "auth", "Authorization",
                "credentials", "private_key", "signature", "session_id", "sessionid", "cookie", "smtp_pass",
                "passwordHash", "passphrase"]
PLAIN_NAMES = ["user", "method", "site", "job_name", "event", "is_async", "queue", "timeout", "author",
               "doctype", "docname", "name", "owner", "now", "at_front", "enqueue_after_commit", "kwargs",
               "passenger", "key", "description", "reference_name", "host", "port", "db_name", "db_user"]
PLAIN_VALUES = ["'Administrator'", "'a.b'", "'site1.local'", "None", "True", "300", "3.5", "[1, 2]",
                "{'a': 'b', 'c': [1, (2, 3)]}", "('x', 'y')", "datetime.datetime(2024, 1, 2, 3, 4)",
                "'it\\'s'", '"say \\"hi\\""', "b'raw'"]
PUNCT = "'\"\\,)(]}{[:=&; @/?#%"


def make_secret(rng: random.Random, punct: bool) -> tuple[str, str]:
    """``(secret, core)``: 16 random alphanumerics, with punctuation mixed around them when ``punct``."""
    core = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(16))
    if not punct:
        return core, core
    head = "".join(rng.choice(PUNCT) for _ in range(rng.randint(0, 3)))
    tail = "".join(rng.choice(PUNCT) for _ in range(rng.randint(0, 3)))
    return head + core[:8] + rng.choice(PUNCT) + core[8:] + tail, core


def leaked(core: str, text: str) -> bool:
    """True when any 8-character piece of the secret's core appears in ``text``."""
    return any(core[i:i + 8] in text for i in range(len(core) - 7))


def cut(text: str) -> str:
    """rq's ``get_call_string`` cut of one repr: 75 characters plus ``...``."""
    return text[:75] + "..." if len(text) > 75 else text


def secret_values(rng: random.Random) -> tuple[str, str]:
    """A repr holding a secret, in one of the shapes a kwarg value takes: ``(repr, core)``."""
    secret, core = make_secret(rng, punct=rng.random() < 0.6)
    shapes: list[Callable[[], str]] = [
        lambda: repr(secret),
        lambda: repr(secret.encode()),
        lambda: repr({"inner": secret, "n": 1}),
        lambda: repr([1, secret, None]),
        lambda: repr((secret,)),
        lambda: f"Decimal({secret!r})",
        lambda: f"SecretStr({secret!r}, kind='x')",
        lambda: core,  # a bare token: token=abc123
        lambda: repr({"deep": {"deeper": [secret]}}),
    ]
    return rng.choice(shapes)(), core


def call_string(rng: random.Random, secret_kwarg: tuple[str, str] | None, truncate: bool) -> str:
    """``func(kw=value, …)`` with sorted kwargs as rq renders them, optionally cut like rq."""
    kwargs = {rng.choice(PLAIN_NAMES) + str(i): rng.choice(PLAIN_VALUES) for i in range(rng.randint(0, 4))}
    if secret_kwarg:
        kwargs[secret_kwarg[0]] = secret_kwarg[1]
    shown = ", ".join(f"{k}={cut(v) if truncate else v}" for k, v in sorted(kwargs.items()))
    return f"{rng.choice(['app.tasks.run', 'sync', FRAPPE])}({shown})"


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [n for n in PLAIN_NAMES if n != "kwargs"])
def test_plain_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://:s3cr3t@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://default:s3cr3t@host:6379/0", "redis://default:***@host:6379/0"),
    ("rediss://default:p%40ss%2Fw@redis.example.com:6380/1", "rediss://default:***@redis.example.com:6380/1"),
    ("redis://u:s3cr3t@host/0?password=other&db=2", "redis://u:***@host/0?password=***&db=2"),
    ("unix:///var/run/redis/redis.sock?db=2&password=s3cr3t", "unix:///var/run/redis/redis.sock?db=2&password=***"),
    ("unix://:s3cr3t@/var/run/redis.sock?db=2", "unix://:***@/var/run/redis.sock?db=2"),
    ("mysql://root:p@ss@db:3306/x", "mysql://root:***@db:3306/x"),  # unencoded @: urllib takes the last one
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://user@host:6379", "redis://user@host:6379"),
    ("unix:///tmp/redis.sock?db=2", "unix:///tmp/redis.sock?db=2"),
    ("redis://host/0?db=2&socket_timeout=3", "redis://host/0?db=2&socket_timeout=3"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_execute_job_call_string() -> None:
    text = (f"{FRAPPE}(event=None, is_async=True, job_name='a.b', kwargs={{'api_key': 'x', "
            """'password': "y", 'nested': {'token': [1, 2]}, 'count': 3}, method='a.b', site='s1', """
            "user='Administrator')")
    assert redact_text(text) == (
        f"{FRAPPE}(event=None, is_async=True, job_name='a.b', kwargs={{'api_key': '***', 'password': '***', "
        "'nested': {'token': '***'}, 'count': 3}, method='a.b', site='s1', user='Administrator')")


@pytest.mark.parametrize(("text", "expected"), [
    ("f(password='a\\'b', x=1)", "f(password='***', x=1)"),
    ("f(token=abc123, y=2)", "f(token='***', y=2)"),
    ("f(secret=b'xyz', a=1)", "f(secret='***', a=1)"),
    ("f(secret=rb'x\\'yz', a=1)", "f(secret='***', a=1)"),
    ("f(pwd='''tr'ip''', a=1)", "f(pwd='***', a=1)"),
    ("f(password=Decimal('1.2'), user='Administrator')", "f(password='***', user='Administrator')"),
    ("f(auth=('u', 'pw'), method='a.b')", "f(auth='***', method='a.b')"),
    ("f(headers={'Authorization': 'Bearer abc', 'Accept': 'json'})",
     "f(headers={'Authorization': '***', 'Accept': 'json'})"),
    ('{"password": "abc", "user": "bob"}', """{"password": '***', "user": "bob"}"""),
    ("api_key = os.environ['X']", "api_key = '***'"),
    ("password: hunter2 (rotated)", "password: '***' (rotated)"),
    ("f(author='bob', owner='Administrator', method='a.b')", "f(author='bob', owner='Administrator', method='a.b')"),
    ("f(password=)", "f(password=)"),
])
def test_redact_text_cases(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(("sql", "expected"), [
    ("ALTER USER 'x'@'%' IDENTIFIED BY 'hunter2'", "ALTER USER 'x'@'%' IDENTIFIED BY '***'"),
    ("GRANT ALL ON *.* TO 'u'@'%' IDENTIFIED WITH mysql_native_password BY 'hunter2'",
     "GRANT ALL ON *.* TO 'u'@'%' IDENTIFIED WITH mysql_native_password BY '***'"),
    ("CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('hunter2')",
     "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('***')"),
    ("SET PASSWORD FOR 'x'@'%' = PASSWORD('hunter2')", "SET PASSWORD FOR 'x'@'%' = PASSWORD('***')"),
    ("SET PASSWORD FOR 'x'@'localhost' = 'hun''ter2'", "SET PASSWORD FOR 'x'@'localhost' = '***'"),
    ("CREATE USER u WITH PASSWORD 'hunter2'", "CREATE USER u WITH PASSWORD '***'"),
    ("alter role u encrypted password 'hunter2'", "alter role u encrypted password '***'"),
    ("UPDATE `tabUser` SET `api_secret`='hunter2' WHERE name='x'",
     "UPDATE `tabUser` SET `api_secret`='***' WHERE name='x'"),
    ("SELECT * FROM tabDocField WHERE fieldname='password' AND fieldtype='Password'",
     "SELECT * FROM tabDocField WHERE fieldname='password' AND fieldtype='Password'"),
    ("SELECT name FROM `tabUser` WHERE enabled=1", "SELECT name FROM `tabUser` WHERE enabled=1"),
])
def test_sql_password_literals(sql: str, expected: str) -> None:
    assert redact_text(sql) == expected


def test_frappe_auth_table_literals_are_all_masked() -> None:
    sql = ("INSERT INTO `__Auth` (`doctype`,`name`,`fieldname`,`password`,`encrypted`) VALUES "
           "('Email Account','x','password','gAAAAABhunter2',1) ON DUPLICATE KEY UPDATE `password`='gAAAAABhunter2'")
    assert "hunter2" not in redact_text(sql)


def test_redact_mapping() -> None:
    values = {"db_password": "hunter2", "api_key": "k", "note": "redis://:hunter2@h:6379", "user": "Administrator",
              "call": "f(token='hunter2', method='a.b')"}
    assert redact_mapping(values) == {"db_password": MASK, "api_key": MASK, "note": "redis://:***@h:6379",
                                      "user": "Administrator", "call": "f(token='***', method='a.b')"}


SEEDS = range(400)


@pytest.mark.parametrize("truncate", [False, True])
def test_generated_call_strings_never_leak(truncate: bool) -> None:
    for seed in SEEDS:
        rng = random.Random(f"call:{seed}:{truncate}")
        value, core = secret_values(rng)
        text = call_string(rng, (rng.choice(SECRET_NAMES), value), truncate)
        assert not leaked(core, redact_text(text)), (seed, text, redact_text(text))


def test_generated_frappe_kwargs_never_leak() -> None:
    for seed in SEEDS:
        rng = random.Random(f"frappe:{seed}")
        secret, core = make_secret(rng, punct=rng.random() < 0.5)
        inner = {rng.choice(PLAIN_NAMES): rng.choice(["x", 1, None, [1, 2]]) for _ in range(rng.randint(0, 3))}
        holder = inner
        for _ in range(rng.randint(0, 2)):
            holder = holder.setdefault("nested", {})
        holder[rng.choice(SECRET_NAMES)] = rng.choice([secret, [secret], {"v": secret}, secret.encode()])
        description = (f"{FRAPPE}(event=None, is_async=True, job_name='a.b', kwargs={cut(repr(inner))}, "
                       "method='a.b', site='site1.local', user='Administrator')")
        redacted = redact_text(description)
        assert not leaked(core, redacted), (seed, description, redacted)
        assert redacted.startswith(f"{FRAPPE}(event=None, is_async=True, job_name='a.b', kwargs=")
        assert redacted.endswith(", method='a.b', site='site1.local', user='Administrator')"), (seed, redacted)


def test_generated_json_never_leaks() -> None:
    for seed in SEEDS:
        rng = random.Random(f"json:{seed}")
        secret, core = make_secret(rng, punct=True)
        doc: dict = {rng.choice(PLAIN_NAMES): rng.choice(["x", 1, None]) for _ in range(rng.randint(0, 3))}
        doc.setdefault("inner", {})[rng.choice(SECRET_NAMES)] = rng.choice([secret, [secret, 1], {"k": secret}])
        text = json.dumps(doc, indent=rng.choice([None, 1]))
        assert not leaked(core, redact_text(text)), (seed, text)


def test_generated_urls_never_leak() -> None:
    schemes = ["redis", "rediss", "mysql", "mariadb", "postgresql", "postgres", "amqp", "http", "https"]
    for seed in SEEDS:
        rng = random.Random(f"url:{seed}")
        secret, core = make_secret(rng, punct=rng.random() < 0.5)
        user = rng.choice(["", "default", "root", "frappe.user"])
        host = rng.choice(["127.0.0.1:6379", "redis.example.com", "[::1]:6380", "db"])
        encoded = quote(secret, safe="") if rng.random() < 0.8 else core
        url = rng.choice([
            f"{rng.choice(schemes)}://{user}:{encoded}@{host}/0",
            f"{rng.choice(schemes)}://{user}:{encoded}@{host}",
            f"redis://{host}/0?db=2&password={encoded}",
            f"unix:///var/run/redis.sock?password={encoded}&db=2",
        ])
        around = f"Error connecting to {url}: Connection refused" if rng.random() < 0.5 else url
        assert not leaked(core, redact_url(url)), (seed, url)
        assert not leaked(core, redact_text(around)), (seed, around)


def test_generated_sql_never_leaks() -> None:
    for seed in SEEDS:
        rng = random.Random(f"sql:{seed}")
        secret, core = make_secret(rng, punct=rng.random() < 0.3)
        literal = "'" + secret.replace("\\", "\\\\").replace("'", "''") + "'"
        sql = rng.choice([
            f"ALTER USER 'u'@'%' IDENTIFIED BY {literal}",
            f"CREATE USER IF NOT EXISTS 'u'@'localhost' IDENTIFIED BY {literal}",
            f"SET PASSWORD FOR 'u'@'%' = PASSWORD({literal})",
            f"SET PASSWORD FOR 'u'@'%' = {literal}",
            f"ALTER ROLE u WITH PASSWORD {literal}",
            f"UPDATE `tabEmail Account` SET `password`={literal} WHERE name='x'",
            f"UPDATE tabUser SET api_secret = {literal}",
            f"INSERT INTO `__Auth` (`doctype`,`name`,`fieldname`,`password`,`encrypted`) VALUES "
            f"('User','x','password',{literal},1)",
        ])
        assert not leaked(core, redact_text(sql)), (seed, sql, redact_text(sql))


def test_generated_plain_text_is_untouched() -> None:
    for seed in SEEDS:
        rng = random.Random(f"plain:{seed}")
        text = call_string(rng, None, truncate=rng.random() < 0.5)
        assert redact_text(text) == text
        url = f"redis://{rng.choice(['', 'default@'])}127.0.0.1:{rng.randint(1, 65535)}/{rng.randint(0, 15)}"
        assert redact_url(url) == url


def test_siblings_of_a_secret_are_untouched() -> None:
    for seed in SEEDS:
        rng = random.Random(f"siblings:{seed}")
        value, core = secret_values(rng)
        text = f"{FRAPPE}({rng.choice(SECRET_NAMES)}={value}, method='a.b', site='s1', user='Administrator')"
        redacted = redact_text(text)
        assert not leaked(core, redacted), (seed, text)
        assert redacted.endswith(", method='a.b', site='s1', user='Administrator')"), (seed, text, redacted)
