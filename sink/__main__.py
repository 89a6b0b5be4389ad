"""python -m sink --config stack.yaml [--sink NAME], or python -m sink tail [STREAM ...] (see sink/tail.py)"""

from __future__ import annotations

import argparse
import sys

from common import service
from common.config import StackConfig


def check(config: StackConfig, args: argparse.Namespace) -> list[str]:
    args.sink, problems = service.choose([s.name for s in config.sinks], args.sink, "sinks", "--sink")
    return problems


def main() -> int:
    if sys.argv[1:2] == ["tail"]:
        from sink import tail

        return tail.main(sys.argv[2:])
    from sink.worker import run  # here, so that tail needs none of the stores' imports

    p = service.parser(
        "sink", "Store or forward detection results from Redis streams (python -m sink tail: watch them)."
    )
    p.add_argument("--sink", help="sink to run (default: the only one)")
    p.add_argument("--consumer", help="consumer name; stable across restarts (default: hostname)")
    return service.main("sink", p, run, check)


if __name__ == "__main__":
    sys.exit(main())
