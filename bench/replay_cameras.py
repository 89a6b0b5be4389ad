"""Cameras whose frames were encoded elsewhere: live 416-px JPEG frames pushed at each camera's pace, as ingest
pushes them, without rendering and encoding each one here. For the GPU bench's end-to-end runs where the detector
host, not a camera farm, is being measured: ingest normally runs on other hosts, and the synthetic ingest on the
GPU host took 10 of its 16 cores for 8,000 frames/s (the tiny model's target).

    python -m bench.replay_cameras --config stack.yaml --duration 30 --camera c0 --camera c1 ...

Each camera cycles through a shared set of real JPEGs of the synthetic scene (``SET`` frames, ~33 KB each),
starting at its own offset, at ``--fps`` with a random phase; a frame's capture time is when it is pushed, its
sequence number counts up, ``live`` as a paced synthetic camera's. Frames go out in one ``add_entries`` round trip
per tick, capped at the stack's ``frames_maxlen``.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import time
from pathlib import Path

from common.config import load_config
from common.redis_io import add_entries, connect
from common.wire import Frame, encode

SET = 50
"""JPEGs in the shared set (5 scenes x 10 frames)."""
SIDE = 416


def jpegs() -> list[bytes]:
    """Real JPEGs (quality 85) of the synthetic scene at 416 px, as ingest encodes them."""
    from common.codec import encode_image
    from common.scenes import Scene

    scenes = [Scene(seed, SIDE, SIDE, 3, 0) for seed in range(SET // 10)]
    return [encode_image(s.render(i), "jpeg", 85) for s in scenes for i in range(10)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--camera", action="append", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--fps", type=float, default=5.0)
    args = p.parse_args()
    stack = load_config(args.config, os.environ)  # REDIS_URL, as ingest takes it
    if stack.redis.url is None:
        raise SystemExit("no Redis to push to: set REDIS_URL or redis.url in the config")
    client, keys, maxlen = connect(stack.redis.url, stack.redis), stack.keys, stack.streams.frames_maxlen
    data = jpegs()
    rng = random.Random(len(args.camera))
    start = time.time()
    end = start + args.duration
    due = [(start + rng.random() / args.fps, i) for i in range(len(args.camera))]
    heapq.heapify(due)
    seq = [0] * len(args.camera)
    while due[0][0] < end:
        now = time.time()
        if due[0][0] > now:
            time.sleep(min(due[0][0] - now, 0.005))
            continue
        batch = []
        while due and due[0][0] <= now:
            at, i = heapq.heappop(due)
            cam = args.camera[i]
            jpeg = data[(i + seq[i]) % len(data)]
            frame = Frame(stream=cam, seq=seq[i], capture_ts=time.time(), width=SIDE, height=SIDE, encoding="jpeg",
                          image_width=SIDE, image_height=SIDE, data=jpeg, live=True)  # fmt: skip
            batch.append((keys.frames(cam), encode(frame), maxlen))
            seq[i] += 1
            heapq.heappush(due, (at + 1 / args.fps, i))
        add_entries(client, batch)
    client.close()


if __name__ == "__main__":
    main()
