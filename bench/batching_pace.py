"""The detector's batching under a GPU's pace, on a CPU: the real ``Batcher`` reading a real server through the
project's ``GroupReader``, while batches are *served* at a set pace instead of inferred, so that what the
batching decides (which frames, in what order, when to take the streams in turn, what to shed) shows as latency
and shed counts at loads below, at and past capacity, without a GPU.

    python -m bench.batching_pace [--max-batch 16] [--batch-ms 16] [--loads 0.5,0.8,0.95,1.5] [--seconds 20]
                                  [--out bench/results/batching_pace.json]

Cameras (a separate process) push small live frames at ``--fps`` each, with a random phase and a few ms of
jitter, as ingest does. The consumer mirrors a replica: a feeder thread takes ``Batcher.next`` one batch ahead
(as ``detector.batcher.Feeder`` does), a serving thread holds each batch for ``batch_ms * (1 + n/max_batch) / 2``
(half fixed, half per frame, like a GPU batch), then acks it. Capacity is ``max_batch / batch_ms`` frames/s;
each load is a share of it. Per load: served frames/s, latency from capture to the end of the batch (p50, p99,
max), the p99 of a frame's age when read, the batching's CPU (the feeder's in ``Batcher.next``, in cores per 1,000
frames/s served), frames shed (superseded in hand, or skipped on the server), stale, and how often the batcher went
into its turns and back. The first quarter of a run is warm-up. Prints a table and writes JSON.

This measures scheduling, not inference: every figure of the model, the decoder and the GPU is in
``bench/gpu_bench.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_machine, write_report
from bench.replay_cameras import push_paced
from common.config import load_config
from common.embedded import EmbeddedServer
from common.redis_io import connect, group_reader
from common.redis_io.settings import EmbeddedServerConfig
from common.settings import ConsumerConfig
from detector.batcher import Batcher
from detector.pipeline import Gathered

POOL = "pace"
WARM = 0.25


def cameras(url: str, config: str, streams: int, fps: float, seconds: float, go: Any) -> None:
    """``streams`` live cameras at ``fps`` with random phases, sent with a few ms of jitter; small frames (the
    batching is measured, not the images)."""
    stack = load_config(Path(config), {"REDIS_URL": url})
    client = connect(url, stack.redis)
    names = [f"c{i}" for i in range(streams)]
    push_paced(client, stack.keys, stack.streams.frames_maxlen, names, [bytes(2000)], fps, go.get(), seconds, 0.003, 1)
    client.close()


def run_load(url: str, config: Path, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    stack = load_config(config, {"REDIS_URL": url})
    client, keys = connect(url, stack.redis), stack.keys
    cfg = ConsumerConfig(name=POOL, block_ms=200, rescan_s=0.5)
    reader = group_reader(client, keys, "frames", keys.detector_group(POOL), "r0", cfg, args.max_batch, 1000)
    batcher = Batcher(reader, keys, args.max_batch, args.max_wait_ms, 5000, args.shed_behind)
    go: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=cameras, args=(url, str(config), streams, args.fps, args.seconds, go), daemon=True
    )
    proc.start()
    time.sleep(1.0)  # the process imports before the clock starts
    start = time.time() + 0.5
    go.put(start)
    warm, end = start + args.seconds * WARM, start + args.seconds + 1.0
    stop = threading.Event()
    ready: queue.Queue[Gathered | None] = queue.Queue(maxsize=1)  # one batch ahead, as the Feeder
    turns = {"entered": 0, "left": 0}

    gather_cpu = [0.0]  # the feeder's CPU seconds in Batcher.next past the warm-up: the host's cost of batching

    def feed() -> None:
        was = False
        while not stop.is_set():
            cpu = time.thread_time()
            batch = batcher.next(stop)
            if time.time() >= warm:
                gather_cpu[0] += time.thread_time() - cpu
            if batcher.overloaded != was:
                turns["entered" if batcher.overloaded else "left"] += 1
                was = batcher.overloaded
            ready.put(batch)
        ready.put(None)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    latencies: list[float] = []
    read_ages: list[float] = []
    served = shed = skipped = stale = hand = 0
    while time.time() < end:
        batch = ready.get()
        if batch is None:
            break
        n = len(batch.held)
        if n:
            time.sleep(args.batch_ms / 1000 * (1 + n / args.max_batch) / 2)
        done = time.time()
        reader.ack([h.entry for h in batch.held] + batch.shed + batch.stale + [e for e, _ in batch.failed])
        if done < warm:
            continue
        served += n
        latencies += [(done - h.frame.capture_ts) * 1000 for h in batch.held]
        read_ages += [(h.read_at - h.frame.capture_ts) * 1000 for h in batch.held]
        shed += len(batch.shed)
        skipped += sum(batch.skipped.values())
        stale += len(batch.stale)
        hand = max(hand, batcher.held)
    stop.set()
    while feeder.is_alive():  # unblock a feeder waiting to hand over a batch
        with contextlib.suppress(queue.Empty):
            ready.get(timeout=0.1)
    proc.join(10)
    window = time.time() - 1.0 - warm
    reader.close()
    client.close()
    lat = np.array(latencies or [0.0])
    capacity = args.max_batch / args.batch_ms * 1000
    offered = streams * args.fps
    return {
        "streams": streams, "offered_fps": round(offered), "load": round(offered / capacity, 2),
        "served_fps": round(served / window, 1), "served_of_capacity": round(served / window / capacity, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "max_ms": round(float(lat.max()), 1), "read_p99_ms": round(float(np.percentile(read_ages or [0.0], 99)), 1),
        "gather_cores_per_1000_fps": round(gather_cpu[0] / window / max(served / window / 1000, 1e-9), 3),
        "shed_in_hand": shed, "skipped_on_server": skipped, "stale": stale,
        "turns_entered": turns["entered"], "turns_left": turns["left"], "max_hand": hand,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-ms", type=float, default=16.0, help="a full batch's serving time")
    p.add_argument("--max-wait-ms", type=int, default=25)
    p.add_argument("--shed-behind", type=int, default=2)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--loads", default="0.5,0.8,0.95,1.5", help="shares of capacity offered")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--tag", default="", help="a label for this run in the JSON (e.g. the commit)")
    p.add_argument("--out", type=Path, default=Path("bench/results/batching_pace.json"))
    args = p.parse_args()
    capacity = args.max_batch / args.batch_ms * 1000
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "stack.yaml"
        config.write_text("streams: {prefix: pace, frames_maxlen: 100}\n")
        for load in (float(x) for x in args.loads.split(",")):
            with EmbeddedServer(Path(tmp) / "v.sock", EmbeddedServerConfig(maxmemory_mb=512)) as server:
                streams = round(load * capacity / args.fps)
                rows.append(run_load(server.url, config, streams, args))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\ncapacity {capacity:.0f} frames/s (batch {args.max_batch} in {args.batch_ms} ms), {args.fps} fps cameras")
    print(f"{'load':>5} {'streams':>7} {'served/s':>9} {'of cap':>6} {'p50':>6} {'p99':>6} {'max':>6} {'read99':>6} "
          f"{'gather':>6} {'shed':>6} {'skipped':>7} {'stale':>5} {'turns':>5}")  # fmt: skip
    for r in rows:
        print(f"{r['load']:>5} {r['streams']:>7} {r['served_fps']:>9} {r['served_of_capacity']:>6} {r['p50_ms']:>6} "
              f"{r['p99_ms']:>6} {r['max_ms']:>6} {r['read_p99_ms']:>6} "
              f"{r['gather_cores_per_1000_fps']:>6} {r['shed_in_hand']:>6} "
              f"{r['skipped_on_server']:>7} {r['stale']:>5} {r['turns_entered']:>5}")  # fmt: skip
    write_report(args.out, {
        "batching_pace": rows, "tag": args.tag, "capacity_fps": capacity, "max_batch": args.max_batch,
        "batch_ms": args.batch_ms, "max_wait_ms": args.max_wait_ms, "shed_behind": args.shed_behind,
        "fps": args.fps, "seconds_each": args.seconds, "machine": cpu_machine(),
        "date": time.strftime("%Y-%m-%d"),
    }, started)  # fmt: skip


if __name__ == "__main__":
    main()
