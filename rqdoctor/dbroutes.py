"""Privileged routes to a bench's database servers, tried before the site accounts.

A Frappe site account has ``USAGE ON *.*`` and ``ALL`` on its own database: it cannot read the lock
views. A bench host usually offers better, read-only-usable routes; per server, in order:

1. ``--db-url`` accounts (the user's explicit choice);
2. ``root_login``/``root_password`` from the site's merged config (Frappe's own root keys), against the
   site's db host/port (MariaDB user ``root`` unless ``root_login`` is set; PostgreSQL ``postgres``);
3. when rqdoctor runs as OS root and the server is local: its Unix socket (MariaDB ``root`` via
   ``unix_socket`` auth; PostgreSQL ``postgres`` then ``root``, which work with ``trust`` or, for a role
   named ``root``, ``peer``);
4. the site account.

``--no-root-db`` or ``RQDOCTOR_NO_ROOT_DB=1`` keeps only 1 and 4.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from rqdoctor.config import DB_DEFAULT_PORTS, DbTarget, Target

DISABLE_ENV = "RQDOCTOR_NO_ROOT_DB"
MARIADB_SOCKETS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")
POSTGRES_SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
ROUTE_DB_URL, ROUTE_ROOT_PASSWORD, ROUTE_SOCKET, ROUTE_SITE = "--db-url", "root_password", "unix_socket", "site_account"


def disabled(flag: bool, env: Mapping[str, str]) -> bool:
    """True when the privileged routes are turned off (flag, or ``RQDOCTOR_NO_ROOT_DB`` set to a true value)."""
    return flag or env.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def route_of(target: DbTarget) -> str:
    """The route a candidate stands for."""
    if target.admin:
        return ROUTE_DB_URL
    if target.source.startswith(ROUTE_ROOT_PASSWORD):
        return ROUTE_ROOT_PASSWORD
    if target.source.startswith(ROUTE_SOCKET):
        return ROUTE_SOCKET
    return ROUTE_SITE


def is_privileged_route(target: DbTarget) -> bool:
    """A route this module added (its failures are notes, not errors)."""
    return route_of(target) in (ROUTE_ROOT_PASSWORD, ROUTE_SOCKET)


def plan(target: Target, allow_root: bool) -> list[list[DbTarget]]:
    """Candidates per server, in the order they are tried."""
    from rqdoctor.probes.database import server_groups

    configs = {f"site:{s.name}": s.config for s in target.sites}
    groups = []
    for group in server_groups(target.db_targets):
        sites = [t for t in group if not t.admin]
        routes: list[DbTarget] = []
        if allow_root and sites:
            routes = _dedupe([r for s in sites for r in root_password_routes(s, configs.get(s.source, {}))]
                             + socket_routes(sites[0], os.geteuid() == 0))
        groups.append([t for t in group if t.admin] + routes + sites)
    return groups


def scope(target: Target) -> list[str]:
    """Databases the bench's report is about: its sites' and the ``--db-url`` ones (empty: no filter)."""
    if target.bench is None:
        return []
    return sorted({t.database for t in target.db_targets if t.database})


def root_password_routes(site: DbTarget, config: Mapping[str, object]) -> list[DbTarget]:
    """Frappe's ``root_login``/``root_password`` keys, against the site's own host and port."""
    password = config.get("root_password")
    if not password:
        return []
    default = "root" if site.kind == "mariadb" else "postgres"
    user = str(config.get("root_login") or default)
    database = site.database if site.kind == "postgres" else ""
    return [DbTarget(kind=site.kind, host=site.host, port=site.port, socket=site.socket, user=user,
                     password=str(password), database=database,
                     source=f"{ROUTE_ROOT_PASSWORD} in the config of {site.source.removeprefix('site:')}")]


def socket_routes(site: DbTarget, os_root: bool) -> list[DbTarget]:
    """The local server's Unix socket, as OS root (passwordless ``unix_socket``/``peer``/``trust`` logins)."""
    if not os_root or (not site.socket and site.host not in LOCAL_HOSTS):
        return []
    port = site.port or DB_DEFAULT_PORTS[site.kind]
    if site.kind == "mariadb":
        paths = [site.socket] if site.socket else [p for p in MARIADB_SOCKETS if _is_socket(p)]
        return [_socket_target(site, p, "root", port) for p in dict.fromkeys(os.path.realpath(p) for p in paths)]
    dirs = [site.socket] if site.socket else list(POSTGRES_SOCKET_DIRS)
    found = [d for d in dirs if _is_socket(os.path.join(d, f".s.PGSQL.{port}"))]
    found = list(dict.fromkeys(os.path.realpath(d) for d in found))
    return [_socket_target(site, d, user, port) for d in found[:1] for user in ("postgres", "root")]


def _socket_target(site: DbTarget, path: str, user: str, port: int) -> DbTarget:
    return DbTarget(kind=site.kind, host="localhost", port=port, socket=path, user=user,
                    database=site.database if site.kind == "postgres" else "",
                    source=f"{ROUTE_SOCKET} {path} as OS root")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _dedupe(targets: list[DbTarget]) -> list[DbTarget]:
    seen: set[tuple[object, ...]] = set()
    kept = []
    for t in targets:
        key = (t.key(), t.user, t.password)
        if key not in seen:
            seen.add(key)
            kept.append(t)
    return kept
