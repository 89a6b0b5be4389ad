"""The ingest process: one reader thread per camera, all publishing through one shared publisher."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from common.config import CameraConfig
from common.keys import Keys
from common.redis_io import connect
from common.service import Context
from ingest.prepare import EncodeError, make_frame
from ingest.publisher import Publisher
from ingest.sources import SourceError, open_source

log = logging.getLogger(__name__)


@dataclass
class CameraReader:
    """Reads one camera, keeps every n-th frame, publishes it; stops at the end, on stop, or after max_frames."""

    camera: CameraConfig
    publisher: Publisher
    stop: threading.Event
    max_frames: int | None = None
    error: str | None = None

    def run(self) -> None:
        try:
            source = open_source(self.camera.source)
        except SourceError as exc:
            self.error = f"camera {self.camera.name}: {exc}"
            log.error("%s", self.error)
            return
        counters = self.publisher.counter(self.camera.name)
        interval = 1.0 / source.fps if getattr(self.camera.source, "realtime", False) and source.fps else 0.0
        next_at = time.monotonic()
        try:
            while not self.stop.is_set() and (self.max_frames is None or counters.published < self.max_frames):
                image = source.read()
                if image is None:
                    log.info("camera %s: source ended", self.camera.name)
                    break
                counters.read += 1
                if (counters.read - 1) % self.camera.every_n == 0:
                    counters.sampled += 1
                    self._publish(image, counters.sampled - 1)
                if interval:
                    next_at += interval  # a schedule, not a sleep per frame: no drift
                    self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            source.close()

    def _publish(self, image: np.ndarray, seq: int) -> None:
        try:
            frame = make_frame(self.camera, image, seq, time.time())
        except EncodeError as exc:
            self.publisher.counter(self.camera.name).skipped += 1
            log.warning("camera %s: frame %d skipped: %s", self.camera.name, seq, exc)
            return
        self.publisher.publish(frame)


def run(ctx: Context) -> int:
    """Run every configured camera until they end, the bounds are reached, or a signal asks to stop."""
    cfg = ctx.config
    publisher = Publisher(connect(ctx.redis_url, cfg.redis), Keys(cfg.streams.prefix), cfg.streams.frames_maxlen)
    stop = threading.Event()
    readers = [CameraReader(cam, publisher, stop, ctx.args.max_frames) for cam in cfg.ingest.cameras]
    threads = [threading.Thread(target=r.run, name=f"camera-{r.camera.name}", daemon=True) for r in readers]
    for t in threads:
        t.start()
    log.info("ingesting %d cameras", len(threads))
    ctx.bounds.max_frames = None  # ingest applies --max-frames per camera
    while any(t.is_alive() for t in threads):
        if (why := ctx.stop_reason()) is not None:
            log.info("stopping: %s", why)
            break
        ctx.shutdown.wait(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=ctx.shutdown.drain_s)
    for name, c in sorted(publisher.counters.items()):
        log.info(
            "camera %s: read %d, sampled %d, published %d, dropped %d, skipped %d",
            name,
            c.read,
            c.sampled,
            c.published,
            c.dropped,
            c.skipped,
        )
    publisher.client.close()
    failed = [r.error for r in readers if r.error]
    return 1 if failed and len(failed) == len(readers) else 0
