"""``python -m frappe.utils.bench_helper frappe worker|worker-pool ...`` (nothing else)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    """Parse a bench-style command line and start the requested worker."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "frappe":
        sys.exit("usage: python -m frappe.utils.bench_helper frappe worker|worker-pool [options]")
    parser = argparse.ArgumentParser(prog="bench")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("worker", "worker-pool"):
        cmd = commands.add_parser(name)
        cmd.add_argument("--queue")
        cmd.add_argument("--quiet", action="store_true")
        cmd.add_argument("--burst", action="store_true")
        if name == "worker-pool":
            cmd.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv[1:])

    from frappe.utils.background_jobs import start_worker, start_worker_pool

    if args.command == "worker":
        start_worker(queue=args.queue, quiet=args.quiet, burst=args.burst)
    else:
        start_worker_pool(queue=args.queue, num_workers=args.num_workers, burst=args.burst,
                          quiet=args.quiet)


if __name__ == "__main__":
    main()
