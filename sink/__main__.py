"""python -m sink --config stack.yaml [--sink NAME]"""

from __future__ import annotations

import argparse
import sys

from common import service
from common.config import StackConfig
from sink.worker import run


def check(config: StackConfig, args: argparse.Namespace) -> list[str]:
    args.sink, problems = service.choose([s.name for s in config.sinks], args.sink, "sinks", "--sink")
    return problems


def main() -> int:
    p = service.parser("sink", "Store or forward detection results from Redis streams.")
    p.add_argument("--sink", help="sink to run (default: the only one)")
    p.add_argument("--consumer", help="consumer name; stable across restarts (default: hostname)")
    return service.main("sink", p, run, check)


if __name__ == "__main__":
    sys.exit(main())
