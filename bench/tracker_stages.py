"""Where a tracker replica's time goes, per result: the same turns as the sink process (``sink.tracker.runner``),
run in this process on one core against an embedded valkey, each stage timed (read, decode, tracker, events, encode,
the fenced commit, the checkpoint). The inputs are bench/tracker_bench.py's: 8 cameras, objects bouncing in a
1280x720 frame.

Run: ``taskset -c 1 python bench/tracker_stages.py [--objects N] [--out PATH]``. Prints a table and writes
``bench/results/tracker_stages.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine  # noqa: E402
from bench.tracker_bench import AREAS, PREFIX, results  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import connect  # noqa: E402
from sink.tracker import TrackerSinkConfig, runner  # noqa: E402
from sink.tracker.bytetrack import ByteTracker  # noqa: E402
from sink.tracker.events import EventMaker  # noqa: E402

CAMERAS = 8


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=10, help="objects per frame")
    p.add_argument("--frames", type=int, default=1000, help="results per camera")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker_stages.json")
    args = p.parse_args()
    spent: dict[str, float] = {}

    def timed(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    keys = Keys(PREFIX)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "v.sock") as server:
        client = connect(server.url)
        for i in range(CAMERAS):
            pipe = client.pipeline(transaction=False)
            for payload in results(f"cam{i}", 100 + i, args.objects, args.frames):
                pipe.xadd(keys.results(f"cam{i}"), {"msg": payload})
            pipe.execute()
        sink = TrackerSinkConfig.model_validate({"name": "objects", "cameras": {"*": AREAS}, "batch": 500,
                                                 "block_ms": 200, "reorder_ms": 200})  # fmt: skip
        tracking = runner.Tracking(client, sink, keys, "bench", 1000)
        ByteTracker.update = timed("tracker", ByteTracker.update)  # type: ignore[method-assign]
        EventMaker.frame = timed("events", EventMaker.frame)  # type: ignore[method-assign]
        runner.Camera.checkpoint = timed("checkpoint", runner.Camera.checkpoint)  # type: ignore[method-assign]
        runner.encode = timed("encode", runner.encode)  # type: ignore[attr-defined]
        runner.commit_if_owner = timed("commit", runner.commit_if_owner)  # type: ignore[attr-defined]
        tracking.reader.messages = timed("decode", tracking.reader.messages)  # type: ignore[method-assign]
        tracking.reader.read = timed("read", tracking.reader.read)  # type: ignore[method-assign]
        gc.freeze()  # as the sink process does
        gc.set_threshold(50_000, 20, 20)
        total = CAMERAS * args.frames
        start = time.perf_counter()
        while tracking.stats["frames"] < total and time.perf_counter() - start < 120:
            tracking.turn()
        elapsed = time.perf_counter() - start
    frames = tracking.stats["frames"]
    per = {k: round(v / frames * 1e6, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    per["other"] = round(elapsed / frames * 1e6 - sum(per.values()), 1)
    print(f"{frames} results, {args.objects} objects each: {frames / elapsed:.0f} results/s in one process")
    for stage, us in per.items():
        print(f"{stage:>12} {us:>7.1f} us/result")
    report = {"objects_per_frame": args.objects, "results": frames, "results_per_s": round(frames / elapsed, 1),
              "us_per_result": per, "machine": cpu_machine()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
