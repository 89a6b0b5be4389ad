"""What the MQTT sink publishes, built without a broker: topics, event payloads, count states, and the Home
Assistant discovery configs (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

Topics (``{p}``: topic_prefix; names encoded by :func:`topic_level`)::

    {p}/status                                      online / offline (retained; the last will says offline)
    {p}/{camera}/events                             each Event as JSON (not retained)
    {p}/{camera}/occupancy/{zone}/{label}           objects in the zone now (retained; zone '*': the whole camera)
    {p}/{camera}/entered/{zone}/{label}             running totals (retained)
    {p}/{camera}/left/{zone}/{label}
    {p}/{camera}/crossed/{line}/{in|out}/{label}
    {p}/{camera}/tracks/{label}                     objects seen (tracks started)
    {p}/{camera}/occupied/{zone}                    ON while any (published) label is in the zone (retained)
    {discovery_prefix}/{sensor|binary_sensor}/{node_id}/{object_id}/config     discovery configs (retained)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from common.wire import Event
from sink.mqtt import CountKind, MqttSinkConfig

WHOLE = "*"
"""The zone of the counts hash that is the whole camera."""

Component = Literal["sensor", "binary_sensor"]

# What MQTT reserves in a topic ('/' between levels, the wildcards, NUL), '%' (the escape itself, so that the
# encoding is reversible), and what tools and HA templates trip on (whitespace, control characters).
_UNSAFE = re.compile(r"[%/+#\x00-\x20\x7f-\x9f\s]")
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")

_ICONS: dict[str, str] = {
    "occupancy": "mdi:account-group",
    "entered": "mdi:location-enter",
    "left": "mdi:location-exit",
    "crossed": "mdi:transit-connection-horizontal",
    "tracks": "mdi:counter",
}


def topic_level(name: str) -> str:
    """``name`` as one topic level: '%', '/', '+', '#', whitespace and control characters percent-encoded (UTF-8),
    everything else kept. Reversible (``urllib.parse.unquote``) and one-to-one: two names never share a topic."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def object_id(*parts: str) -> str:
    """A discovery object id for ``parts``: readable (the parts joined by '_', anything outside [A-Za-z0-9_-]
    replaced by '_'), and unique because a digest of the exact parts follows (``a b`` and ``a_b`` differ)."""
    slug = _NOT_ID.sub("_", "_".join(parts)).strip("_")[:80]
    digest = hashlib.blake2s(json.dumps(parts).encode(), digest_size=5).hexdigest()
    return f"{slug}_{digest}" if slug else digest


@dataclass(frozen=True)
class Message:
    """One MQTT publish."""

    topic: str
    payload: str
    retain: bool


@dataclass(frozen=True)
class Count:
    """One field of a camera's counts hash."""

    kind: CountKind
    label: str
    value: int
    place: str = ""
    """The zone (occupancy, entered, left) or the line (crossed); empty for tracks."""
    direction: str = ""
    """crossed: 'in' or 'out'."""


_FIELD_KINDS: dict[str, tuple[CountKind, int]] = {
    # hash field head -> (count kind, parts after the head: the last is the label)
    "tracks": ("tracks", 1),
    "entered": ("entered", 2),
    "left": ("left", 2),
    "now": ("occupancy", 2),
    "crossed": ("crossed", 3),
}


def parse_counts(fields: Mapping[str, bytes]) -> tuple[list[Count], list[str]]:
    """The counts of a camera's counts hash, and a line for each field that is not one (skipped)."""
    counts: list[Count] = []
    problems: list[str] = []
    for name, raw in sorted(fields.items()):
        head, _, rest = name.partition(":")
        known = _FIELD_KINDS.get(head)
        parts = rest.split(":", known[1] - 1) if known else []  # the label last, whatever it holds
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if known is None or len(parts) != known[1] or not all(parts) or value < 0:
            problems.append(f"{name!r} = {raw[:40]!r}")
            continue
        kind = known[0]
        if kind == "crossed" and parts[1] not in ("in", "out"):
            problems.append(f"{name!r}: direction {parts[1]!r} is neither 'in' nor 'out'")
            continue
        place, direction = (parts[0] if len(parts) > 1 else ""), (parts[1] if kind == "crossed" else "")
        counts.append(Count(kind, parts[-1], value, place, direction))
    return counts, problems


@dataclass(frozen=True)
class Sensor:
    """One Home Assistant entity of a camera: where its state goes, the state now, and its discovery config."""

    component: Component
    object_id: str
    state_topic: str
    state: str
    config: dict[str, Any]
    resting: str | None = None
    """The state it takes when its count is gone from the hash (occupancy: nobody left), None: it keeps its last."""

    def state_message(self) -> Message:
        return Message(self.state_topic, self.state, retain=True)

    def at_rest(self) -> Sensor | None:
        """This sensor in its resting state, or None if it has none."""
        return None if self.resting is None else replace(self, state=self.resting)


class Layout:
    """The topics and sensors of one MQTT sink."""

    def __init__(self, cfg: MqttSinkConfig) -> None:
        self.cfg = cfg
        self.status = f"{cfg.topic_prefix}/status"
        """Availability topic: ``online`` retained while connected, ``offline`` as the last will and on leaving."""
        self.ha_status = f"{cfg.discovery_prefix}/status"
        """Home Assistant's birth and last-will topic: ``online`` when it (re)starts, so the configs go again."""

    def events(self, camera: str) -> str:
        return f"{self.cfg.topic_prefix}/{topic_level(camera)}/events"

    def event_message(self, camera: str, event: Event) -> Message:
        return Message(self.events(camera), json.dumps(event.model_dump(mode="json")), retain=False)

    def config_message(self, sensor: Sensor) -> Message:
        topic = f"{self.cfg.discovery_prefix}/{sensor.component}/{self.cfg.node_id}/{sensor.object_id}/config"
        return Message(topic, json.dumps(sensor.config, sort_keys=True), retain=True)

    def wanted(self, count: Count) -> bool:
        """Whether the settings publish this count (labels, zones, lines, counts)."""
        cfg = self.cfg
        if count.kind not in cfg.counts or (cfg.labels and count.label not in cfg.labels):
            return False
        places = cfg.lines if count.kind == "crossed" else cfg.zones
        return not (count.place and places and count.place not in places)

    def sensors(self, camera: str, counts: list[Count]) -> list[Sensor]:
        """The sensors of the wanted counts of one camera, and its 'occupied' binary sensors."""
        out: list[Sensor] = []
        present: dict[str, int] = {}
        for count in counts:
            if not self.wanted(count):
                continue
            out.append(self._count_sensor(camera, count))
            if count.kind == "occupancy":
                present[count.place] = present.get(count.place, 0) + count.value
        if self.cfg.occupied and "occupancy" in self.cfg.counts:
            out.extend(self._occupied_sensor(camera, zone, n > 0) for zone, n in sorted(present.items()))
        return out

    def _count_sensor(self, camera: str, count: Count) -> Sensor:
        levels = [count.kind, count.place, count.direction, count.label]
        topic = "/".join([self.cfg.topic_prefix, topic_level(camera), *(topic_level(x) for x in levels if x)])
        oid = object_id(camera, *(x for x in levels if x))
        config = self._config(
            camera,
            oid,
            name=_name(count),
            state_topic=topic,
            state_class="measurement" if count.kind == "occupancy" else "total_increasing",
            icon=_ICONS[count.kind],
            suggested_display_precision=0,
        )
        resting = "0" if count.kind == "occupancy" else None
        return Sensor("sensor", oid, topic, str(count.value), config, resting)

    def _occupied_sensor(self, camera: str, zone: str, occupied: bool) -> Sensor:
        topic = f"{self.cfg.topic_prefix}/{topic_level(camera)}/occupied/{topic_level(zone)}"
        oid = object_id(camera, "occupied", zone)
        name = "occupied" if zone == WHOLE else f"{zone} occupied"
        config = self._config(
            camera, oid, name=name, state_topic=topic, device_class="occupancy", payload_on="ON", payload_off="OFF"
        )
        return Sensor("binary_sensor", oid, topic, "ON" if occupied else "OFF", config, "OFF")

    def _config(self, camera: str, oid: str, **entity: Any) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **entity,
            "unique_id": f"{cfg.node_id}_{oid}",
            "availability_topic": self.status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": cfg.qos,
            # One device per camera: HA groups its entities and prefixes their names with the camera's.
            "device": {
                "identifiers": [f"{cfg.node_id}_{camera}"],
                "name": camera,
                "manufacturer": "streamyolo",
                "model": "streamyolo",
            },
            "origin": {"name": "streamyolo"},
        }


def _name(count: Count) -> str:
    where = "view" if count.place == WHOLE else count.place
    if count.kind == "occupancy":
        return f"{count.label} in {where}"
    if count.kind in ("entered", "left"):
        return f"{count.label} {count.kind} {where}"
    if count.kind == "crossed":
        return f"{count.label} crossed {count.place} {count.direction}"
    return f"{count.label} seen"
