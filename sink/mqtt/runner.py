"""The MQTT sink's loop: a tracker's events in, published on the broker, each acked once the broker confirmed it;
then the counts of the cameras they touched, as retained states and Home Assistant sensors.

Nothing is lost to a broker outage: events wait, pending in their consumer group and in hand here, while the
connection is retried with back-off; no new event is read meanwhile. Delivery is at least once: an event whose
confirmation was lost with the connection is published again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from common.backoff import Backoff
from common.keys import Keys
from common.redis_io import Client, Entry, GroupReader, RedisIOError, Refused, connect, fields
from common.service import Context
from common.wire import Event
from sink.mqtt import MqttSinkConfig
from sink.mqtt.discovery import Layout, Message, Sensor, parse_counts
from sink.runner import SinkOptions, events_reader

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

STATES_PER_PUBLISH = 1000
"""Most state and config messages confirmed together (cameras are not split): each group within timeout_s."""
WARNED_MAX = 10_000
"""Malformed count fields remembered so each is logged once (bounded: a broken writer must not fill memory)."""


class BrokerError(Exception):
    """The broker cannot be reached, refused this client, or did not confirm in time: reconnect after a while."""


class Publisher(Protocol):
    """A connection to the broker (:class:`Broker`; a fake in the unit tests)."""

    def ensure(self) -> bool:
        """Connect unless connected; True when this made a new connection. Raises :class:`BrokerError`."""
        ...

    def publish(self, messages: Sequence[Message]) -> list[bool]:
        """Publish in order; which of them the broker confirmed within the timeout."""
        ...

    def ha_restarted(self) -> bool:
        """Whether Home Assistant announced itself (birth message) since the last call."""
        ...

    def drop(self) -> None: ...

    def close(self) -> None:
        """Leave: ``offline`` on the availability topic, then disconnect."""
        ...


def run(ctx: Context[SinkOptions], sink: MqttSinkConfig) -> int:
    cfg = ctx.config
    client = connect(ctx.redis_url, cfg.redis)
    reader = events_reader(ctx, sink, client, sink.events_of)
    layout = Layout(sink)
    broker = Broker(sink, layout)
    forwarder = Forwarder(sink, layout, reader, client, cfg.keys, broker)
    backoff = Backoff(sink.retry_initial_s, sink.retry_max_s)
    try:
        while (why := ctx.stop_reason()) is None:
            if not forwarder.holding:  # events not yet confirmed go first, and alone: memory stays bounded
                entries = reader.read()
                forwarder.take(entries)
                ctx.bounds.count(len(entries))
            try:
                forwarder.flush()
            except (BrokerError, RedisIOError) as exc:
                if isinstance(exc, BrokerError):
                    broker.drop()
                delay = backoff.next_delay()
                log.warning("%s; %d events wait; retrying in %.1f s", exc, len(forwarder.events), delay)
                backoff.wait(ctx.shutdown, delay)
                continue
            backoff.reset()
    finally:
        broker.close()
        reader.close()  # on a cluster: its blocking reads' threads end now, not after their BLOCK
        client.close()
    log.info("stopping (%s); published %d events (%d still pending); %s", why, forwarder.published,
             len(forwarder.events), reader.stats)  # fmt: skip
    return 0


class Forwarder:
    """The sink's work in hand: events to publish and ack, cameras whose counts to publish."""

    def __init__(
        self,
        sink: MqttSinkConfig,
        layout: Layout,
        reader: GroupReader,
        client: Client,
        keys: Keys,
        broker: Publisher,
    ) -> None:
        self.sink, self.layout, self.reader, self.client, self.keys, self.broker = (
            sink, layout, reader, client, keys, broker,
        )  # fmt: skip
        self.events: list[tuple[Entry, Message]] = []
        """Read, not yet confirmed by the broker (nor acked), in order."""
        self.published = 0
        self._dirty: set[str] = set()
        """Cameras whose counts are to be (re)published."""
        self._all_dirty = True
        """Every camera's counts are to be published (a new connection): resolved once the streams are known."""
        self._announced: set[str] = set()
        """Sensors (object ids) whose discovery config this connection carried."""
        self._states: dict[str, str] = {}
        """State topic -> the state this connection carried (retained): only changes go again."""
        self._known: dict[str, dict[str, Sensor]] = {}
        """Camera -> its sensors last published, so that occupancy gone from the hash goes back to 0."""
        self._warned: set[str] = set()

    @property
    def holding(self) -> bool:
        return bool(self.events)

    def take(self, entries: list[Entry]) -> None:
        """Queue the events of ``entries``; malformed ones, and ones on a stream they do not belong to, are
        dead-lettered with the reason."""
        for entry, event in self.reader.messages(entries, Event):
            camera = self.keys.stream_of(entry.key)
            if event.tracker != self.sink.events_of or event.stream != camera:
                self.reader.dead_letter(
                    entry, f"an event of tracker {event.tracker!r}, camera {event.stream!r} on the events stream of "
                    f"tracker {self.sink.events_of!r}, camera {camera!r}",
                )  # fmt: skip
                continue
            self.events.append((entry, self.layout.event_message(camera, event)))
            self._dirty.add(camera)

    def flush(self) -> None:
        """Publish the events in hand (acking each confirmed one), then the counts of the cameras they touched.
        Raises :class:`BrokerError` (nothing confirmed is published again on this connection) or, reading the
        counts, :class:`RedisIOError`."""
        if self.broker.ensure():
            self._announced.clear()
            self._states.clear()  # the broker may have lost its retained messages: everything goes again
            self._all_dirty = True
        if self.broker.ha_restarted() and self.sink.discovery:
            log.info("Home Assistant (re)started: announcing every sensor again")
            self._announced.clear()
            self._dirty.update(self._known)
        if self._all_dirty and self.reader.keys:
            self._dirty.update(self.keys.stream_of(k) for k in self.reader.keys)
            self._all_dirty = False
        self._publish_events()
        self._publish_counts()

    def _publish_events(self) -> None:
        if not self.events:
            return
        confirmed = self.broker.publish([m for _, m in self.events])
        done = [e for (e, _), ok in zip(self.events, confirmed, strict=True) if ok]
        self.reader.ack(done)  # retried by the reader until Redis takes it: a confirmed event never goes twice
        self.published += len(done)
        self.events = [item for item, ok in zip(self.events, confirmed, strict=True) if not ok]
        if self.events:
            raise BrokerError(f"the broker confirmed {len(done)} of {len(confirmed)} events")

    def _publish_counts(self) -> None:
        batch: list[tuple[str, list[Sensor], list[tuple[Message, str, str]]]] = []
        size = 0
        for camera in sorted(self._dirty):
            sensors = self._sensors(camera)
            if sensors is None:
                self._dirty.discard(camera)
                continue
            messages = self._messages(sensors)
            batch.append((camera, sensors, messages))
            size += len(messages)
            if size >= STATES_PER_PUBLISH:
                self._send(batch)
                batch, size = [], 0
        self._send(batch)

    def _sensors(self, camera: str) -> list[Sensor] | None:
        """The camera's sensors now (those that left the hash at rest); None when its counts cannot be read."""
        key = self.keys.counts(self.sink.events_of, camera)
        try:
            raw = fields(self.client, key)
        except Refused as exc:  # not a hash (someone else's key): nothing to publish, and retrying cannot help
            self._warn(key, f"cannot read the counts of camera {camera!r} ({key}): {exc}")
            return None
        counts, problems = parse_counts(raw)
        for problem in problems:
            self._warn(f"{key} {problem}", f"skipping a field of {key} that is not a count: {problem}")
        now = {s.object_id: s for s in self.layout.sensors(camera, counts)}
        for oid, before in self._known.get(camera, {}).items():
            if oid not in now and (resting := before.at_rest()) is not None:
                now[oid] = resting
        return list(now.values())

    def _messages(self, sensors: list[Sensor]) -> list[tuple[Message, str, str]]:
        """(message, 'config' or 'state', object id or state) for what this connection has not carried yet:
        configs first, so Home Assistant knows a sensor before its state arrives."""
        configs = [
            (self.layout.config_message(s), "config", s.object_id)
            for s in sensors
            if self.sink.discovery and s.object_id not in self._announced
        ]
        states = [(s.state_message(), "state", s.state) for s in sensors if self._states.get(s.state_topic) != s.state]
        return configs + states

    def _send(self, batch: list[tuple[str, list[Sensor], list[tuple[Message, str, str]]]]) -> None:
        messages = [m for _, _, ms in batch for m in ms]
        confirmed = self.broker.publish([m for m, _, _ in messages]) if messages else []
        for (message, what, value), ok in zip(messages, confirmed, strict=True):
            if ok and what == "config":
                self._announced.add(value)
            elif ok:
                self._states[message.topic] = value
        if not all(confirmed):
            raise BrokerError(f"the broker confirmed {sum(confirmed)} of {len(confirmed)} counts and configs")
        for camera, sensors, _ in batch:
            self._known[camera] = {s.object_id: s for s in sensors}
            self._dirty.discard(camera)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            if len(self._warned) >= WARNED_MAX:
                self._warned.clear()
            self._warned.add(key)
            log.warning("%s", message)


class Broker:
    """One connection to the broker at a time, with paho's network thread; made when needed, dropped on failure.

    The connection carries a last will (``offline``, retained, on the availability topic), says ``online`` once
    connected, and, with discovery, listens for Home Assistant's birth message.
    """

    def __init__(self, cfg: MqttSinkConfig, layout: Layout) -> None:
        self.cfg = cfg
        self.layout = layout
        self.where = f"mqtt broker {cfg.host}:{cfg.port}"
        self._client: mqtt.Client | None = None
        self._lost = threading.Event()
        self._ha_online = threading.Event()

    def ensure(self) -> bool:
        if self._client is not None and not self._lost.is_set():
            return False
        self.drop()
        self._client = self._connect()
        log.info("connected to %s", self.where)
        return True

    def publish(self, messages: Sequence[Message]) -> list[bool]:
        client = self._client
        if client is None or not messages:
            return [False] * len(messages)
        infos: list[mqtt.MQTTMessageInfo | None] = []
        for m in messages:
            try:
                infos.append(client.publish(m.topic, m.payload, qos=self.cfg.qos, retain=m.retain))
            except ValueError as exc:  # a topic paho refuses (the encoding keeps wildcards out: a bug if seen)
                log.error("cannot publish on %r: %s", m.topic, exc)
                infos.append(None)
        return _confirmed(infos, time.monotonic() + self.cfg.timeout_s, self._lost)

    def ha_restarted(self) -> bool:
        restarted = self._ha_online.is_set()
        self._ha_online.clear()
        return restarted

    def drop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.disconnect()
            client.loop_stop()

    def close(self) -> None:
        """Say ``offline`` (retained: a clean disconnect sends no last will) and disconnect."""
        if self._client is not None and not self._lost.is_set():
            info = self._client.publish(self.layout.status, "offline", qos=self.cfg.qos, retain=True)
            if not _confirmed([info], time.monotonic() + min(self.cfg.timeout_s, 5.0), self._lost)[0]:
                log.warning("%s did not confirm 'offline' on %s", self.where, self.layout.status)
        self.drop()

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt  # here: every process imports the sink kinds, only this one publishes
        from paho.mqtt.enums import CallbackAPIVersion

        cfg, layout = self.cfg, self.layout
        # No paho reconnection: the loop reconnects with the shared back-off, and knows it did (configs go again).
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or "", reconnect_on_failure=False)
        client.connect_timeout = cfg.timeout_s
        client.will_set(layout.status, "offline", qos=cfg.qos, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, os.environ.get(cfg.password_env))
        connected = threading.Event()
        refused: list[str] = []
        lost, ha_online = threading.Event(), self._ha_online
        self._lost = lost  # a fresh one per connection: a late callback of the old one cannot mark this one lost

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            connected.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            lost.set()
            connected.set()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            # A retained 'online' is old news (HA's birth is not retained unless configured so): no restart.
            if msg.topic == layout.ha_status and msg.payload == b"online" and not msg.retain:
                ha_online.set()

        client.on_connect, client.on_disconnect, client.on_message = on_connect, on_disconnect, on_message
        try:
            if cfg.tls:
                client.tls_set(
                    ca_certs=_path(cfg.tls_ca_file), certfile=_path(cfg.tls_cert_file), keyfile=_path(cfg.tls_key_file)
                )
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # refused, unreachable, a name that does not resolve, TLS (SSLError)
            raise BrokerError(f"{self.where}: cannot connect: {exc}") from None
        client.loop_start()
        if not connected.wait(cfg.timeout_s) or refused or lost.is_set():
            client.disconnect()
            client.loop_stop()
            if refused:
                why = f"refused the connection: {refused[0]}"
            else:
                why = "closed the connection" if lost.is_set() else f"no CONNACK within {cfg.timeout_s} s"
            raise BrokerError(f"{self.where}: {why}")
        infos: list[mqtt.MQTTMessageInfo | None] = [client.publish(layout.status, "online", qos=cfg.qos, retain=True)]
        if cfg.discovery:
            client.subscribe(layout.ha_status, qos=1)
        if not _confirmed(infos, time.monotonic() + cfg.timeout_s, lost)[0]:
            client.disconnect()
            client.loop_stop()
            raise BrokerError(f"{self.where}: 'online' not confirmed within {cfg.timeout_s} s")
        return client


def _confirmed(infos: Sequence[mqtt.MQTTMessageInfo | None], deadline: float, lost: threading.Event) -> list[bool]:
    """Whether each publish was confirmed by the broker (PUBACK, PUBCOMP) by ``deadline``, one deadline for all;
    a connection lost meanwhile ends the wait (what it had not confirmed never will be)."""
    out = []
    for info in infos:
        try:
            while info is not None and not info.is_published() and not lost.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                info.wait_for_publish(min(left, 0.1))
        except (RuntimeError, ValueError):  # not connected when published, or the connection died meanwhile
            pass
        out.append(info is not None and info.is_published())
    return out


def _path(path: os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
