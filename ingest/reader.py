"""One camera: open its source (retrying with backoff), drain it, sample, prepare and hand frames to the publisher."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.backoff import Backoff
from common.codec import EncodeError
from common.config import CameraConfig
from common.workers import Worker, WorkerError
from ingest.pacing import Pacer
from ingest.prepare import make_frame
from ingest.publisher import Publisher, StreamCounters
from ingest.sampler import Sampler
from ingest.sources import FrameError, Source, SourceError, open_source
from ingest.sources.base import tell_sample_interval
from ingest.sources.synthetic import SyntheticSource

log = logging.getLogger(__name__)


@dataclass
class CameraReader:
    camera: CameraConfig
    publisher: Publisher
    maxlen: int
    backoff: Backoff
    max_frames: int | None = None
    max_lag: int | None = None
    """A recording read unpaced waits while the slowest detector pool has this many of its frames to read."""
    stop: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    """The source ended (or max_frames was reached): the reader will not reopen it."""
    total: int | None = None
    """Frames the open source holds, when it knows (a file, an image folder)."""
    _seq: int = 0
    _worker: Worker | None = None

    def start(self) -> CameraReader:
        self._worker = Worker(f"camera-{self.camera.name}", self.run, stopping=self.stop, on_error=self._crashed)
        self._worker.start()
        return self

    def alive(self) -> bool:
        return self._worker is not None and self._worker.alive

    @property
    def error(self) -> BaseException | None:
        """What killed the reader's thread, if anything did (it was logged, and shows as the last error)."""
        return self._worker.error if self._worker is not None else None

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the reader to end; True when it did. A camera whose thread crashed is gone,
        as one that finished, without failing its fleet's stop: the crash was logged and is in ``error``."""
        if self._worker is None:
            return True
        try:
            return self._worker.join(timeout)
        except WorkerError:
            return True

    def _crashed(self, exc: BaseException) -> None:
        self.publisher.counter(self.camera.name).last_error = f"reader crashed: {type(exc).__name__}: {exc}"

    def run(self) -> None:
        counters = self.publisher.counter(self.camera.name)
        name = self.camera.name
        while not self.stop.is_set():
            try:
                source = open_source(self.camera.source, self.camera.decoder_threads)
            except SourceError as exc:
                self._failed(counters, f"{exc}")
                continue
            self.total = source.total
            try:
                self.finished = self._pump(source, counters)
            except SourceError as exc:
                counters.reconnects += 1
                self._failed(counters, f"{exc}")
            except Exception as exc:  # a bug or an error nobody foresaw: the camera restarts rather than vanish
                log.exception("camera %s: unexpected error", name)
                counters.reconnects += 1
                self._failed(counters, f"unexpected {type(exc).__name__}: {exc}")
            finally:
                source.close()
            if self.finished:
                log.info("camera %s: finished (%s)", name, counters.line())
                return

    def _failed(self, counters: StreamCounters, message: str) -> None:
        delay = self.backoff.next_delay()
        counters.last_error = message
        log.error("camera %s: %s; retrying in %.1f s", self.camera.name, message, delay)
        self.backoff.wait(self.stop, delay)

    def _pump(self, source: Source, counters: StreamCounters) -> bool:
        """Read until the source ends (True), or a stop is asked (False); SourceError when it breaks."""
        sampler = Sampler(self.camera.every_n, self.camera.fps)
        # Only a time-based rate lets a source skip frames: every_n counts the frames read, so it needs them all.
        tell_sample_interval(source, None if self.camera.fps is None else 1.0 / self.camera.fps)
        paced = not source.live and getattr(self.camera.source, "realtime", False)
        live = source.live or paced  # a recording read unpaced has no clock of its own: its frames never go stale
        pacer = None if live or self.max_lag is None else Pacer(self.publisher, self.camera.name, self.max_lag,
                                                                self.maxlen, self.stop)  # fmt: skip
        origin: float | None = None
        truth = _truth_file(self.camera, source)
        try:
            while not self.stop.is_set():
                if self.max_frames is not None and counters.sampled >= self.max_frames:
                    return True
                ts = source.grab()
                if ts is None:
                    return True
                counters.read += 1
                self.backoff.reset()
                if paced:  # a schedule on media time, not a sleep per frame: no drift
                    origin = time.monotonic() - ts if origin is None else origin
                    self.stop.wait(max(0.0, origin + ts - time.monotonic()))
                if sampler.due(ts):
                    if pacer is not None and not pacer.admit():
                        return False
                    counters.sampled += 1
                    self._publish(source, counters, truth, live)
            return False
        finally:
            if truth is not None:
                truth.close()

    def _publish(self, source: Source, counters: StreamCounters, truth: IO[str] | None, live: bool) -> None:
        captured = time.time()
        try:
            frame = make_frame(self.camera, source.retrieve(), self._seq, captured, live, source.origin())
        except (FrameError, EncodeError) as exc:
            counters.skipped += 1
            counters.last_error = str(exc)
            log.warning("camera %s: frame skipped: %s", self.camera.name, exc)
            return
        if truth is not None and isinstance(source, SyntheticSource):
            objects = [{"id": t.id, "label": t.label, "box": list(t.box)} for t in source.truth(source.index)]
            truth.write(json.dumps({"stream": frame.stream, "seq": frame.seq, "objects": objects}) + "\n")
        self._seq += 1
        self.publisher.submit(frame, self.maxlen)


def _truth_file(camera: CameraConfig, source: Source) -> IO[str] | None:
    path: Path | None = getattr(camera.source, "truth_path", None)
    if path is None or not isinstance(source, SyntheticSource):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8", buffering=1)  # line-buffered: a reader sees whole frames
