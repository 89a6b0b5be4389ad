"""python -m common.stack.health [FILE] [--max-age S]: exit 0 when a service's worker loop turned within S seconds.

A container's healthcheck: the service touches FILE (``--health-file`` or ``STREAMYOLO_HEALTH_FILE``) every second
while its loop runs, so a process that is up but stuck (a hung device call, a dead loop) turns unhealthy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.stack.health", description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", type=Path, default=os.environ.get("STREAMYOLO_HEALTH_FILE"), help="heartbeat")
    p.add_argument("--max-age", type=float, default=30.0, metavar="S", help="oldest heartbeat that is healthy (30)")
    args = p.parse_args(argv)
    if args.file is None:
        print("unhealthy: no heartbeat file: pass FILE or set STREAMYOLO_HEALTH_FILE", file=sys.stderr)
        return 1
    try:
        age = time.time() - args.file.stat().st_mtime
    except OSError:
        print(f"unhealthy: {args.file} does not exist yet: the service has not started its loop", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"unhealthy: the loop last turned {age:.0f} s ago (more than {args.max_age:g} s)", file=sys.stderr)
        return 1
    print(f"healthy: the loop turned {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
