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
from common.keys import Keys
from common.redis_io import Client, add_entries, connect
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


def push_paced(
    client: Client, keys: Keys, maxlen: int, cameras: list[str], images: list[bytes], fps: float, start: float,
    seconds: float, jitter_s: float = 0.0, seed: int = 0,
) -> None:  # fmt: skip
    """Live frames of ``cameras`` from ``start`` for ``seconds``: camera i's k-th frame is due at its random phase
    plus k/fps (plus up to ``jitter_s``, half-normal), its image ``images[(i + k) % len(images)]``; the frames due
    at once go out in one round trip."""
    rng = random.Random(seed)
    phase = [rng.random() / fps for _ in cameras]
    due = [(start + phase[i], i) for i in range(len(cameras))]
    heapq.heapify(due)
    seq = [0] * len(cameras)
    while due[0][0] < start + seconds:
        now = time.time()
        if due[0][0] > now:
            time.sleep(min(due[0][0] - now, 0.002))
            continue
        batch = []
        while due and due[0][0] <= now:
            _, i = heapq.heappop(due)
            frame = Frame(stream=cameras[i], seq=seq[i], capture_ts=time.time(), width=SIDE, height=SIDE,
                          encoding="jpeg", image_width=SIDE, image_height=SIDE,
                          data=images[(i + seq[i]) % len(images)], live=True)  # fmt: skip
            batch.append((keys.frames(cameras[i]), encode(frame), maxlen))
            seq[i] += 1
            heapq.heappush(due, (start + phase[i] + seq[i] / fps + abs(rng.gauss(0, jitter_s)), i))
        add_entries(client, batch)


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
    client = connect(stack.redis.url, stack.redis)
    push_paced(client, stack.keys, stack.streams.frames_maxlen, args.camera, jpegs(), args.fps, time.time(),
               args.duration, seed=len(args.camera))  # fmt: skip
    client.close()


if __name__ == "__main__":
    main()
