"""Worker start-up and job execution shaped like Frappe v15's ``background_jobs.py``."""

from __future__ import annotations

import importlib
import os

import frappe
from frappe.utils import get_bench_id

DEFAULT_TIMEOUT = 300


def get_queues_timeout() -> dict[str, int]:
    """Queue type -> timeout; custom ``workers`` from common_site_config come last."""
    custom = frappe.get_conf().get("workers", {})
    return {
        "short": DEFAULT_TIMEOUT,
        "default": DEFAULT_TIMEOUT,
        "long": 1500,
        **{name: cfg.get("timeout", DEFAULT_TIMEOUT) for name, cfg in custom.items()},
    }


def generate_qname(qtype: str) -> str:
    """``<bench_id>:<qtype>``."""
    return f"{get_bench_id()}:{qtype}"


def get_queue_list(queue_list: list[str] | None = None, build_queue_name: bool = False) -> list[str]:
    """Validate queue types (all of them when none given) and optionally namespace them."""
    known = list(get_queues_timeout())
    queues = queue_list or known
    for qtype in queues:
        if qtype not in known:
            raise ValueError(f"Queue should be one of {', '.join(known)}")
    return [generate_qname(q) for q in queues] if build_queue_name else queues


def get_redis_conn():
    """Redis connection for ``redis_queue``."""
    from redis import Redis

    return Redis.from_url(frappe.get_conf().get("redis_queue", "redis://127.0.0.1:11000"))


def _worker_class():
    from rq import SimpleWorker, Worker

    return SimpleWorker if os.environ.get("RQDOCTOR_TEST_WORKER_CLASS") == "simple" else Worker


def _queues(queue: str | None) -> list[str]:
    return get_queue_list([q.strip() for q in queue.split(",")] if queue else None, build_queue_name=True)


def set_niceness() -> None:
    """Lower the worker's priority like Frappe does (``background_process_niceness``)."""
    nice = frappe.get_conf().get("background_process_niceness", 10)
    if nice:
        os.nice(int(nice))


def start_worker(queue: str | None = None, quiet: bool = False, burst: bool = False) -> None:
    """``bench worker``: one rq Worker (uuid name) on this bench's queues."""
    connection = get_redis_conn()
    queues = _queues(queue)
    set_niceness()
    worker = _worker_class()(queues, connection=connection)
    worker.work(
        logging_level="WARNING" if quiet else "INFO",
        burst=burst,
        date_format="%Y-%m-%d %H:%M:%S",
        log_format="%(asctime)s,%(msecs)03d %(message)s",
    )


def start_worker_pool(queue: str | None = None, num_workers: int = 1, burst: bool = False,
                      quiet: bool = False) -> None:
    """``bench worker-pool``: an rq WorkerPool of ``num_workers`` forked workers."""
    from rq.worker_pool import WorkerPool

    connection = get_redis_conn()
    queues = _queues(queue)
    set_niceness()
    pool = WorkerPool(queues=queues, connection=connection, num_workers=num_workers,
                      worker_class=_worker_class())
    pool.start(logging_level="WARNING" if quiet else "INFO", burst=burst)


def execute_job(site, method, event=None, job_name=None, kwargs=None, user=None, is_async=True,
                retry=0):
    """Import the dotted ``method`` (or take the callable) and call it with ``**kwargs``."""
    if callable(method):
        func = method
    else:
        module, _, attr = method.rpartition(".")
        func = getattr(importlib.import_module(module), attr)
    return func(**(kwargs or {}))
