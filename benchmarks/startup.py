"""Start-up: ``rqdoctor --help``, ``rqdoctor workers --help`` and ``rqdoctor workers --from <snapshot>`` side by
side with ``rq --help``.

Each command runs as its console script under its venv's Python, with byte-code caching on
(:mod:`benchmarks.pycache`, after one warm-up run each). Wall time is the median of the timed runs
(interleaved, so load spikes hit every command alike); the modules each imports, and the import time
they cost, come from one ``python -X importtime`` run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import checked, measure, median_run, spread, table
from benchmarks.pycache import compiled
from tests.harness.venvs import venv_python

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"


def commands(flavour: str) -> dict[str, list[str]]:
    """Name -> argv: rqdoctor's two, ``rq --help`` of this venv (the test extra) and of the flavour's venv."""
    here = Path(sys.executable).parent
    flavour_rq = venv_python(flavour).parent / "rq"
    return {
        "rqdoctor --help": [sys.executable, str(here / "rqdoctor"), "--help"],
        "rqdoctor workers --help": [sys.executable, str(here / "rqdoctor"), "workers", "--help"],
        "rqdoctor workers --from <snapshot>": [sys.executable, str(here / "rqdoctor"), "workers", "--from",
                                               str(SNAPSHOT)],
        "rq --help (rq of the test extra)": [sys.executable, str(here / "rq"), "--help"],
        f"rq --help ({flavour} venv)": [str(venv_python(flavour)), str(flavour_rq), "--help"],
    }


def imports(argv: list[str]) -> tuple[int, float]:
    """Modules imported by one run, and their summed import time in ms (``-X importtime``, top level only)."""
    env = {"COLUMNS": "80", "PATH": "/usr/bin:/bin", "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX", "")}
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in env.items() if v}, stdin=subprocess.DEVNULL)
    rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")][1:]
    top = sum(int(cumulative) for _, cumulative, name in rows if not name.startswith("  "))
    return len(rows), top / 1000


def run(flavour: str, repeats: int) -> str:
    """The start-up table, with the load average before and after the timed rounds."""
    argvs = commands(flavour)
    walls: dict[str, list] = {name: [] for name in argvs}
    with compiled():
        for name, argv in argvs.items():  # warm-up: fills the byte-code cache
            checked(measure(argv, ROOT, timeout=120), name)
        before = os.getloadavg()
        for _ in range(max(1, repeats)):
            for name, argv in argvs.items():
                walls[name].append(checked(measure(argv, ROOT, timeout=120), name))
        after = os.getloadavg()
        rows = []
        for name, argv in argvs.items():
            count, ms = imports(argv)
            best = median_run(walls[name])
            rows.append([name, f"{best.wall:.2f}", spread(walls[name]), f"{best.cpu:.2f}", count, f"{ms:.0f}"])
    load = f"load average {' '.join(f'{x:.2f}' for x in before)} -> {' '.join(f'{x:.2f}' for x in after)}"
    return load + "\n\n" + table(["command", "wall s (median)", "min-max", "CPU s", "modules imported", "import ms"],
                                 rows)
