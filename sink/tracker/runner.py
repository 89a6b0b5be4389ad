"""The tracker sink's loop: cameras owned under leases, results put in order, tracked, and published with a
checkpoint, all in one fenced write per camera and turn.

Ownership. Each replica says it is alive (a sorted set with expiry times) and holds at most its fair share of the
cameras, ceil(cameras / live replicas), each under a lease (``common.redis_io.leases``) it renews every third of
``lease_s``. A camera nobody holds (a new one, or a dead or departed replica's) is taken by a replica with room
left; one with more than its share (a replica joined) gives the extra up. Taking a camera loads its checkpoint and
makes every result pending in the group on that camera's stream its own: the results the previous owner had read
and not finished are read again, in order, and the checkpoint's ``next_seq`` lets through only those it had not
finished.

Exactly once. A turn's tracks, events, count changes, the camera's new checkpoint and the acks of the results they
answer are one script, run only while the lease is still ours: an owner that lost its camera without noticing (a
long pause) writes nothing, and the new owner starts from the last checkpoint with the same results pending. So no
event is lost or published twice (event ids are deterministic, too). What can be lost: results a paused owner read
after the new owner took the camera over stay pending to it until the new owner claims them as idle
(``claim_idle_ms``); by then the camera has usually moved past them, and they are acked untracked, counted as late.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from common.keys import Keys
from common.redis_io import Client, Entry, GroupReader, RedisIOError, connect, ensure_group
from common.redis_io.leases import (
    Commit,
    acquire,
    commit_if_owner,
    leave,
    load,
    members,
    release,
    renew,
    take_pending,
)
from common.redis_io.streams import stream_keys
from common.service import Context
from common.wire import FIELD, Detection, Result, encode
from sink.runner import SinkOptions
from sink.tracker import TrackerSinkConfig
from sink.tracker.bytetrack import ByteTracker
from sink.tracker.events import EventMaker
from sink.tracker.reorder import Reorder

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class Camera:
    """One owned camera: its order, its tracker and event maker, and what the current turn will write."""

    stream: str
    sink: TrackerSinkConfig
    keys: Keys
    reorder: Reorder[tuple[Entry, Result]]
    tracker: ByteTracker
    events: EventMaker

    @classmethod
    def fresh(cls, stream: str, sink: TrackerSinkConfig, keys: Keys) -> Camera:
        return cls(
            stream,
            sink,
            keys,
            Reorder(sink.reorder_frames, sink.reorder_ms),
            ByteTracker.from_settings(sink),
            EventMaker(sink.name, stream, sink),
        )

    def checkpoint(self) -> bytes:
        state = {
            "v": STATE_VERSION,
            "next_seq": self.reorder.next_seq,
            "tracker": self.tracker.state(),
            "events": self.events.state(),
        }
        packed: bytes = msgpack.packb(state, use_bin_type=True)
        return packed

    def restore(self, blob: bytes) -> None:
        """Continue from a checkpoint; raises ValueError when it cannot be read."""
        try:
            state = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ValueError(f"not msgpack: {exc}") from None
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} tracker checkpoint")
        next_seq = state.get("next_seq")
        if next_seq is not None and (not isinstance(next_seq, int) or next_seq < 0):
            raise ValueError(f"bad next_seq {next_seq!r}")
        self.tracker.restore(state["tracker"])
        self.events.restore(state["events"])
        self.reorder.next_seq = next_seq


@dataclass
class Turn:
    """What one camera writes at the end of a turn."""

    commit: Commit = field(default_factory=Commit)
    occupancy: dict[str, int] = field(default_factory=dict)
    increments: Counter[str] = field(default_factory=Counter)
    acks: list[str] = field(default_factory=list)
    frames: int = 0
    events: int = 0
    late: int = 0


class Tracking:
    """One replica of a tracker sink: its cameras, their leases, and the turns of its loop."""

    def __init__(self, client: Client, sink: TrackerSinkConfig, keys: Keys, replica: str, dead_maxlen: int) -> None:
        self.client, self.sink, self.keys, self.replica = client, sink, keys, replica
        self.group = keys.sink_group(sink.name)  # a sink's group, like any: the drain and status know it
        self.cameras: dict[str, Camera] = {}
        self.ttl_ms = int(sink.lease_s * 1000)
        self._next_lease = 0.0
        self.stats: Counter[str] = Counter()
        self.reader = GroupReader(
            client,
            group=self.group,
            consumer=replica,
            discover=lambda: [keys.results(s) for s in self.cameras],
            dead_letters=keys.dead_letters,
            dead_maxlen=dead_maxlen,
            block_ms=sink.block_ms,
            count=sink.batch,
            claim_idle_ms=sink.claim_idle_ms,
            max_deliveries=sink.max_deliveries,
            rescan_s=sink.rescan_s,
        )

    # ------------------------------------------------------------------------------------------ ownership
    def manage_leases(self, now: float) -> None:
        """Renew the leases held, drop the lost, take or give up cameras to hold a fair share: every third of the
        lease's life (a renewal must land well before the lease runs out)."""
        if now < self._next_lease:
            return
        self._next_lease = now + self.sink.lease_s / 3
        try:
            self._balance(now)
        except RedisIOError as exc:  # the reader logs the outage too; leases are tried again next time
            log.warning("cannot manage the camera leases now: %s", exc)

    def _balance(self, now: float) -> None:
        replicas = members(self.client, self.keys.tracker_replicas(self.sink.name), self.replica, self.sink.lease_s,
                           time.time())  # fmt: skip
        owned = list(self.cameras)
        kept = set(renew(self.client, [self.keys.lease(self.sink.name, s) for s in owned], self.replica, self.ttl_ms))
        for stream in owned:
            if self.keys.lease(self.sink.name, stream) not in kept:
                self._drop(stream, "its lease ran out (this replica paused?); another replica tracks it now")
        cameras = sorted(stream_keys(self.client, self.keys.stage("results"), self.sink.streams))
        share = math.ceil(len(cameras) / max(replicas, 1))
        free = [self.keys.stream_of(k) for k in cameras if self.keys.stream_of(k) not in self.cameras]
        random.shuffle(free)  # replicas starting together do not all race for the same cameras first
        for stream in free:
            if len(self.cameras) >= share:
                break
            if acquire(self.client, self.keys.lease(self.sink.name, stream), self.replica, self.ttl_ms):
                self._take(stream)
        for stream in sorted(self.cameras)[share:]:
            self._give_up(stream, f"more than this replica's share of {share}: another replica joined")

    def _take(self, stream: str) -> None:
        camera = Camera.fresh(stream, self.sink, self.keys)
        blob = load(self.client, self.keys.track_state(self.sink.name, stream))
        if blob is not None:
            try:
                camera.restore(blob)
            except ValueError as exc:
                log.error(
                    "camera %s: its tracker checkpoint (%s) cannot be read (%s): starting new tracks; delete the key "
                    "to silence this", stream, self.keys.track_state(self.sink.name, stream), exc,
                )  # fmt: skip
                camera = Camera.fresh(stream, self.sink, self.keys)
        ensure_group(self.client, self.keys.results(stream), self.group)
        moved = take_pending(self.client, self.keys.results(stream), self.group, self.replica)
        self.cameras[stream] = camera
        self.reader.rescan_now()
        self.stats["taken"] += 1
        log.info("tracking camera %s (from seq %s; %d results pending taken over)", stream,
                 camera.reorder.next_seq, moved)  # fmt: skip

    def _drop(self, stream: str, why: str) -> None:
        """Forget a camera (its unfinished results stay pending, for the next owner to take)."""
        if self.cameras.pop(stream, None) is not None:
            self.reader.rescan_now()
            self.stats["dropped"] += 1
            log.warning("camera %s dropped: %s", stream, why)

    def _give_up(self, stream: str, why: str) -> None:
        self.cameras.pop(stream, None)
        self.reader.rescan_now()
        release(self.client, self.keys.lease(self.sink.name, stream), self.replica)
        self.stats["given_up"] += 1
        log.info("camera %s given up (%s)", stream, why)

    def leave(self) -> None:
        """Stopping: give every camera up now, so the other replicas take them at once."""
        for stream in list(self.cameras):
            self._give_up(stream, "stopping: another replica may take it at once")
        leave(self.client, self.keys.tracker_replicas(self.sink.name), self.replica)

    # ------------------------------------------------------------------------------------------ a turn
    def turn(self) -> int:
        """Read, order, track, publish: one turn of the loop; returns the entries read."""
        self.manage_leases(time.monotonic())
        entries = self.reader.read()
        now_ms = time.monotonic() * 1000
        turns: dict[str, Turn] = {}
        for entry, result in self.reader.messages(entries, Result):
            stream = self.keys.stream_of(entry.key)
            camera = self.cameras.get(stream)
            if camera is None:
                continue  # read just before the camera was given up: pending, for its next owner
            if result.stream != stream:
                self.reader.dead_letter(entry, f"a result of camera {result.stream!r} in {stream!r}'s stream")
                continue
            if not camera.reorder.push(result.seq, (entry, result), now_ms):
                turn = turns.setdefault(stream, Turn())
                turn.acks.append(entry.id)
                turn.late += 1
        for stream, camera in list(self.cameras.items()):
            ready = camera.reorder.ready(now_ms)
            if ready or stream in turns:
                self._finish(camera, ready, turns.setdefault(stream, Turn()))
        return len(entries)

    def _finish(self, camera: Camera, ready: list[tuple[int, tuple[Entry, Result]]], turn: Turn) -> None:
        stream, keys, sink = camera.stream, self.keys, self.sink
        tracks_key, events_key = keys.tracks(sink.name, stream), keys.events(sink.name, stream)
        for skipped, (entry, result) in ready:
            detections = self._wanted(result.detections)
            tracked = camera.tracker.update(detections, result.capture_ts)
            outcome = camera.events.frame(result, detections, tracked, skipped)
            turn.commit.add(tracks_key, FIELD, encode(outcome.tracks), sink.tracks_maxlen)
            for event in outcome.events:
                turn.commit.add(events_key, FIELD, encode(event), sink.events_maxlen)
            turn.increments.update(outcome.counts)
            turn.occupancy = outcome.occupancy
            turn.acks.append(entry.id)
            turn.frames += 1
            turn.events += len(outcome.events)
        counts_key = keys.counts(sink.name, stream)
        turn.commit.increment(counts_key, dict(turn.increments))
        if turn.occupancy:
            turn.commit.assign(counts_key, turn.occupancy)
        if turn.frames:
            turn.commit.put(keys.track_state(sink.name, stream), camera.checkpoint())
        turn.commit.ack(keys.results(stream), self.group, turn.acks)
        if commit_if_owner(self.client, keys.lease(sink.name, stream), self.replica, turn.commit):
            self.reader.settled([(keys.results(stream), i) for i in turn.acks])
            self.stats["frames"] += turn.frames
            self.stats["events"] += turn.events
            self.stats["late"] += turn.late
        else:
            self._drop(stream, "its lease was lost before this turn's writes (nothing of them was written)")

    def _wanted(self, detections: list[Detection]) -> list[Detection]:
        labels = self.sink.labels
        return [d for d in detections if d.label in labels] if labels else detections


def run(ctx: Context[SinkOptions], sink: TrackerSinkConfig) -> int:
    cfg = ctx.config
    keys = cfg.keys
    client = connect(ctx.redis_url, cfg.redis)
    tracking = Tracking(client, sink, keys, ctx.options.consumer, cfg.streams.dead_maxlen)
    # A turn decodes a batch of results into tens of thousands of short-lived objects, none in a cycle: with the
    # default threshold (700) the young generation is collected dozens of times a batch, which cost as much as the
    # decoding itself (bench/tracker_bench.py: 3,700 -> 4,700 results/s in-process at 10 objects a frame).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    log.info("tracker %s (replica %s): tracking %s", sink.name, ctx.options.consumer, sink.streams)
    while (why := ctx.stop_reason()) is None:
        read = tracking.turn()
        ctx.bounds.count(read)
    try:
        tracking.leave()
    except RedisIOError as exc:  # the leases run out by themselves
        log.warning("cannot give the cameras up (%s): the other replicas take them when the leases run out", exc)
    log.info("stopping (%s); %s; %s", why, dict(tracking.stats), tracking.reader.stats)
    tracking.reader.close()
    client.close()
    return 0
