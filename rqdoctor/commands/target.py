"""``rqdoctor target``: what was found where (bench, Redis, sites, databases), passwords masked."""

from __future__ import annotations

import dataclasses

from rqdoctor.commands.common import emit_report
from rqdoctor.commands.options import AllQueues, Bench, DbUrl, Format, FormatOpt, KeyPrefix, RedisUrl
from rqdoctor.config import discover
from rqdoctor.model import TargetInfo
from rqdoctor.render.document import Code, Fact, Facts, Report, report, section


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, db_url: DbUrl = None,
            fmt: FormatOpt = Format.text, key_prefix: KeyPrefix = None) -> None:
    """Show where rqdoctor looks: the bench, its Redis, its sites and databases, and where each came from."""
    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                      db_urls=db_url, key_prefix=key_prefix)
    emit_report(target_report(target.info()), fmt, None)


def target_report(info: TargetInfo) -> Report:
    """Where rqdoctor looks and why; JSON: the target info as it is."""
    rows = [Fact("redis", (Code(info.redis_url), f"  (from {info.redis_url_source})")),
            Fact("bench", (Code(info.bench_path), f"  (from {info.bench_source})") if info.bench_path
                 else (info.bench_source or "none found",))]
    rows.append(Fact("key prefix", (Code(info.key_prefix), f"  ({info.key_prefix_source or 'default'})")))
    if info.bench_id:
        rows.append(Fact("bench id", (Code(info.bench_id), f"  ({info.bench_id_source})")))
    if info.queue_filter:
        queues = f"{info.queue_filter}* only (--all-queues shows every queue)"
    else:
        queues = "all (--all-queues)" if info.all_queues else "all (no bench, so no bench id to filter by)"
    rows.append(Fact("queues", (queues,)))
    if info.queue_timeouts:
        rows.append(Fact("timeouts", (", ".join(f"{q} {s}s" for q, s in info.queue_timeouts.items()),)))
    for site in info.sites:
        where = f"socket {site.db_socket}" if site.db_socket else f"{site.db_host}:{site.db_port or 'default'}"
        rows.append(Fact("site", (Code(site.name), f": {site.db_type} {where} db ", Code(site.db_name), " user ",
                                  Code(site.db_user))))
    rows += [Fact("db", (Code(url),)) for url in info.db_urls]
    return report("target", lambda: dataclasses.asdict(info), sections=[section("Target", Facts(tuple(rows)))])
