"""Target discovery: where to look. Precedence: flags > environment > bench files > defaults."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil

from rqdoctor.endpoints import redis_address
from rqdoctor.errors import ConfigError
from rqdoctor.keyprefix import find_prefix
from rqdoctor.model import KnownEndpoint, SiteInfo, TargetInfo
from rqdoctor.redact import password_needs_encoding, redact_reason, redact_url, shown_url
from rqdoctor.rqkeys import DEFAULT_PREFIX

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
REDIS_ENV_VARS = ("RQDOCTOR_REDIS_URL", "FRAPPE_REDIS_QUEUE", "RQ_REDIS_URL", "REDIS_URL")
FRAPPE_QUEUE_TIMEOUTS = {"short": 300, "default": 300, "long": 1500}
"""Frappe's built-in queue timeouts (``get_queues_timeout``), the same in v14, v15 and v16."""
DB_DEFAULT_PORTS = {"mariadb": 3306, "mysql": 3306, "postgres": 5432}
COMMON_CONFIG = Path("sites") / "common_site_config.json"
REDIS_ROLES = ("redis_queue", "redis_cache", "redis_socketio")
"""common_site_config.json keys naming the bench's Redis servers."""
ENCODE_HINT = "percent-encode / ? # @ % in a password (%2F %3F %23 %40 %25)"


@dataclass
class DbTarget:
    """One database server to probe, with its (secret) credentials."""

    kind: str
    """``mariadb`` (also MySQL) or ``postgres`` (a v16 ``sqlite`` site has no server to probe)."""
    host: str = "127.0.0.1"
    port: int | None = None
    socket: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    database: str = ""
    source: str = ""
    """``--db-url``, ``site:<name>``."""

    @property
    def admin(self) -> bool:
        """Given explicitly with ``--db-url`` (expected to see every session)."""
        return self.source == "--db-url"

    def redacted(self) -> str:
        """A DSN safe to print."""
        scheme = "postgresql" if self.kind == "postgres" else "mysql"
        where = f"{self.host}:{self.port or DB_DEFAULT_PORTS[self.kind]}"
        if self.socket:
            where = f"localhost?unix_socket={self.socket}"
        auth = f"{self.user}:***@" if self.password else (f"{self.user}@" if self.user else "")
        path = f"/{self.database}" if self.database else ""
        if self.socket:
            return f"{scheme}://{auth}{where.split('?')[0]}{path}?{where.split('?')[1]}"
        return f"{scheme}://{auth}{where}{path}"

    def key(self) -> tuple[str, str, int | None, str]:
        """Identity of the server (several sites may share one)."""
        return (self.kind, self.host, self.port or DB_DEFAULT_PORTS[self.kind], self.socket)


@dataclass
class Site:
    """A Frappe site and its merged configuration."""

    name: str
    config: dict[str, Any] = field(repr=False)

    def db_target(self, env: Mapping[str, str]) -> DbTarget:
        """Credentials as Frappe resolves them (v15/v16 env overrides; user defaults to db_name)."""
        conf = self.config
        kind = env.get("FRAPPE_DB_TYPE") or conf.get("db_type") or "mariadb"
        kind = "postgres" if kind in ("postgres", "postgresql") else "sqlite" if kind == "sqlite" else "mariadb"
        name = env.get("FRAPPE_DB_NAME") or conf.get("db_name") or ""
        user = env.get("FRAPPE_DB_USER") or conf.get("db_user") or name
        port = env.get("FRAPPE_DB_PORT") or conf.get("db_port")
        if port and not _is_port(port):
            raise ConfigError(f"site {self.name}: db_port {str(port)[:40]!r} is not a port number",
                              "fix db_port in its site_config.json (or FRAPPE_DB_PORT)")
        host = env.get("FRAPPE_DB_HOST") or conf.get("db_host") or "127.0.0.1"
        socket = env.get("FRAPPE_DB_SOCKET") or conf.get("db_socket") or ""
        for key, value in (("db_host", host), ("db_socket", socket)):
            if not isinstance(value, str):
                raise ConfigError(f"site {self.name}: {key} is a JSON {type(value).__name__}, not a string",
                                  f"fix {key} in its site_config.json")
        return DbTarget(
            kind=kind,
            host=host,
            port=int(port) if port else None,
            socket=socket,
            user=str(user),
            password=str(env.get("FRAPPE_DB_PASSWORD") or conf.get("db_password") or ""),
            database=str(name),
            source=f"site:{self.name}",
        )

    def info(self, env: Mapping[str, str]) -> SiteInfo:
        """The site without secrets, for the snapshot."""
        db = self.db_target(env)
        return SiteInfo(self.name, db.kind, db.host, db.port, db.socket, db.database, db.user)


def _is_port(value: Any) -> bool:
    """A TCP port number: an int (not a bool) or ASCII digits, 1 to 65535."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


@dataclass
class Target:
    """Everything a command needs to know about where to look (holds secrets: never print it)."""

    redis_url: str = field(repr=False)
    redis_url_source: str
    bench: Path | None = None
    bench_source: str = ""
    bench_id: str | None = None
    bench_id_source: str = ""
    all_queues: bool = False
    queue_timeouts: dict[str, int] = field(default_factory=lambda: dict(FRAPPE_QUEUE_TIMEOUTS))
    sites: list[Site] = field(default_factory=list)
    db_targets: list[DbTarget] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    redis_roles: dict[str, str] = field(default_factory=dict, repr=False)
    """common_site_config.json ``redis_queue``/``redis_cache``/``redis_socketio`` -> URL (may hold passwords)."""
    key_prefix: str = DEFAULT_PREFIX
    key_prefix_source: str = "default"
    key_prefix_candidates: list[str] = field(default_factory=list)
    """Prefixes the Redis probe still chooses from (the one whose ``<p>:workers`` exists); empty: final."""
    key_prefix_titled: list[str] = field(default_factory=list)
    """Names of local workers known from their titles only (their environment blanked by setproctitle)."""

    @property
    def queue_filter(self) -> str | None:
        """Queue-name prefix of this bench (``<bench_id>:``), or None to show every queue."""
        if self.all_queues or not self.bench_id:
            return None
        return f"{self.bench_id}:"

    def info(self) -> TargetInfo:
        """The redacted view stored in the snapshot."""
        return TargetInfo(
            redis_url=redact_url(self.redis_url),
            redis_url_source=self.redis_url_source,
            bench_path=os.path.realpath(self.bench) if self.bench else None,
            bench_dirs=[d for d in (dir_id(self.bench), dir_id(self.bench / "sites")) if d] if self.bench else [],
            bench_source=self.bench_source,
            bench_id=self.bench_id,
            bench_id_source=self.bench_id_source,
            queue_filter=self.queue_filter,
            all_queues=self.all_queues,
            queue_timeouts=dict(self.queue_timeouts),
            sites=[s.info(self.env) for s in self.sites],
            db_urls=[d.redacted() for d in self.db_targets if d.admin],
            endpoints=self.endpoints(),
            key_prefix=self.key_prefix,
            key_prefix_source=self.key_prefix_source,
        )

    def endpoints(self) -> list[KnownEndpoint]:
        """The Redis servers common_site_config.json names, by ``host:port`` (unix sockets have none)."""
        return [KnownEndpoint(a, role, "common_site_config.json")
                for role, url in self.redis_roles.items() if (a := redis_address(url))]


def discover(
    redis_url: str | None = None,
    bench: str | None = None,
    all_queues: bool = False,
    db_urls: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    scan_processes: bool = True,
    key_prefix: str | None = None,
) -> Target:
    """Find the bench, its Redis and its databases.

    Running workers are consulted for the bench only when nothing else names one and the Redis
    is not chosen either (by ``--redis-url`` or the environment): a bench found that way brings
    its own Redis, so adopting it for another Redis would filter that Redis by a foreign bench id.
    The key prefix comes from ``key_prefix``, env ``RQ_KEY_PREFIX``, else the running workers' environment.
    """
    env = os.environ if env is None else env
    redis_chosen = "--redis-url" if redis_url else next((f"env {n}" for n in REDIS_ENV_VARS if env.get(n)), "")
    bench_path, bench_source = find_bench(bench, env, cwd or Path.cwd(), scan_processes, redis_chosen)
    common: dict[str, Any] = {}
    if bench_path is not None:
        common = read_json(bench_path / COMMON_CONFIG)
    url, url_source = _redis_url(redis_url, env, common, bench_path)
    check_redis_url(url, url_source)
    target = Target(redis_url=url, redis_url_source=url_source, bench=bench_path, bench_source=bench_source,
                    all_queues=all_queues, env=env)
    choice = find_prefix(key_prefix, env, scan_processes)
    target.key_prefix, target.key_prefix_source = choice.prefix, choice.source
    target.key_prefix_candidates, target.key_prefix_titled = choice.candidates, choice.titled
    if bench_path is not None:
        _apply_bench(target, bench_path, common)
    site_accounts = [s.db_target(env) for s in target.sites]
    target.db_targets = [parse_db_url(u) for u in db_urls or []] + [d for d in site_accounts if d.kind != "sqlite"]
    return target


def find_bench(flag: str | None, env: Mapping[str, str], cwd: Path, scan_processes: bool,
               redis_chosen: str = "") -> tuple[Path | None, str]:
    """The bench root and how it was found, or None and why no bench is used.

    Raises a ConfigError listing them when running workers belong to several benches and nothing chose one.
    """
    if flag:
        return _checked_bench(Path(flag), "--bench"), "--bench"
    if env.get("FRAPPE_BENCH_ROOT"):
        return _checked_bench(Path(env["FRAPPE_BENCH_ROOT"]), "FRAPPE_BENCH_ROOT"), "FRAPPE_BENCH_ROOT"
    for folder in (cwd, *cwd.parents):
        if (folder / COMMON_CONFIG).is_file():
            return folder, "current directory"
    if redis_chosen:
        return None, (f"none: Redis chosen by {redis_chosen} without --bench (running workers' benches are not "
                      "adopted), every queue shown")
    if not scan_processes:
        return None, "none: not in a bench directory, no --bench or FRAPPE_BENCH_ROOT"
    benches = running_benches()
    if len(benches) == 1:
        (path, pids), = benches.items()
        return path, f"running Frappe workers (pid {', '.join(map(str, pids))})"
    if benches:
        raise ConfigError(
            f"Frappe workers of {len(benches)} benches run on this host and none was chosen; pick one with --bench",
            "rqdoctor <command> --bench <path>, or --redis-url <url> for one Redis, with every queue",
            [_bench_line(path, pids) for path, pids in benches.items()])
    return None, "none: not in a bench directory, no --bench or FRAPPE_BENCH_ROOT, no running Frappe workers"


def _bench_line(path: Path, pids: list[int]) -> str:
    """One line about a bench found from its running workers (its Redis masked, its bench id)."""
    try:
        common = read_json(path / COMMON_CONFIG)
    except ConfigError as exc:
        return f"{path}: worker pids {', '.join(map(str, pids))}; {exc.message}"
    redis_queue = shown_url(str(common["redis_queue"])) if common.get("redis_queue") else "no redis_queue"
    bench_id = str(common.get("bench_id") or derive_bench_id(path))
    return f"{path}: bench_id {bench_id}, redis {redis_queue}, worker pids {', '.join(map(str, pids))}"


def _checked_bench(path: Path, source: str) -> Path:
    if not (path / COMMON_CONFIG).is_file():
        raise ConfigError(f"{path / COMMON_CONFIG}: not found (bench given by {source})",
                          "point --bench at the bench root, the folder holding sites/ and apps/")
    return path


def dir_id(path: str | Path) -> str | None:
    """``<st_dev>:<st_ino>`` of a directory (None: unreadable): one directory's identity across mount namespaces."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def running_benches() -> dict[Path, list[int]]:
    """Bench root -> pids of its running Frappe/RQ workers (their cwd is ``<bench>/sites``), sorted by path.

    A worker in a container (another mount namespace, so another root) has its bench under ``/proc/<pid>/root``:
    that path is used, and containers sharing one bench volume count as one bench (the same
    common_site_config.json file).
    """
    found: dict[Path, list[int]] = {}
    seen: dict[tuple[int, int], Path] = {}
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        frappe_worker = "frappe.utils.bench_helper" in argv and any(a in ("worker", "worker-pool") for a in argv)
        if frappe_worker or " ".join(argv).startswith("rq:worker:"):  # the title rq sets with setproctitle
            try:
                sites = _seen_from_here(proc.pid, Path(proc.cwd()))
                config = (sites.parent / COMMON_CONFIG).stat()
            except (psutil.Error, OSError, ValueError):
                continue
            if not stat.S_ISREG(config.st_mode):
                continue
            root = seen.setdefault((config.st_dev, config.st_ino), _bench_root(sites.parent))
            found.setdefault(root, []).append(proc.pid)
    return {path: sorted(found[path]) for path in sorted(found)}


def _seen_from_here(pid: int, cwd: Path) -> Path:
    """``cwd`` of ``pid`` as rqdoctor can open it: under ``/proc/<pid>/root`` when the process has another root."""
    root, own = os.stat(f"/proc/{pid}/root"), os.stat("/")
    if (root.st_dev, root.st_ino) == (own.st_dev, own.st_ino):
        return cwd
    return Path(f"/proc/{pid}/root") / cwd.relative_to("/")


def _bench_root(path: Path) -> Path:
    """The bench path, resolved (``/proc/<pid>/root/…`` kept: resolving it would leave the container)."""
    return path if str(path).startswith("/proc/") else Path(os.path.realpath(path))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a bench file, or a one-line ConfigError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _redis_url(flag: str | None, env: Mapping[str, str], common: dict[str, Any],
               bench: Path | None) -> tuple[str, str]:
    if flag:
        return flag, "--redis-url"
    for name in REDIS_ENV_VARS:
        if env.get(name):
            return env[name], f"env {name}"
    if common.get("redis_queue"):
        return str(common["redis_queue"]), f"{bench / COMMON_CONFIG} redis_queue" if bench else "bench"
    return DEFAULT_REDIS_URL, "default"


def check_redis_url(url: str, source: str) -> None:
    """A one-line ConfigError naming where the URL came from when redis-py cannot use it (password masked)."""
    from redis.connection import parse_url  # here: redis costs ~0.1 s to import, and `--from` / `--help` need none

    hint = f"use redis://[:password@]host:port/db, rediss://… (TLS) or unix:///path/to.sock?db=N; {ENCODE_HINT}"
    if password_needs_encoding(url):
        raise ConfigError(f"Redis URL from {source} ({shown_url(url)}): its password holds an unencoded / ? or #",
                          hint)
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"Redis URL from {source} ({shown_url(url)}): {redact_reason(exc)}", hint) from None


def _apply_bench(target: Target, bench: Path, common: dict[str, Any]) -> None:
    if common.get("bench_id"):
        target.bench_id, target.bench_id_source = str(common["bench_id"]), "common_site_config.json bench_id"
    else:
        target.bench_id = derive_bench_id(bench)
        target.bench_id_source = "derived from the bench path"
    workers = common.get("workers")
    if isinstance(workers, dict):
        for name, conf in workers.items():
            target.queue_timeouts[str(name)] = _queue_timeout(conf.get("timeout") if isinstance(conf, dict) else None)
    target.sites = list(read_sites(bench, common))
    target.redis_roles = {k: str(common[k]) for k in REDIS_ROLES if common.get(k)}


def _queue_timeout(value: Any) -> int:
    """A custom queue's timeout as Frappe hands it to rq (``-1``: none); Frappe's 300 when unset or unusable."""
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return FRAPPE_QUEUE_TIMEOUTS["default"]


def derive_bench_id(bench: Path) -> str:
    """Frappe's ``get_bench_id`` default: the real path without its outer slashes, ``/`` -> ``-``."""
    return os.path.realpath(bench).strip("/").replace("/", "-")


def read_sites(bench: Path, common: dict[str, Any]) -> list[Site]:
    """Each folder of ``sites/`` with a ``site_config.json``, merged over the common config."""
    sites = []
    for folder in sorted((bench / "sites").iterdir()):
        config_file = folder / "site_config.json"
        if folder.is_dir() and config_file.is_file():
            sites.append(Site(folder.name, {**common, **read_json(config_file)}))
    return sites


def parse_db_url(url: str) -> DbTarget:
    """``mysql://``/``mariadb://`` or ``postgres(ql)://`` URL -> DbTarget (``?unix_socket=`` / ``?host=/dir``)."""
    usage = f"use mysql://user:pass@host:port/db or postgresql://user@host:port/db; {ENCODE_HINT}"
    if "://" not in url:
        raise ConfigError("--db-url: not a URL", usage)  # not echoed: it may hold a password redact_url cannot see
    if password_needs_encoding(url):
        raise ConfigError(f"--db-url {shown_url(url)}: its password holds an unencoded / ? or #", usage)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"--db-url {shown_url(url)}: {redact_reason(exc)}", usage) from None
    scheme = parts.scheme.split("+")[0]
    kinds = {"mysql": "mariadb", "mariadb": "mariadb", "postgres": "postgres", "postgresql": "postgres"}
    if scheme not in kinds:
        raise ConfigError(f"--db-url {shown_url(url)}: unknown scheme {parts.scheme!r}", usage)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    socket = unquote(query.get("unix_socket", "") or query.get("host", ""))
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--db-url {shown_url(url)}: bad port", usage) from None
    return DbTarget(
        kind=kinds[scheme],
        host=parts.hostname or "127.0.0.1",
        port=port,
        socket=socket,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")),
        source="--db-url",
    )
