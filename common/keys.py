"""Every Redis key name the stack uses, in one place.

Keys live under a configurable prefix so one Redis can host several stacks:
``{prefix}:frames:{stream}``, ``{prefix}:results:{stream}``, ``{prefix}:dead``, and per alert sink
``{prefix}:alerts:{sink}`` and ``{prefix}:alerted:{sink}``, per detector pool the stale-frame tally
``{prefix}:stale:{group}``, and per tracker sink and camera ``{prefix}:tracks:{tracker}:{stream}``,
``{prefix}:events:{tracker}:{stream}``, its lease, state and counts.

On a Redis Cluster (``shards`` set) a key also names its shard as a hash tag right after the prefix, e.g.
``{prefix}:{<tag>}:frames:{stream}``: the keys one operation touches share a slot (a camera's frames, results, tallies
and dead letters: one transaction; a shard's cameras: one blocking read). A camera's shard is ``crc32(name) mod
shards``; shard ``i``'s tag is the first ``"i.j"`` (j = 0, 1, ...) whose slot falls in the i-th of ``shards`` equal
parts of the 16,384 slots, so that the shards spread evenly over primaries that split the slots evenly.
"""

from __future__ import annotations

import binascii
import fnmatch
import functools
import re
import zlib
from dataclasses import dataclass
from typing import Literal

# Stream (camera) names become part of key names: keep them free of ':' and glob characters.
STREAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_STREAM_NAME = re.compile(STREAM_NAME_PATTERN)


def valid_stream_name(name: str) -> bool:
    """True when ``name`` can be used as a camera/stream name."""
    return bool(_STREAM_NAME.match(name))


SLOTS = 16_384
"""Hash slots of a Redis Cluster."""

MAX_SHARDS = 256
"""The most shards a stack may have: each is a read per reader, and a thread while it blocks."""

StageName = Literal["frames", "results", "tracks", "events"]


def key_slot(key: str) -> int:
    """The cluster slot of a key: CRC16 (XMODEM) of its hash tag (see :func:`tag_of`), else of the whole key."""
    return binascii.crc_hqx((tag_of(key) or key).encode(), 0) % SLOTS


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each of ``shards`` shards (see the module's docstring)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be 1 to {MAX_SHARDS}, not {shards}")
    tags = []
    for i in range(shards):
        low, high = i * SLOTS // shards, (i + 1) * SLOTS // shards
        j = 0
        while not low <= binascii.crc_hqx(f"{i}.{j}".encode(), 0) % SLOTS < high:
            j += 1
        tags.append(f"{i}.{j}")
    return tuple(tags)


def tag_of(key: str) -> str | None:
    """The hash tag a key names: the text between its first ``{`` and the first ``}`` after it, if not empty (Redis
    Cluster's rule); else None."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


@dataclass(frozen=True)
class Stage:
    """One stage's streams (frames, results, a tracker's tracks or events): how to find their keys, and the camera
    each key belongs to."""

    keys: Keys
    kind: StageName
    tracker: str = ""

    @property
    def pattern(self) -> str:
        """SCAN MATCH pattern of every key of this stage (every shard)."""
        return self.keys._pattern(self.kind, self.tracker)

    def key(self, stream: str) -> str:
        """The key of one camera's stream of this stage."""
        return self.keys._stream_key(self.kind, stream, self.tracker)

    def name(self, key: str) -> str | None:
        """The camera a key of this stage belongs to; None for another key."""
        try:
            kind, tracker, stream = self.keys._parse(key)
        except ValueError:
            return None
        return stream if (kind, tracker) == (self.kind, self.tracker) else None


@dataclass(frozen=True)
class Keys:
    """Key names for one stack (one prefix); ``shards``: the cluster layout's shard count (None: one server)."""

    prefix: str
    shards: int | None = None

    def __post_init__(self) -> None:
        if self.shards is not None:
            shard_tags(self.shards)  # refuses a count out of bounds
            if "{" in self.prefix or "}" in self.prefix:
                raise ValueError(f"prefix {self.prefix!r}: no braces in a cluster's prefix (the shard is the hash tag)")

    # ------------------------------------------------------------------------------------------------ shards
    def shard(self, stream: str) -> str | None:
        """The hash tag of a camera's shard; None on one server."""
        if self.shards is None:
            return None
        return shard_tags(self.shards)[zlib.crc32(stream.encode()) % self.shards]

    def tags(self) -> list[str | None]:
        """Every shard's tag ([None] on one server): where per-shard keys (tallies, dead letters) are found."""
        return [None] if self.shards is None else list(shard_tags(self.shards))

    def _at(self, tag: str | None, rest: str) -> str:
        return f"{self.prefix}:{rest}" if tag is None else f"{self.prefix}:{{{tag}}}:{rest}"

    # ------------------------------------------------------------------------------------------------ streams
    def frames(self, stream: str) -> str:
        return self._stream_key("frames", stream)

    def results(self, stream: str) -> str:
        return self._stream_key("results", stream)

    def tracks(self, tracker: str, stream: str) -> str:
        """Stream of one camera's results with their detections assigned to tracks, by a tracker sink."""
        return self._stream_key("tracks", stream, tracker)

    def events(self, tracker: str, stream: str) -> str:
        """Stream of the events (start, update, end) of one camera's tracked objects, by a tracker sink."""
        return self._stream_key("events", stream, tracker)

    def stage(self, stage: StageName, tracker: str = "") -> Stage:
        """One stage's streams. Tracks and events are a tracker sink's: ``tracker`` names it."""
        if stage in ("tracks", "events") and not tracker:
            raise ValueError(f"the {stage} streams are a tracker's: name the tracker sink")
        return Stage(self, stage, tracker if stage in ("tracks", "events") else "")

    def stream_of(self, key: str) -> str:
        """The stream (camera) name inside a frames, results, tracks or events key."""
        return self._parse(key)[2]

    def _stream_key(self, kind: StageName, stream: str, tracker: str = "") -> str:
        return self._at(self.shard(stream), f"{kind}:{tracker}:{stream}" if tracker else f"{kind}:{stream}")

    def _pattern(self, kind: StageName, tracker: str) -> str:
        rest = f"{kind}:{_escape_glob(tracker)}:*" if tracker else f"{kind}:*"
        shard = "" if self.shards is None else "{*}:"
        return f"{_escape_glob(self.prefix)}:{shard}{rest}"

    def _parse(self, key: str) -> tuple[StageName, str, str]:
        """(stage, tracker, stream) of a stream key of this stack."""
        rest = key[len(self.prefix) + 1 :] if key.startswith(f"{self.prefix}:") else None
        if rest is not None and self.shards is not None:
            rest = rest.split(":", 1)[1] if rest.startswith("{") and "}:" in rest else None
        kind, _, tail = (rest or "").partition(":")
        if kind in ("frames", "results") and tail:
            return kind, "", tail  # type: ignore[return-value]
        if kind in ("tracks", "events") and ":" in tail:
            tracker, stream = tail.split(":", 1)  # the tracker's name holds no ':'
            return kind, tracker, stream  # type: ignore[return-value]
        raise ValueError(f"{key!r} is not a frames, results, tracks or events key of prefix {self.prefix!r}")

    # ------------------------------------------------------------------------------------------------ the rest
    def dead_letters(self, origin: str = "") -> str:
        """The dead-letter stream for entries of the stream ``origin``: on a cluster, one per shard, in the slot of
        ``origin`` so that moving an entry there and acking it is one transaction."""
        return self._at(tag_of(origin) if self.shards is not None else None, "dead")

    def dead_letters_pattern(self) -> str:
        """SCAN MATCH pattern of every dead-letter stream of this stack (a shard's, an alert sink's)."""
        return f"{_escape_glob(self.prefix)}:{'' if self.shards is None else '{*}:'}dead"

    def detector_group(self, pool: str) -> str:
        """Consumer group of a detector pool on the frames streams."""
        return f"detector:{pool}"

    def stale(self, group: str, stream: str) -> str:
        """Hash (stream name -> count) of the frames a detector group acked as too old to infer, so every frame
        read is accounted for (a result, a dead letter, or this tally) and anyone can read the drops. On a cluster,
        one per shard: this is the one that counts ``stream``'s (see :meth:`tallies`)."""
        return self._at(self.shard(stream), f"stale:{group}")

    def shed(self, group: str, stream: str) -> str:
        """Hash (stream name -> count) of the live frames a detector group shed because newer frames of their stream
        were waiting (``shed_behind``): skipped unread, or read and superseded. With the stale tally and the results,
        every frame pushed is accounted for. On a cluster, one per shard, as :meth:`stale`."""
        return self._at(self.shard(stream), f"shed:{group}")

    def tallies(self, kind: Literal["stale", "shed"], group: str) -> list[str]:
        """Every shard's hash of a tally (one key on one server): read them all for every stream's count."""
        return [self._at(tag, f"{kind}:{group}") for tag in self.tags()]

    def replicas(self, group: str) -> str:
        """Hash (replica -> JSON: device, engine, GPU memory, counts, time) each detector replica of a group
        refreshes every few seconds, for ``python -m common.stack.status``."""
        return f"{self.prefix}:replicas:{group}"

    def sink_group(self, sink: str) -> str:
        """Consumer group of a sink on the results streams."""
        return f"sink:{sink}"

    def alerts(self, sink: str) -> str:
        """Stream of the alerts an alert sink raised: its actions' delivery queue, and readable by anyone."""
        return self._at(self._sink_tag(sink), f"alerts:{sink}")

    def alerted(self, sink: str) -> str:
        """Sorted set (frame id -> time) of the results an alert sink has handled, so a redelivery alerts once."""
        return self._at(self._sink_tag(sink), f"alerted:{sink}")

    def _sink_tag(self, sink: str) -> str | None:
        """An alert sink's keys share a slot: its alerts, the results it handled, and their dead letters."""
        return None if self.shards is None else f"alerts.{sink}"

    def lease(self, tracker: str, stream: str) -> str:
        """String (owner replica, with a TTL) naming the tracker replica that tracks one camera now."""
        return self._at(self.shard(stream), f"lease:{tracker}:{stream}")

    def track_state(self, tracker: str, stream: str) -> str:
        """String (msgpack) of one camera's tracker state, written with each batch its owner finishes, so that a
        new owner continues the same tracks and track ids."""
        return self._at(self.shard(stream), f"trackstate:{tracker}:{stream}")

    def counts(self, tracker: str, stream: str) -> str:
        """Hash of one camera's counts, per label: tracks started, zones entered and left, lines crossed per
        direction (running totals), and the objects in each zone now (see docs/result-schema.md)."""
        return self._at(self.shard(stream), f"counts:{tracker}:{stream}")

    def tracker_replicas(self, tracker: str) -> str:
        """Sorted set (replica -> expiry time) of a tracker sink's live replicas: each takes its share of cameras."""
        return f"{self.prefix}:trackers:{tracker}"

    def action_group(self, action: str) -> str:
        """Consumer group of one alert action on its sink's alerts stream."""
        return f"action:{action}"


def matches(stream: str, patterns: list[str]) -> bool:
    """True when a stream name matches any of the glob patterns (case-sensitive)."""
    return any(fnmatch.fnmatchcase(stream, p) for p in patterns)


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
