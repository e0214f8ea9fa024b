"""Start-up: ``rqdoctor --help`` and ``rqdoctor workers --from <snapshot>`` side by side with ``rq --help``.

Each command runs as its console script under its venv's Python. Wall time is the median of the timed
runs (interleaved, so load spikes hit every command alike); the modules each imports, and the import
time they cost, come from one ``python -X importtime`` run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.measure import checked, measure, median_run, spread, table
from tests.harness.venvs import venv_python

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"


def commands(flavour: str) -> dict[str, list[str]]:
    """Name -> argv: rqdoctor's two, ``rq --help`` of this venv (the test extra) and of the flavour's venv."""
    here = Path(sys.executable).parent
    flavour_rq = venv_python(flavour).parent / "rq"
    return {
        "rqdoctor --help": [sys.executable, str(here / "rqdoctor"), "--help"],
        "rqdoctor workers --from <snapshot>": [sys.executable, str(here / "rqdoctor"), "workers", "--from",
                                               str(SNAPSHOT)],
        "rq --help (rq of the test extra)": [sys.executable, str(here / "rq"), "--help"],
        f"rq --help ({flavour} venv)": [str(venv_python(flavour)), str(flavour_rq), "--help"],
    }


def imports(argv: list[str]) -> tuple[int, float]:
    """Modules imported by one run, and their summed import time in ms (``-X importtime``, top level only)."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")][1:]
    top = sum(int(cumulative) for _, cumulative, name in rows if not name.startswith("  "))
    return len(rows), top / 1000


def run(flavour: str, repeats: int) -> str:
    """The start-up table."""
    argvs = commands(flavour)
    walls: dict[str, list] = {name: [] for name in argvs}
    for _ in range(max(1, repeats)):
        for name, argv in argvs.items():
            walls[name].append(checked(measure(argv, ROOT, timeout=120), name))
    rows = []
    for name, argv in argvs.items():
        count, ms = imports(argv)
        best = median_run(walls[name])
        rows.append([name, f"{best.wall:.2f}", spread(walls[name]), f"{best.cpu:.2f}", count, f"{ms:.0f}"])
    return table(["command", "wall s (median)", "min-max", "CPU s", "modules imported", "import ms"], rows)
