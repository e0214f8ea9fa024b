"""Processes for the stack probe's integration tests: ``python targets.py <scenario> [arg]``.

Each scenario prints ``ready`` once it is about to block, then blocks (or spins) until killed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from rqdoctor import scenarios


def nap(password: str = "hunter2", dsn: str = "redis://app:s3cret@127.0.0.1:6379/0") -> None:
    """Sleep with secret-looking locals (for ``--locals`` redaction)."""
    ready()
    time.sleep(1000)


def spin(seconds: float) -> None:
    """Burn a core in pure Python for ``seconds``."""
    ready()
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x = (x * 31 + 7) % 1_000_003


def read_tarpit(port: int) -> None:
    """Block in ``socket.recv`` on a peer that never answers."""
    sock = socket.create_connection(("127.0.0.1", port))
    ready()
    sock.recv(1)


def wait_child() -> None:
    """Wait on a ``sleep 1000`` child."""
    child = subprocess.Popen(["sleep", "1000"])
    ready()
    child.wait()


def ready() -> None:
    print("ready", flush=True)


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    if name == "sleep":
        nap()
    elif name == "cpu":
        spin(float(args[0]))
    elif name == "recv":
        read_tarpit(int(args[0]))
    elif name == "child":
        wait_child()
    elif name == "deadlock":
        ready()
        scenarios.thread_deadlock()
    elif name == "http":
        ready()
        scenarios.http_no_timeout(args[0])
    else:
        raise SystemExit(f"unknown scenario {name}")
