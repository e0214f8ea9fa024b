"""Cached virtualenvs, one per rq flavour, built with the current interpreter.

Each venv lives in ``$RQDOCTOR_TEST_CACHE`` (default ``~/.cache/rqdoctor-tests``) under a
directory named after the flavour, the Python version and a hash of the pinned requirement
set, so changing a pin rebuilds it. Builds are serialised with ``fcntl.flock`` and a venv
only counts as built once its ``.complete`` marker exists, so a crashed build is redone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_FORMAT = 1  # bump to force a rebuild of every cached venv
_DB_DRIVERS = ("PyMySQL==1.1.1", "psycopg2-binary~=2.9.9")


@dataclass(frozen=True)
class Flavour:
    """One rq flavour: pinned requirements plus facts the tests rely on."""

    name: str
    requirements: tuple[str, ...]
    rq_major: int
    setproctitle: bool
    job_id_style: str  # "frappe15" (site::id), "frappe16" (site||id) or "plain"

    @property
    def composite_wip(self) -> bool:
        """rq >= 2 stores ``job_id:<execution id>`` in ``rq:wip:<queue>``."""
        return self.rq_major >= 2


RQ_FLAVOURS: dict[str, Flavour] = {
    "rq115": Flavour("rq115", ("rq==1.15.1", "redis==4.5.5", *_DB_DRIVERS), 1, False, "frappe15"),
    "rq116": Flavour(
        "rq116", ("rq==1.16.2", "redis~=5.2.0", "setproctitle~=1.3.3", *_DB_DRIVERS), 1, True,
        "frappe15",
    ),
    "rq26": Flavour("rq26", ("rq==2.6.1", "redis~=7.1.0", *_DB_DRIVERS), 2, False, "frappe16"),
    "rq30": Flavour(
        "rq30", ("rq~=3.0.0", "redis>=6", "setproctitle~=1.3.3", *_DB_DRIVERS), 3, True, "plain"
    ),
}
FLAVOUR_NAMES: tuple[str, ...] = tuple(RQ_FLAVOURS)


def selected_flavours() -> list[str]:
    """Flavours to test: ``$RQDOCTOR_TEST_FLAVOURS`` (comma-separated) or all of them."""
    wanted = [f.strip() for f in os.environ.get("RQDOCTOR_TEST_FLAVOURS", "").split(",") if f.strip()]
    unknown = set(wanted) - set(RQ_FLAVOURS)
    if unknown:
        raise ValueError(f"unknown rq flavour(s) {sorted(unknown)}; known: {list(RQ_FLAVOURS)}")
    return wanted or list(FLAVOUR_NAMES)


def cache_root() -> Path:
    """Directory holding the cached venvs and lock files."""
    root = os.environ.get("RQDOCTOR_TEST_CACHE") or "~/.cache/rqdoctor-tests"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_key(flavour: Flavour) -> str:
    blob = json.dumps(
        [_FORMAT, flavour.name, sorted(flavour.requirements), sys.version, os.path.realpath(sys.executable)]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def venv_dir(name: str) -> Path:
    """Where the venv for flavour ``name`` lives (built or not)."""
    flavour = RQ_FLAVOURS[name]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / f"{name}-{py}-{_cache_key(flavour)}"


def venv_python(venv: Path | str) -> Path:
    """Python interpreter of a venv, given its path or a flavour name."""
    path = venv_dir(venv) if isinstance(venv, str) and venv in RQ_FLAVOURS else Path(venv)
    return path / "bin" / "python"


def _log(msg: str) -> None:
    print(f"[rqdoctor-tests] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def ensure_venv(name: str) -> Path:
    """Return the venv for flavour ``name``, building it first if needed (process-safe)."""
    flavour = RQ_FLAVOURS[name]
    target = venv_dir(name)
    marker = target / ".complete"
    if marker.exists():
        return target
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another process built it while we waited
            return target
        start = time.monotonic()
        _log(f"building venv {target.name}: {' '.join(flavour.requirements)}")
        shutil.rmtree(target, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(target)])
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, *flavour.requirements])
        marker.write_text("\n".join(flavour.requirements) + "\n")
        _log(f"built {target.name} in {time.monotonic() - start:.1f}s")
    return target


def ensure_venvs(names: tuple[str, ...] | list[str] = FLAVOUR_NAMES, jobs: int = 2) -> dict[str, Path]:
    """Build several flavours concurrently; returns ``{name: venv path}``."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(names, pool.map(ensure_venv, names), strict=True))


if __name__ == "__main__":  # python -m tests.harness.venvs [flavour ...]
    for flavour_name, path in ensure_venvs(sys.argv[1:] or FLAVOUR_NAMES).items():
        print(flavour_name, path)
