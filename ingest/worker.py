"""The ingest process: a reader thread per camera and one shared publisher; SIGHUP reloads the camera list."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from common import metrics
from common.backoff import Backoff
from common.config import CameraConfig, ConfigError, StackConfig, load_config
from common.redis_io import connect
from common.service import Context, UsageError
from ingest.progress import FileProgress
from ingest.publisher import Publisher
from ingest.reader import CameraReader

log = logging.getLogger(__name__)


def selected(config: StackConfig, names: list[str] | None) -> list[CameraConfig]:
    """The cameras this process serves: all, or those named with --camera (one process per camera)."""
    return [c for c in config.ingest.cameras if names is None or c.name in names]


@dataclass(frozen=True)
class IngestOptions:
    cameras: list[str] | None
    """The cameras this process serves (--camera); None: all."""
    progress: Literal["auto", "always", "never"]
    """Progress bars for file and image-folder cameras on stderr (auto: when it is a terminal)."""
    max_frames: int | None
    """Frames per camera before it stops (--max-frames)."""


def options(config: StackConfig, args: argparse.Namespace) -> IngestOptions:
    """The cameras named must be configured, and there must be some to serve."""
    known = {c.name for c in config.ingest.cameras}
    unknown = sorted(set(args.camera or ()) - known)
    if unknown:
        raise UsageError(
            [f"--camera {', '.join(unknown)}: not in ingest.cameras ({', '.join(sorted(known)) or 'none'})"]
        )
    if not selected(config, args.camera):
        raise UsageError(["ingest.cameras is empty: configure at least one camera"])
    return IngestOptions(cameras=args.camera, progress=args.progress, max_frames=args.max_frames)


@dataclass
class Fleet:
    """The running readers, by camera name; ``apply`` changes the set without touching unchanged cameras."""

    publisher: Publisher
    config: StackConfig
    max_frames: int | None
    readers: dict[str, CameraReader] = field(default_factory=dict)

    def apply(self, config: StackConfig, cameras: list[CameraConfig]) -> None:
        self.config = config
        wanted = {c.name: c for c in cameras}
        for name, reader in list(self.readers.items()):
            if wanted.get(name) != reader.camera:
                log.info("camera %s: %s", name, "changed: restarting" if name in wanted else "removed: stopping")
                reader.stop.set()
                reader.join(5.0)
                del self.readers[name]
        for name, camera in wanted.items():
            if name not in self.readers:
                self.readers[name] = self._reader(camera).start()

    def _reader(self, camera: CameraConfig) -> CameraReader:
        ingest = self.config.ingest
        return CameraReader(
            camera,
            self.publisher,
            camera.maxlen or self.config.streams.frames_maxlen,
            Backoff(ingest.retry_initial_s, ingest.retry_max_s),
            self.max_frames,
            ingest.max_lag,
        )

    def active(self) -> bool:
        return any(r.alive() for r in self.readers.values())

    def stop(self, timeout: float) -> None:
        for reader in self.readers.values():
            reader.stop.set()
        deadline = time.monotonic() + timeout
        for reader in self.readers.values():
            reader.join(max(0.0, deadline - time.monotonic()))

    def log_stats(self) -> None:
        for name in sorted(self.publisher.counters):
            log.info("camera %s: %s", name, self.publisher.counters[name].line())


def run(ctx: Context[IngestOptions]) -> int:
    cfg = ctx.config
    # Ingest must never wait on Redis: one quick attempt, and the publisher drops and counts what cannot go. The
    # socket timeout is capped at 5 s, never raised above the configured one.
    timeout = min(cfg.redis.socket_timeout_s, 5.0)
    client = connect(ctx.redis_url, cfg.redis.model_copy(update={"retries": 0, "socket_timeout_s": timeout}))
    publisher = Publisher(
        client, cfg.keys, cfg.ingest.queue_size, cfg.ingest.pipeline, cfg.redis.wait_replicas,
        cfg.redis.wait_timeout_ms,
    ).start()  # fmt: skip
    fleet = Fleet(publisher, cfg, ctx.options.max_frames)
    metrics.register(metrics.IngestCollector(lambda: dict(publisher.counters)))
    fleet.apply(cfg, selected(cfg, ctx.options.cameras))
    ctx.bounds.max_frames = None  # ingest applies --max-frames per camera
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    log.info("ingesting %d cameras", len(fleet.readers))
    wanted = ctx.options.progress == "always" or (ctx.options.progress == "auto" and sys.stderr.isatty())
    progress = FileProgress(publisher) if wanted else None
    next_stats = time.monotonic() + cfg.ingest.stats_interval_s
    while (why := ctx.stop_reason()) is None and fleet.active():
        publisher.check()
        if reload.is_set():
            reload.clear()
            _reload(ctx, fleet)
        if time.monotonic() >= next_stats:
            next_stats += fleet.config.ingest.stats_interval_s
            fleet.log_stats()
        if progress is not None:
            progress.update(fleet.readers)
        ctx.shutdown.wait(0.2)
    log.info("stopping: %s", why or "every source has ended")
    fleet.stop(ctx.shutdown.drain_s / 2)
    publisher.close(ctx.shutdown.drain_s / 2)  # in-flight frames are published
    if progress is not None:
        progress.close(fleet.readers)
    fleet.log_stats()
    client.close()
    return 0


def _reload(ctx: Context[IngestOptions], fleet: Fleet) -> None:
    """SIGHUP: re-read the config; cameras added, removed or changed are started or stopped, others untouched."""
    try:
        config = load_config(ctx.config_path)
    except ConfigError as exc:
        log.error("SIGHUP: config not reloaded, keeping the running one:\n%s", exc)
        return
    cameras = selected(config, ctx.options.cameras)
    log.info("SIGHUP: config reloaded, %d cameras", len(cameras))
    fleet.apply(config, cameras)
