"""``rqdoctor target``: what was found where (bench, Redis, sites, databases), passwords masked."""

from __future__ import annotations

import dataclasses
import json

import typer

from rqdoctor.commands.options import AllQueues, Bench, DbUrl, Format, FormatOpt, RedisUrl
from rqdoctor.config import discover
from rqdoctor.render import text as text_render


def command(redis_url: RedisUrl = None, bench: Bench = None, all_queues: AllQueues = False, db_url: DbUrl = None,
            fmt: FormatOpt = Format.text) -> None:
    """Show where rqdoctor looks: the bench, its Redis, its sites and databases, and where each came from."""
    target = discover(redis_url=redis_url, bench=str(bench) if bench else None, all_queues=all_queues,
                      db_urls=db_url)
    info = target.info()
    if fmt is Format.json:
        typer.echo(json.dumps(dataclasses.asdict(info), indent=2))
    elif fmt is Format.markdown:
        typer.echo("| what | value |\n|---|---|")
        for key, value in dataclasses.asdict(info).items():
            typer.echo(f"| {key} | {json.dumps(value) if not isinstance(value, str) else value} |")
    else:
        from rich.console import Console

        Console(highlight=False).print(text_render.target(info))

