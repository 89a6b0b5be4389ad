"""Shared fixtures: a real Redis-compatible server for the session, unique key prefixes, small configs."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.embedded import EmbeddedServer
from common.redis_io import connect

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def reachable(host: str, port: int) -> bool:
    """A server answers TCP connections at host:port (within 2 s)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server at REDIS_URL when set, else an embedded valkey started for this test session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedServer(tmp_path_factory.mktemp("valkey") / "v.sock") as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for every test, so tests never see each other's streams on a shared server."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(server_url: str, prefix: str) -> Iterator[redis.Redis]:
    c = connect(server_url)
    yield c
    for key in c.scan_iter(match=f"{prefix}:*"):
        c.delete(key)
    c.close()


@pytest.fixture(scope="module")
def broker() -> tuple[str, int]:
    """The MQTT broker (Mosquitto on 127.0.0.1:1883 unless STREAMYOLO_MQTT_HOST/PORT say else)."""
    host = os.environ.get("STREAMYOLO_MQTT_HOST", "127.0.0.1")
    port = int(os.environ.get("STREAMYOLO_MQTT_PORT", "1883"))
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no MQTT broker reachable at {host}:{port}: {exc}")
    return host, port
