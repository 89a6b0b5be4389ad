"""python -m detector --config stack.yaml [--pool NAME] [--replica NAME]"""

from __future__ import annotations

import argparse
import sys

from common import service
from common.config import StackConfig
from detector.engines import extra_hint, missing_extra
from detector.model import ModelSpec
from detector.worker import run


def check(config: StackConfig, args: argparse.Namespace) -> list[str]:
    """The pool must exist and its model files must be there and agree (checked before any framework loads)."""
    args.pool, problems = service.choose([p.name for p in config.detector.pools], args.pool, "detector.pools", "--pool")
    if problems:
        return problems
    pool = config.pool(args.pool)
    missing = missing_extra(pool.engine.kind)
    if missing:
        return [f"detector.pools[{args.pool}].engine: {missing}"]
    try:
        ModelSpec.from_config(pool.model)
    except ImportError as exc:  # a module the engine's extra should have brought, or one it imports in turn
        return [f"detector.pools[{args.pool}].engine: {extra_hint(pool.engine.kind)} ({exc})"]
    except ValueError as exc:  # ModelFileError names the file, the problem and the fix
        return [f"detector.pools[{args.pool}].model: {exc}"]
    return []


def main() -> int:
    p = service.parser("detector", "Run YOLO on frames from Redis streams and publish the detections.")
    p.add_argument("--pool", help="detector pool to serve (default: the only one)")
    p.add_argument("--replica", help="replica (consumer) name; stable across restarts (default: hostname)")
    return service.main("detector", p, run, check)


if __name__ == "__main__":
    sys.exit(main())
