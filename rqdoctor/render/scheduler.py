"""The scheduler view (``rqdoctor scheduler``, and the Scheduler and Recent failures sections of ``report``).

:func:`scheduler_view` turns the snapshot's health part into plain rows (the JSON view); the ``*_blocks``
functions lay them out as report blocks. No verdict is made here: due times come from
:mod:`rqdoctor.diagnose.schedule`, the skipped / failing / killed judgements from the RQD6xx findings.
"""

from __future__ import annotations

from typing import Any

from rqdoctor.diagnose.rules_bench import top_methods
from rqdoctor.diagnose.rules_sched import dormant_for_s, recent_run, stuck_scheduled_id
from rqdoctor.diagnose.run import Diagnosis
from rqdoctor.diagnose.schedule import due, site_now
from rqdoctor.render.document import Block, Code, Items, Table
from rqdoctor.render.fmt import duration, value
from rqdoctor.render.layout import TEXT, Col

SWITCH = {True: "1", False: "0"}
LOCK_WORDS = {"held": "held (the scheduler runs)", "free": "free: nobody holds it", "missing": "missing",
              "unreadable": "not read"}


def scheduler_view(diagnosis: Diagnosis) -> dict[str, Any]:
    """The scheduler's process and lock, each site's settings and job types, rq cron schedulers, failed jobs."""
    snapshot = diagnosis.context.snapshot
    health = snapshot.health
    if health is None:
        return {"read": False}
    codes: dict[str, list[str]] = {}
    for f in diagnosis.findings:
        codes.setdefault(f.subject, []).append(f.code)
    sites, types = [], []
    for site in health.sites:
        quiet = dormant_for_s(site, snapshot) if site.db_read else None
        sites.append({"site": site.site, "flags": {f.key: f.value for f in site.flags if f.active},
                      "db_read": site.db_read, "enable_scheduler": site.enable_scheduler,
                      "dormant_days": site.dormant_days, "quiet_s": round(quiet) if quiet is not None else None,
                      "time_zone": site.time_zone, "findings": codes.get(f"site {site.site}", [])})
        now = site_now(site, snapshot.generated_at)
        for row in site.job_types:
            when = due(row, health, now) if now is not None and not row.stopped else None
            stuck = stuck_scheduled_id(diagnosis.context, site.site, row.method)
            types.append({"site": site.site, "name": row.name, "method": row.method, "frequency": row.frequency,
                          "cron": when.cron if when else row.cron_format, "stopped": row.stopped,
                          "last_execution": row.last_execution,
                          "next_due": when.next_due.isoformat(sep=" ") if when else None,
                          "late_s": round(when.late_s) if when else None,
                          "job_id_status": f"{stuck.status}: {stuck.job_id}" if stuck else None,
                          "findings": codes.get(f"scheduled job {site.site}/{row.name}", [])})
    lock = health.lock
    recent = recent_run(snapshot, health)
    return {
        "read": True,
        "recent_run": {"site": recent[0], "job_type": recent[1], "age_s": round(recent[2])} if recent else None,
        "lock": {"path": lock.path, "state": lock.state, "detail": lock.detail,
                 "held_by": [h.pid for h in lock.held_by]} if lock else None,
        "processes": [{"pid": p.pid, "cwd": p.cwd, "cmdline": " ".join(p.cmdline)} for p in health.processes],
        "tick_s": health.tick_s, "sites": sites, "job_types": types,
        "start_rows": [{"site": r.site, "name": r.name, "scheduled_job_type": r.scheduled_job_type,
                        "age_s": round(r.age_s) if r.age_s is not None else None}
                       for r in (snapshot.frappe.job_log_rows if snapshot.frappe else [])],
        "log_failures": [{"site": s.site, "scheduled_job_type": f.scheduled_job_type, "failed": f.failed,
                          "last_failed": f.last_failed, "last_line": f.last_line}
                         for s in health.sites for f in s.failures],
        "cron_schedulers": [{"name": c.name, "last_heartbeat": c.last_heartbeat, "hostname": c.hostname,
                             "pid": c.pid, "jobs": c.jobs} for c in health.cron_schedulers] if health.cron_read
        else None,
        "failed_total": health.failed_total,
        "failed_methods": [{"method": m, "count": c, "last_error": line}
                           for m, c, line in top_methods(health.failed, 10)] if health.failed_read else None,
        "oom_kills": health.oom_kills,
    }


def process_blocks(view: dict[str, Any]) -> list[Block]:
    """The lock file and the ``frappe schedule`` processes."""
    if not view.get("read"):
        return [Items((("the scheduler was not probed",),))]
    lines = []
    lock = view["lock"]
    if lock is None:
        lines.append(("no bench: the scheduler's lock and process were not probed",))
    else:
        holders = f" (pid {', '.join(map(str, lock['held_by']))})" if lock["held_by"] else ""
        lines.append(("lock ", Code(lock["path"]), f": {LOCK_WORDS.get(lock['state'], lock['state'])}{holders}"))
        procs = view["processes"]
        lines.append((f"{len(procs)} ", Code("frappe schedule"), " process(es)" + (": " if procs else ""),
                      *(Code(f"pid {p['pid']}") for p in procs)))
        recent = view["recent_run"]
        if recent and not procs and lock["state"] != "held":
            lines.append((Code(f"{recent['site']}/{recent['job_type']}"), f" started {duration(recent['age_s'])} "
                          "ago: a scheduler runs, elsewhere (another host or container); run rqdoctor there",))
    return [Items(tuple(lines))]


SITE_COLUMNS = (Col("site", code=True), Col("config"), Col("enable_scheduler"), Col("quiet for"),
                Col("findings", TEXT))
TYPE_COLUMNS = (Col("site", code=True, drop=2), Col("job type", code=True), Col("cron"), Col("last run"),
                Col("next due"), Col("late"), Col("job id", TEXT, drop=1), Col("findings", TEXT))


def site_blocks(view: dict[str, Any]) -> list[Block]:
    """Each site's scheduler settings, then its job types with their next due time."""
    if not view.get("read") or not view["sites"]:
        return [Items((("no site was read",),))]
    rows = tuple((s["site"], ", ".join(f"{k}={v}" for k, v in s["flags"].items()) or "-",
                  SWITCH.get(s["enable_scheduler"], "-") if s["db_read"] else "not read", duration(s["quiet_s"]),
                  value(", ".join(s["findings"]))) for s in view["sites"])
    out: list[Block] = [Table(SITE_COLUMNS, rows)]
    types = [t for t in view["job_types"] if not t["stopped"]]
    if types:
        out.append(Table(TYPE_COLUMNS, tuple(
            (t["site"], t["name"], value(t["cron"]), value(t["last_execution"]), value(t["next_due"]),
             duration(t["late_s"]) if t["late_s"] else "-", value(t["job_id_status"]), value(", ".join(t["findings"])))
            for t in types)))
    return out


def log_blocks(view: dict[str, Any]) -> list[Block]:
    """Scheduled Job Log: rows left in Start and the last day's failures."""
    if not view.get("read"):
        return []
    lines = [(f"{len(view['start_rows'])} Scheduled Job Log row(s) in Start",)]
    lines += [(Code(f"{f['site']}/{f['scheduled_job_type']}"), f": {f['failed']} failed in the last day; "
               f"{f['last_line'] or 'no traceback read'}") for f in view["log_failures"]]
    return [Items(tuple(lines))]


def cron_blocks(view: dict[str, Any]) -> list[Block]:
    """rq's own cron schedulers (plain RQ), when any is registered."""
    crons = view.get("cron_schedulers")
    if not crons:
        return []
    return [Items(tuple((Code(c["name"]), f": {len(c['jobs'])} cron job(s), host {c['hostname'] or '?'} pid "
                         f"{c['pid'] or '?'}") for c in crons))]


FAILED_COLUMNS = (Col("method", code=True), Col("failed"), Col("last error", TEXT))


def failure_blocks(view: dict[str, Any]) -> list[Block]:
    """The newest failed jobs per method with their last error line."""
    methods = view.get("failed_methods")
    if methods is None:
        return [Items((("the failed registries' errors were not read",),))]
    if not methods:
        return [Items((("no failed job in the failed registries",),))]
    out: list[Block] = [Table(FAILED_COLUMNS, tuple((m["method"], str(m["count"]), value(m["last_error"]))
                                                    for m in methods))]
    ooms = {p: n for p, n in view["oom_kills"].items() if n}
    if ooms:
        out.append(Items(tuple((Code(p), f": oom_kill {n}") for p, n in sorted(ooms.items()))))
    return out
