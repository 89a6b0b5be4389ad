"""Every Redis key name the stack uses, in one place.

Keys live under a configurable prefix so one Redis can host several stacks:
``{prefix}:frames:{stream}``, ``{prefix}:results:{stream}``, ``{prefix}:dead``, and per alert sink
``{prefix}:alerts:{sink}`` and ``{prefix}:alerted:{sink}``, per detector pool the stale-frame tally
``{prefix}:stale:{group}``, and per tracker sink and camera ``{prefix}:tracks:{tracker}:{stream}``,
``{prefix}:events:{tracker}:{stream}``, its lease, state and counts.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal

# Stream (camera) names become part of key names: keep them free of ':' and glob characters.
STREAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_STREAM_NAME = re.compile(STREAM_NAME_PATTERN)


def valid_stream_name(name: str) -> bool:
    """True when ``name`` can be used as a camera/stream name."""
    return bool(_STREAM_NAME.match(name))


@dataclass(frozen=True)
class Keys:
    """Key names for one stack (one prefix)."""

    prefix: str

    def frames(self, stream: str) -> str:
        return f"{self.prefix}:frames:{stream}"

    def results(self, stream: str) -> str:
        return f"{self.prefix}:results:{stream}"

    def dead_letters(self) -> str:
        return f"{self.prefix}:dead"

    def frames_pattern(self) -> str:
        """SCAN MATCH pattern for every frames key of this stack."""
        return f"{_escape_glob(self.prefix)}:frames:*"

    def results_pattern(self) -> str:
        return f"{_escape_glob(self.prefix)}:results:*"

    def tracks(self, tracker: str, stream: str) -> str:
        """Stream of one camera's results with their detections assigned to tracks, by a tracker sink."""
        return f"{self.prefix}:tracks:{tracker}:{stream}"

    def events(self, tracker: str, stream: str) -> str:
        """Stream of the events (start, update, end) of one camera's tracked objects, by a tracker sink."""
        return f"{self.prefix}:events:{tracker}:{stream}"

    def stage(self, stage: Literal["frames", "results", "tracks", "events"], tracker: str = "") -> tuple[str, str]:
        """(SCAN pattern, key head) of one stage's streams: key = head + stream name. Tracks and events are a
        tracker sink's: ``tracker`` names it."""
        if stage == "frames":
            head = self.frames("")
        elif stage == "results":
            head = self.results("")
        else:
            if not tracker:
                raise ValueError(f"the {stage} streams are a tracker's: name the tracker sink")
            head = self.tracks(tracker, "") if stage == "tracks" else self.events(tracker, "")
        return f"{_escape_glob(head)}*", head

    def stream_of(self, key: str) -> str:
        """The stream (camera) name inside a frames, results, tracks or events key."""
        for kind in ("frames", "results"):
            head = f"{self.prefix}:{kind}:"
            if key.startswith(head):
                return key[len(head) :]
        for kind in ("tracks", "events"):
            head = f"{self.prefix}:{kind}:"
            if key.startswith(head) and ":" in key[len(head) :]:
                return key[len(head) :].split(":", 1)[1]  # past the tracker's name (names hold no ':')
        raise ValueError(f"{key!r} is not a frames, results, tracks or events key of prefix {self.prefix!r}")

    def detector_group(self, pool: str) -> str:
        """Consumer group of a detector pool on the frames streams."""
        return f"detector:{pool}"

    def stale(self, group: str) -> str:
        """Hash (stream name -> count) of the frames a detector group acked as too old to infer, so every frame
        read is accounted for (a result, a dead letter, or this tally) and anyone can read the drops."""
        return f"{self.prefix}:stale:{group}"

    def shed(self, group: str) -> str:
        """Hash (stream name -> count) of the live frames a detector group shed because newer frames of their stream
        were waiting (``shed_behind``): skipped unread, or read and superseded. With the stale tally and the results,
        every frame pushed is accounted for."""
        return f"{self.prefix}:shed:{group}"

    def replicas(self, group: str) -> str:
        """Hash (replica -> JSON: device, engine, GPU memory, counts, time) each detector replica of a group
        refreshes every few seconds, for ``python -m common.stack.status``."""
        return f"{self.prefix}:replicas:{group}"

    def sink_group(self, sink: str) -> str:
        """Consumer group of a sink on the results streams."""
        return f"sink:{sink}"

    def alerts(self, sink: str) -> str:
        """Stream of the alerts an alert sink raised: its actions' delivery queue, and readable by anyone."""
        return f"{self.prefix}:alerts:{sink}"

    def alerted(self, sink: str) -> str:
        """Sorted set (frame id -> time) of the results an alert sink has handled, so a redelivery alerts once."""
        return f"{self.prefix}:alerted:{sink}"

    def lease(self, tracker: str, stream: str) -> str:
        """String (owner replica, with a TTL) naming the tracker replica that tracks one camera now."""
        return f"{self.prefix}:lease:{tracker}:{stream}"

    def track_state(self, tracker: str, stream: str) -> str:
        """String (msgpack) of one camera's tracker state, written with each batch its owner finishes, so that a
        new owner continues the same tracks and track ids."""
        return f"{self.prefix}:trackstate:{tracker}:{stream}"

    def counts(self, tracker: str, stream: str) -> str:
        """Hash of one camera's counts, per label: tracks started, zones entered and left, lines crossed per
        direction (running totals), and the objects in each zone now (see docs/result-schema.md)."""
        return f"{self.prefix}:counts:{tracker}:{stream}"

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
