"""``python benchmarks/stacks_probe.py OUT SAMPLES INTERVAL PID...``: the stack probe alone, as ``hangs`` runs it.

For the ``hangs`` benchmark: what sampling costs without the rest of the command (Redis, the process
scan, diagnosis, rendering) and without its imports. Writes to OUT the number of processes with a
sample and of samples in all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rqdoctor.deadline import Deadline
from rqdoctor.probes.stacks import probe_stacks


def main() -> None:
    out, samples, interval, *pids = sys.argv[1:]
    stacks, _ = probe_stacks([int(pid) for pid in pids], Deadline(15.0), samples=int(samples),
                             interval=float(interval), adaptive=True)
    Path(out).write_text(f"{sum(1 for s in stacks if s.samples)} {sum(len(s.samples) for s in stacks)}\n")


if __name__ == "__main__":
    main()
