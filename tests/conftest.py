"""Shared fixtures: private Redis DBs, SQL databases, rq flavour venvs, benches, workers.

Tests that use any service fixture are marked ``integration`` automatically (plus ``mariadb`` /
``postgres``). A fixture whose service is down skips the test loudly, or fails it when
``CI=true``. Tests asking for ``rq_flavour`` run once per flavour (``RQDOCTOR_TEST_FLAVOURS=
rq115,rq30`` narrows that); ``@pytest.mark.parametrize("rq_flavour", ["rq26"])`` picks some.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rqdoctor import scenarios
from tests.harness.bench import Bench
from tests.harness.services import UNAVAILABLE, DBInfo, private_database, private_redis_db
from tests.harness.venvs import ensure_venv, ensure_venvs, selected_flavours
from tests.harness.workers import Workers, running_workers, text_client

MARKERS = {
    "unit": "pure: no services, no processes (every test neither integration nor cli); `-m unit` runs in seconds",
    "cli": "runs the rqdoctor CLI or scenario processes, without services",
    "integration": "needs real services (Redis, databases) or worker processes",
    "slow": "takes more than a few seconds",
    "mariadb": "needs MariaDB (127.0.0.1:3306, root)",
    "postgres": "needs PostgreSQL (127.0.0.1:5432, postgres)",
}
_SERVICE_FIXTURES = {"redis_url", "redis_client", "bench", "make_bench", "workers", "rq_venv",
                     "mariadb", "postgres", "tarpit"}


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        for db in ("mariadb", "postgres"):
            if db in names:
                item.add_marker(getattr(pytest.mark, db))
        if item.get_closest_marker("integration") is None and item.get_closest_marker("cli") is None:
            item.add_marker(pytest.mark.unit)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if UNAVAILABLE:
        terminalreporter.section("rqdoctor: tests skipped, services unavailable", sep="!", red=True)
        for reason in sorted(set(UNAVAILABLE)):
            terminalreporter.line(reason, red=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """``redis://…/<db>``: a Redis DB (9-15) private to this test, flushed before and after."""
    with private_redis_db() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """``str``-returning redis-py client on the private DB (binary values: surrogateescape)."""
    client = text_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def mariadb() -> Iterator[DBInfo]:
    """A uniquely named MariaDB database, dropped afterwards."""
    with private_database("mariadb") as info:
        yield info


@pytest.fixture
def postgres() -> Iterator[DBInfo]:
    """A uniquely named PostgreSQL database, dropped afterwards."""
    with private_database("postgres") as info:
        yield info


@pytest.fixture(scope="session")
def rq_venvs() -> dict[str, Path]:
    """Every selected flavour's venv, built in parallel on first use (cached on disk)."""
    return ensure_venvs(selected_flavours())


@pytest.fixture(params=selected_flavours())
def rq_flavour(request: pytest.FixtureRequest) -> str:
    """Flavour name (rq115, rq116, rq26, rq30); tests using it run once per flavour."""
    return request.param


@pytest.fixture
def rq_venv(rq_flavour: str, rq_venvs: dict[str, Path]) -> Path:
    """Path of ``rq_flavour``'s venv."""
    return rq_venvs.get(rq_flavour) or ensure_venv(rq_flavour)


@pytest.fixture
def make_bench(tmp_path: Path, redis_url: str) -> Callable[..., Bench]:
    """Factory: ``make_bench(bench_id=None, workers=None, …) -> Bench`` on the private Redis DB."""
    counter = itertools.count()

    def make(**kwargs: Any) -> Bench:
        n = next(counter)
        root = tmp_path / ("frappe-bench" if n == 0 else f"frappe-bench-{n}")
        return Bench.create(root, kwargs.pop("redis_url", redis_url), **kwargs)

    return make


@pytest.fixture
def bench(make_bench: Callable[..., Bench]) -> Bench:
    """A default bench: two sites, derived bench id, ``redis_queue`` = the private DB."""
    return make_bench()


@pytest.fixture
def workers(redis_url: str) -> Iterator[Workers]:
    """Starts workers (``workers.frappe(bench, flavour)``); stops all of them at teardown."""
    with running_workers() as started:
        yield started


@pytest.fixture
def tarpit() -> Iterator[scenarios.Tarpit]:
    """A TCP listener that accepts and never answers; ``tarpit.url`` for http_no_timeout."""
    with scenarios.tarpit() as pit:
        yield pit
