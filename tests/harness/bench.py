"""A Frappe-like bench laid out in a temporary directory.

Layout (as on a real bench)::

    <root>/sites/common_site_config.json   redis_queue, optional bench_id / workers
    <root>/sites/apps.txt
    <root>/sites/<site>/site_config.json    db_name, db_password (seeded secret), db_type
    <root>/apps/frappe/frappe/...           the frappe shim (tests/harness/frappe_shim)
    <root>/apps/rqdoctor_scenarios/rqdoctor/scenarios.py   job functions, importable by workers
    <root>/env -> <venv>                    created by attach_env()
    <root>/logs/
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HARNESS_DIR = Path(__file__).resolve().parent
SHIM_DIR = HARNESS_DIR / "frappe_shim"
SCENARIOS_FILE = HARNESS_DIR.parents[1] / "rqdoctor" / "scenarios.py"
DEFAULT_SITES = ("site1.local", "site2.local")
QUEUE_TYPES = ("short", "default", "long")


def derive_bench_id(bench_path: str | os.PathLike[str]) -> str:
    """Bench id exactly as Frappe derives it when ``bench_id`` is not configured."""
    return os.path.realpath(bench_path).strip("/").replace("/", "-")


def seeded_secret(seed: str, label: str, n: int = 16) -> str:
    """Deterministic secret-looking string (for redaction tests to search for)."""
    return "rqdsecret" + random.Random(f"{seed}:{label}").randbytes(n).hex()


@dataclass
class Bench:
    """Handle on a laid-out bench; create one with :meth:`create`."""

    root: Path
    redis_url: str
    sites: tuple[str, ...] = DEFAULT_SITES
    seed: str = "rqdoctor"
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        root: Path,
        redis_url: str,
        *,
        bench_id: str | None = None,
        workers: dict[str, dict[str, int]] | None = None,
        sites: tuple[str, ...] = DEFAULT_SITES,
        db_type: str = "mariadb",
        seed: str = "rqdoctor",
        extra_config: dict[str, Any] | None = None,
    ) -> Bench:
        """Lay out a bench under ``root`` (created) and return its handle."""
        root = Path(root)
        config: dict[str, Any] = {"redis_queue": redis_url, **(extra_config or {})}
        if bench_id is not None:
            config["bench_id"] = bench_id
        if workers:
            config["workers"] = workers
        bench = cls(root=root, redis_url=redis_url, sites=sites, seed=seed, config=config)
        for d in (bench.sites_path, bench.logs_path, bench.apps_path):
            d.mkdir(parents=True, exist_ok=True)
        _write_json(bench.sites_path / "common_site_config.json", config)
        (bench.sites_path / "apps.txt").write_text("frappe\n")
        for site in sites:
            site_dir = bench.sites_path / site
            site_dir.mkdir(exist_ok=True)
            _write_json(site_dir / "site_config.json", {
                "db_name": "_" + random.Random(f"{seed}:{site}:db").randbytes(8).hex(),
                "db_password": bench.db_password(site),
                "db_type": db_type,
            })
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(SHIM_DIR, bench.apps_path / "frappe", ignore=ignore, dirs_exist_ok=True)
        pkg = bench.apps_path / "rqdoctor_scenarios" / "rqdoctor"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text('"""Stub package so workers import only rqdoctor.scenarios."""\n')
        shutil.copy2(SCENARIOS_FILE, pkg / "scenarios.py")
        return bench

    @property
    def sites_path(self) -> Path:
        return self.root / "sites"

    @property
    def logs_path(self) -> Path:
        return self.root / "logs"

    @property
    def apps_path(self) -> Path:
        return self.root / "apps"

    @property
    def bench_id(self) -> str:
        """``bench_id`` from common_site_config, else derived from the real path."""
        return self.config.get("bench_id") or derive_bench_id(self.root)

    @property
    def pythonpath(self) -> str:
        """PYTHONPATH for workers: the frappe shim app and the scenarios stub."""
        return os.pathsep.join(
            [str(self.apps_path / "frappe"), str(self.apps_path / "rqdoctor_scenarios")]
        )

    def queue(self, qtype: str) -> str:
        """Full RQ queue name, ``<bench_id>:<qtype>``."""
        return f"{self.bench_id}:{qtype}"

    @property
    def queue_types(self) -> list[str]:
        """short, default, long, then custom ``workers`` queues (Frappe's order)."""
        return [*QUEUE_TYPES, *self.config.get("workers", {})]

    def db_password(self, site: str) -> str:
        """The seeded secret written as ``db_password`` in ``site``'s config."""
        return seeded_secret(self.seed, f"{site}:db_password")

    @property
    def secrets(self) -> list[str]:
        """Every secret this bench wrote to disk."""
        return [self.db_password(s) for s in self.sites]

    def attach_env(self, venv: Path) -> Path:
        """Point ``<bench>/env`` at ``venv`` (first caller wins); return the python to run.

        Returns ``<bench>/env/bin/python`` when env is (now) that venv, else ``<venv>/bin/python``,
        so one bench can also host workers of a second rq flavour.
        """
        env = self.root / "env"
        if not env.is_symlink() and not env.exists():
            env.symlink_to(venv, target_is_directory=True)
        if env.resolve() == Path(venv).resolve():
            return env / "bin" / "python"
        return Path(venv) / "bin" / "python"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
