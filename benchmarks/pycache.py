"""Measured commands run with byte-code caching, as an installed package runs (pip compiles it at install).

Under ``PYTHONDONTWRITEBYTECODE=1`` (set on some shells and CI images) an editable checkout is compiled
from source on every start: about 0.3-0.5 s for rqdoctor here, while the rq venvs come with their ``.pyc``.
Inside :func:`compiled`, the commands started meanwhile write and read their byte code under a private
``PYTHONPYCACHEPREFIX`` (nothing is written next to the sources); one warm-up run of each fills it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_VARIABLES = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


@contextmanager
def compiled() -> Iterator[str]:
    """Byte-code caching on for child processes, under a temporary cache folder (yielded)."""
    saved = {name: os.environ.get(name) for name in _VARIABLES}
    with tempfile.TemporaryDirectory(prefix="rqd-bench-pyc-") as cache:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = cache
        try:
            yield cache
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
