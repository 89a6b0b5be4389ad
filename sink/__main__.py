"""python -m sink --config stack.yaml [--sink NAME]; python -m sink tail [STREAM ...] (see sink/client/tail.py);
python -m sink query ... (a store's events: see sink/stores/__main__.py)"""

from __future__ import annotations

import sys

from common import service


def main() -> int:
    if sys.argv[1:2] == ["tail"]:
        from sink.client import tail

        return tail.main(sys.argv[2:])
    if sys.argv[1:2] == ["query"]:
        from sink.stores.__main__ import main as query

        return query(sys.argv[1:])
    from sink.runner import options, run  # here, so that tail needs none of the sinks' imports

    p = service.parser(
        "sink", "Store or forward detection results from Redis streams (python -m sink tail: watch them)."
    )
    p.add_argument("--sink", help="sink to run (default: the only one)")
    p.add_argument("--consumer", help="consumer name; stable across restarts (default: hostname)")
    return service.main("sink", p, run, options)


if __name__ == "__main__":
    sys.exit(main())
