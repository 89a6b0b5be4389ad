"""python -m detector --config stack.yaml [--pool NAME] [--replica NAME]"""

from __future__ import annotations

import argparse
import sys

from common import service
from common.config import StackConfig
from detector.engines import extra_hint, missing_extra
from detector.model import ModelSpec
from detector.worker import DetectorOptions, default_replica, run


def options(config: StackConfig, args: argparse.Namespace) -> DetectorOptions:
    """The pool must exist, its engine's extra be installed, and its model files be there and agree (checked
    before any framework loads)."""
    name = service.choose([p.name for p in config.detector.pools], args.pool, "detector.pools", "--pool")
    pool = config.pool(name)
    missing = missing_extra(pool.engine.kind)
    if missing:
        raise service.UsageError([f"detector.pools[{name}].engine: {missing}"])
    try:
        ModelSpec.from_config(pool.model)
    except ImportError as exc:  # a module the engine's extra should have brought, or one it imports in turn
        raise service.UsageError([f"detector.pools[{name}].engine: {extra_hint(pool.engine.kind)} ({exc})"]) from None
    except ValueError as exc:  # ModelFileError names the file, the problem and the fix
        raise service.UsageError([f"detector.pools[{name}].model: {exc}"]) from None
    return DetectorOptions(pool=name, replica=args.replica or default_replica())


def main() -> int:
    p = service.parser("detector", "Run YOLO on frames from Redis streams and publish the detections.")
    p.add_argument("--pool", help="detector pool to serve (default: the only one)")
    p.add_argument("--replica", help="replica (consumer) name; stable across restarts (default: hostname)")
    return service.main("detector", p, run, options)


if __name__ == "__main__":
    sys.exit(main())
