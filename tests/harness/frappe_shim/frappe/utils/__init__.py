"""Utility subset: bench id, as in ``frappe/utils/__init__.py``."""

from __future__ import annotations

import frappe


def get_bench_id() -> str:
    """``bench_id`` from config, else the bench path with ``/`` turned into ``-``."""
    return frappe.get_conf().get("bench_id", frappe.get_bench_path().strip("/").replace("/", "-"))
