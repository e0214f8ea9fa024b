"""Frappe leftovers for ``stuck``: ``sites/<site>/locks/*.lock`` files and Scheduled Job Log rows in ``Start``.

Read-only. Lock files are listed (name, mtime) with their ``/proc/locks`` holders; at most
:data:`MAX_LOCKS` per site. Each site's database is read through its own account (from its
site_config.json), one statement each, under the deadline: the ``Start`` rows with their type's method,
and the methods of the enabled Scheduled Job Types (whose job ids are then looked up directly).
An account that cannot read the table is an error entry, never a verdict.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rqdoctor.config import DbTarget, Target
from rqdoctor.deadline import Deadline
from rqdoctor.model import (
    DocLockFile,
    FrappeState,
    JobLogFailures,
    JobLogRow,
    ProbeError,
    ScheduledJobTypeRow,
    SiteScheduler,
)
from rqdoctor.probes.procfs import locks_of

PROBE = "frappe"
MAX_LOCKS = 1000
MAX_ROWS = 200
START_ROWS = {
    "mariadb": "SELECT l.name, l.scheduled_job_type, t.method, CAST(l.creation AS CHAR), "
               "TIMESTAMPDIFF(SECOND, l.creation, NOW()) FROM `tabScheduled Job Log` l "
               "LEFT JOIN `tabScheduled Job Type` t ON t.name = l.scheduled_job_type "
               f"WHERE l.status = 'Start' ORDER BY l.creation LIMIT {MAX_ROWS}",
    "postgres": 'SELECT l.name, l.scheduled_job_type, t.method, CAST(l.creation AS TEXT), '
                'EXTRACT(EPOCH FROM (LOCALTIMESTAMP - l.creation)) FROM "tabScheduled Job Log" l '
                'LEFT JOIN "tabScheduled Job Type" t ON t.name = l.scheduled_job_type '
                f"WHERE l.status = 'Start' ORDER BY l.creation LIMIT {MAX_ROWS}",
}
TIME_ZONE = {
    "mariadb": "SELECT value FROM `tabSingles` WHERE doctype = 'System Settings' AND field = 'time_zone'",
    "postgres": 'SELECT value FROM "tabSingles" WHERE doctype = \'System Settings\' AND field = \'time_zone\'',
}
METHODS = {
    "mariadb": "SELECT method FROM `tabScheduled Job Type` WHERE stopped = 0 ORDER BY method LIMIT 1000",
    "postgres": 'SELECT method FROM "tabScheduled Job Type" WHERE stopped = 0 ORDER BY method LIMIT 1000',
}


def lock_files(bench: str, sites: list[str], errors: list[ProbeError]) -> tuple[list[str], list[DocLockFile]]:
    """The ``*.lock`` files of each site's ``locks`` directory, with their holders."""
    dirs, out = [], []
    for site in sites:
        folder = Path(bench) / "sites" / site / "locks"
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            dirs.append(str(folder))  # no locks directory: no lock was ever taken
            continue
        except OSError as exc:
            errors.append(ProbeError(PROBE, "permission", f"{folder}: cannot list ({exc.strerror or exc})",
                                     "run rqdoctor as the bench user or root", str(folder)))
            continue
        dirs.append(str(folder))
        files = [e for e in entries if e.name.endswith(".lock") and e.is_file(follow_symlinks=False)]
        if len(files) > MAX_LOCKS:
            errors.append(ProbeError(PROBE, "truncated", f"{folder}: {len(files)} lock files, only the first "
                                     f"{MAX_LOCKS} read", "", str(folder)))
        for entry in files[:MAX_LOCKS]:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
            out.append(DocLockFile(site, entry.path, entry.name.removesuffix(".lock"), st.st_mtime,
                                   held_by=locks_of(st.st_ino, dev)))
    return dirs, out


def read_frappe(target: Target, deadline: Deadline, errors: list[ProbeError], database: bool = True) -> FrappeState:
    """Lock files of every site, and (``database``) each site's Start rows and scheduled methods."""
    state = FrappeState()
    if target.bench is None:
        return state
    names = [s.name for s in target.sites]
    state.lock_dirs, state.locks = lock_files(str(target.bench), names, errors)
    if not database:
        return state
    for db in target.db_targets:
        site = db.source.removeprefix("site:")
        if not db.source.startswith("site:") or db.kind not in START_ROWS:
            continue
        if deadline.expired():
            errors.append(ProbeError(PROBE, "timeout", f"Scheduled Job Log of {site} not read: the deadline passed",
                                     "raise --timeout", f"site {site}"))
            continue
        try:
            rows, methods, zone = _read_site(db, deadline)
        except Exception as exc:  # any driver error: an entry, no verdict
            errors.append(_db_error(db, site, exc))
            continue
        state.job_log_sites.append(site)
        for r in rows:
            row = JobLogRow(site, str(r[0]), str(r[1] or ""), r[2], str(r[3] or ""),
                            float(r[4]) if r[4] is not None else None)
            local = _age_in_zone(row.creation, zone)
            if local is not None:
                row.age_s, row.time_zone = local, zone
            state.job_log_rows.append(row)
        state.scheduled_methods[site] = [str(m[0]) for m in methods if m[0]]
    return state


def _age_in_zone(creation: str, zone: str | None) -> float | None:
    """Seconds since ``creation`` (naive, as Frappe writes it in the System Settings time zone), or None."""
    if not zone or not creation:
        return None
    try:
        when = dt.datetime.fromisoformat(creation.strip()).replace(tzinfo=ZoneInfo(zone))
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return None
    return time.time() - when.timestamp()


def _read_site(db: DbTarget, deadline: Deadline) -> tuple[list[tuple], list[tuple], str | None]:
    if db.kind == "mariadb":
        from rqdoctor.probes.db_mariadb import connect
    else:
        from rqdoctor.probes.db_postgres import connect  # type: ignore[assignment]
    conn = connect(db, deadline) if db.kind == "mariadb" else connect(db, deadline, db.database)
    try:
        if db.kind == "mariadb":
            with conn.cursor() as cur:
                cur.execute(f"USE `{db.database}`")
                cur.execute(START_ROWS["mariadb"])
                rows = list(cur.fetchall())
                cur.execute(METHODS["mariadb"])
                methods = list(cur.fetchall())
                zone = _optional(lambda: (cur.execute(TIME_ZONE["mariadb"]), cur.fetchone())[1])
                return rows, methods, zone
        rows = list(conn.execute(START_ROWS["postgres"]).fetchall())
        methods = list(conn.execute(METHODS["postgres"]).fetchall())
        return rows, methods, _optional(lambda: conn.execute(TIME_ZONE["postgres"]).fetchone())
    finally:
        conn.close()


def _optional(read: Callable[[], Any]) -> str | None:
    """The first column of an optional one-row read (None when the table or row is missing)."""
    try:
        row = read()
    except Exception:
        return None
    return str(row[0]) if row and row[0] else None


def _db_error(db: DbTarget, site: str, exc: BaseException) -> ProbeError:
    from rqdoctor.probes.database import describe_error

    error = describe_error(db, exc, f"Scheduled Job Log of {site} unreadable: ")
    return ProbeError(PROBE, error.kind, error.message, error.hint or "check the site's database account",
                      f"site {site}")


def _q(kind: str, table: str) -> str:
    return f"`{table}`" if kind == "mariadb" else f'"{table}"'


def scheduler_statements(kind: str) -> dict[str, str]:
    """The read-only statements ``scheduler`` runs on each site's database (MariaDB or PostgreSQL)."""
    text = "CHAR" if kind == "mariadb" else "TEXT"
    day_ago = "NOW() - INTERVAL 1 DAY" if kind == "mariadb" else "LOCALTIMESTAMP - INTERVAL '1 day'"
    return {
        "settings": f"SELECT field, value FROM {_q(kind, 'tabSingles')} WHERE doctype = 'System Settings' "
                    "AND field IN ('enable_scheduler', 'dormant_days', 'time_zone')",
        "now": f"SELECT CAST({'NOW()' if kind == 'mariadb' else 'LOCALTIMESTAMP'} AS {text})",
        "activity": f"SELECT CAST(MAX(creation) AS {text}) FROM {_q(kind, 'tabActivity Log')}",
        "types": f"SELECT name, method, frequency, cron_format, CAST(last_execution AS {text}), stopped "
                 f"FROM {_q(kind, 'tabScheduled Job Type')} ORDER BY name LIMIT 1000",
        "failures": f"SELECT scheduled_job_type, COUNT(*), CAST(MAX(creation) AS {text}) "
                    f"FROM {_q(kind, 'tabScheduled Job Log')} WHERE status = 'Failed' AND creation > {day_ago} "
                    "GROUP BY scheduled_job_type ORDER BY COUNT(*) DESC LIMIT 20",
        "details": f"SELECT details FROM {_q(kind, 'tabScheduled Job Log')} WHERE status = 'Failed' AND "
                   "scheduled_job_type = %s ORDER BY creation DESC LIMIT 1",
    }


MAX_DETAILS = 5
"""Scheduled job types (most failures first) whose newest failure's traceback is read."""


def read_scheduler_site(db: DbTarget, deadline: Deadline, state: SiteScheduler) -> None:
    """System Settings, the last activity, the Scheduled Job Types and the last day's failures of one site."""
    sql = scheduler_statements(db.kind)
    if db.kind == "mariadb":
        from rqdoctor.probes.db_mariadb import connect

        conn = connect(db, deadline)
        try:
            with conn.cursor() as cur:
                cur.execute(f"USE `{db.database}`")

                def run(name: str, *args: Any) -> list[tuple]:
                    cur.execute(sql[name], args or None)
                    return list(cur.fetchall())
                _fill(state, run)
        finally:
            conn.close()
        return
    from rqdoctor.probes.db_postgres import connect as pg_connect

    pg = pg_connect(db, deadline, db.database)
    try:
        _fill(state, lambda name, *args: list(pg.execute(sql[name], args or None).fetchall()))
    finally:
        pg.close()


def _fill(state: SiteScheduler, run: Callable[..., list[tuple]]) -> None:
    settings = {str(f): v for f, v in run("settings")}
    enable = settings.get("enable_scheduler")
    state.enable_scheduler = None if enable is None else str(enable).strip() not in ("", "0")
    try:
        state.dormant_days = int(float(settings["dormant_days"])) if settings.get("dormant_days") else None
    except (TypeError, ValueError):
        state.dormant_days = None
    state.time_zone = str(settings["time_zone"]) if settings.get("time_zone") else None
    state.db_now = str(run("now")[0][0])
    state.last_activity = _optional(lambda: run("activity")[0])
    state.job_types = [ScheduledJobTypeRow(str(r[0]), str(r[1] or ""), str(r[2] or ""), r[3] or None,
                                           str(r[4]) if r[4] else None, bool(r[5])) for r in run("types")]
    for r in run("failures"):
        failure = JobLogFailures(str(r[0]), int(r[1]), str(r[2] or ""))
        if len(state.failures) < MAX_DETAILS:
            details = run("details", failure.scheduled_job_type)
            failure.last_line = last_line(str(details[0][0] or "")) if details else ""
        state.failures.append(failure)
    state.db_read = True


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a traceback, cut to ``limit`` characters, secrets masked."""
    from rqdoctor.redact import redact_text

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact_text(lines[-1][:limit]) if lines else ""


def read_scheduler_sites(target: Target, deadline: Deadline, errors: list[ProbeError],
                         sites: dict[str, SiteScheduler]) -> None:
    """Fill each site's :class:`SiteScheduler` from its own database account; a failure is an error entry (a site
    whose database already failed in this run is not tried again)."""
    for db in target.db_targets:
        site = db.source.removeprefix("site:")
        if not db.source.startswith("site:") or db.kind not in START_ROWS or site not in sites:
            continue
        if any(e.probe == PROBE and e.subject == f"site {site}" for e in errors):
            continue  # its database already failed this run (that entry says why): not tried twice
        if deadline.expired():
            errors.append(ProbeError(PROBE, "timeout", f"scheduler settings of {site} not read: the deadline passed",
                                     "raise --timeout", f"site {site}"))
            continue
        try:
            read_scheduler_site(db, deadline, sites[site])
        except Exception as exc:  # any driver error: an entry, no verdict
            from rqdoctor.probes.database import describe_error

            error = describe_error(db, exc, f"scheduler settings of {site} unreadable: ")
            errors.append(ProbeError(PROBE, error.kind, error.message, error.hint or "check the site's database "
                                     "account", f"site {site}"))
