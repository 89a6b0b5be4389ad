"""The MQTT sink: a tracker's events and per-camera counts published on an MQTT broker (``kind: mqtt``), with Home
Assistant MQTT discovery so that each camera is a device whose occupancy and counts are sensors.

Events go to ``{topic_prefix}/{camera}/events`` (JSON, not retained), each acked in Redis only once the broker
confirmed it; after each batch the counts of the cameras it touched are published as retained states, one topic
per count (``discovery``), and each sensor's discovery config once per connection (``runner``).

This module declares the sink's settings and registers its kind (see ``common.plugins``); it imports nothing else:
every process discovers the sink kinds, and only this sink needs paho.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from common.plugins import SINKS
from common.settings import ConfigPath, ConsumerSinkSettings, Name, ReadsEvents

Names = list[Annotated[str, Field(min_length=1, max_length=128)]]
CountKind = Literal["occupancy", "entered", "left", "crossed", "tracks"]
COUNT_KINDS: tuple[CountKind, ...] = ("occupancy", "entered", "left", "crossed", "tracks")

# Topic levels of our own: no wildcard, no empty level, no leading or trailing '/'.
_TOPIC = r"^[^#+/\x00](?:[^#+\x00]*[^#+/\x00])?$"


class MqttSinkConfig(ConsumerSinkSettings, ReadsEvents):
    """A tracker's events and counts on an MQTT broker, announced to Home Assistant (MQTT discovery)."""

    kind: Literal["mqtt"] = "mqtt"
    events_of: Name = Field(description="The tracker sink (kind tracker) whose events and counts are published.")
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual one for TLS).")
    tls: bool = Field(False, description="Connect with TLS, checking the broker's certificate and host name.")
    tls_ca_file: ConfigPath | None = Field(
        None, description="TLS: CA bundle (PEM) the broker's certificate must chain to; None: the system's."
    )
    tls_cert_file: ConfigPath | None = Field(
        None, description="TLS: client certificate (PEM) for mutual TLS; needs tls_key_file."
    )
    tls_key_file: ConfigPath | None = Field(None, description="TLS: private key (PEM, unencrypted) of tls_cert_file.")
    username: str | None = Field(
        None, min_length=1, max_length=255, description="Broker user; the password comes from password_env."
    )
    password_env: str = Field(
        "MQTT_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Environment variable holding the broker password (never in the config, never logged).",
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id; None: a random one (two clients with one id throw each other off the broker).",
    )
    topic_prefix: str = Field(
        "streamyolo", max_length=256, pattern=_TOPIC, description="First topic levels of every topic published."
    )
    discovery: bool = Field(True, description="Announce each count as a Home Assistant sensor (MQTT discovery).")
    discovery_prefix: str = Field(
        "homeassistant", max_length=256, pattern=_TOPIC, description="Home Assistant's discovery prefix."
    )
    node_id: str = Field(
        "streamyolo",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Discovery topics' node id and the start of every unique_id: give two stacks feeding one Home "
        "Assistant different ones.",
    )
    labels: Names = Field(
        default_factory=list, max_length=1000, description="Labels whose counts are published; empty: every label."
    )
    zones: Names = Field(
        default_factory=list,
        max_length=1000,
        description="Zones whose counts are published ('*': the whole camera); empty: every zone.",
    )
    lines: Names = Field(
        default_factory=list, max_length=1000, description="Lines whose crossings are published; empty: every line."
    )
    counts: list[CountKind] = Field(
        list(COUNT_KINDS),
        min_length=1,
        description="Counts published: occupancy (objects in a zone now), entered, left (a zone), crossed (a line, "
        "per direction), tracks (objects seen); the last four are running totals.",
    )
    occupied: bool = Field(True, description="Also an 'occupied' binary sensor per camera and zone (occupancy > 0).")
    qos: Literal[1, 2] = Field(
        1, description="MQTT quality of service: an event is acked once the broker confirmed it (PUBACK or PUBCOMP)."
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keep-alive: the broker publishes 'offline' this long (x1.5) after a crash."
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout to connect and to have a batch confirmed.")
    retry_initial_s: float = Field(1.0, gt=0, le=600, description="First wait before reconnecting to the broker.")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between reconnection attempts.")

    @model_validator(mode="after")
    def _tls_settings(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("mutual TLS needs both tls_cert_file and tls_key_file (or neither)")
        files = [n for n in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, n) is not None]
        if files and not self.tls:
            # Ignoring them would talk in clear text to a broker the user meant to reach over TLS.
            raise ValueError(f"{', '.join(files)} set without tls: true")
        return self


SINKS.register(MqttSinkConfig, "sink.mqtt.runner:run")
