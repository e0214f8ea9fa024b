"""Minimal fake ``frappe`` package for rqdoctor test benches (not the real framework)."""

from __future__ import annotations

import json
import os

__version__ = "15.0.0+rqdoctor.shim"


def get_bench_path() -> str:
    """Bench root, derived exactly like Frappe: three levels above this package."""
    return os.environ.get("FRAPPE_BENCH_ROOT") or os.path.realpath(
        os.path.join(os.path.dirname(__file__), "..", "..", "..")
    )


def get_conf() -> dict:
    """``sites/common_site_config.json`` as a dict ({} if missing)."""
    path = os.path.join(get_bench_path(), "sites", "common_site_config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
