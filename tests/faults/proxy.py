"""A TCP proxy the fault tests control: the network between a service and its server, cut or reset on demand.

It listens on 127.0.0.1 (a free port) and forwards each connection to a TCP ``(host, port)`` or to a unix socket
path (the tests' embedded Redis listens on one). An asyncio loop on a thread of its own carries every connection;
the controls are called from the test's thread and return once the proxy is in the new state.

- :meth:`Proxy.cut`: a silent network. Connections stay open but no byte goes through in either direction, and new
  connections are accepted but never reach the target: nothing answers, so a client without a timeout hangs.
  ``cut(replies_only=True)`` cuts one way: requests still reach the target, which executes them, but no reply
  comes back, so every call's outcome is unknown to its client.
- :meth:`Proxy.reset`: every connection is closed with a TCP RST and the port stops listening: connecting is
  refused.
- :meth:`Proxy.restore`: forwarding again, for new connections. Every connection held through a cut (open before
  it, or accepted during it) is closed then with a TCP RST, both sides, and what it held is discarded: the network
  came back, but the middlebox between the peers (a NAT, a stateful firewall) forgot its connections. So nothing
  sent into the cut arrives late, which keeps what the peers can know exact: a request that reached the server
  before the cut was executed and only its reply is lost; one sent during the cut never arrives.
- :meth:`Proxy.close`: stops for good. The proxy is a context manager.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

Target = tuple[str, int] | str | Path
"""(host, port) for TCP, or the path of a unix socket."""


class State(enum.Enum):
    OPEN = "open"
    CUT = "cut"
    RESET = "reset"


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Proxy:
    """``Proxy(target)``; ``url`` / ``port`` tell where clients connect. See the module docstring."""

    def __init__(self, target: Target, port: int = 0) -> None:
        self.target = target
        self.port = port
        self.state = State.OPEN
        self.accepted = 0
        """Connections accepted so far (a client that reconnects shows here)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Condition | None = None
        self._replies_only = False
        self._started = False

    # --------------------------------------------------------------------------------------------- controls
    def start(self) -> Proxy:
        self._thread.start()
        self._started = True
        self._call(self._start())
        return self

    def url(self, scheme: str = "redis") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def cut(self, replies_only: bool = False) -> None:
        """A silent network: nothing goes through (``replies_only``: requests do, replies not), nothing is refused."""
        self._call(self._set(State.CUT, replies_only))

    def reset(self) -> None:
        """Every connection closed (RST) and new ones refused."""
        self._call(self._set(State.RESET))

    def restore(self) -> None:
        """Forward again, for new connections: those held through a cut are closed (RST)."""
        self._call(self._set(State.OPEN))

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --------------------------------------------------------------------------------------------- the loop
    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            # reuse_address (asyncio's default on POSIX): the same port again after a reset.
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self._set(State.RESET)
        if self._serving:  # every connection's task ends once its sockets are closed
            await asyncio.wait(list(self._serving), timeout=5)

    async def _set(self, state: State, replies_only: bool = False) -> None:
        assert self._changed is not None
        if state is State.RESET:
            if self._server is not None:  # stop listening first, so that no connection slips in meanwhile
                self._server.close()
                self._server = None
        else:
            await self._listen()
        if state is State.RESET or (state is State.OPEN and self.state is State.CUT):
            for conn in list(self._connections):
                self._drop(conn, rst=True)
        async with self._changed:
            self.state, self._replies_only = state, replies_only
            self._changed.notify_all()

    async def _forwarding(self, conn: _Connection, request: bool) -> bool:
        """Wait out a cut of this direction; False when the connection is to be dropped instead."""
        assert self._changed is not None

        def passes() -> bool:
            return self.state is not State.CUT or (request and self._replies_only)

        async with self._changed:
            await self._changed.wait_for(lambda: passes() or conn.closed)
        return self.state is not State.RESET and not conn.closed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            if self.state is State.RESET:  # accepted just before the listener closed
                return
            self._connections.add(conn)
            if not await self._forwarding(conn, request=True):  # accepted during a cut: connected once it is over
                return
            try:
                if isinstance(self.target, tuple):
                    up_reader, conn.upstream = await asyncio.open_connection(*self.target)
                else:
                    up_reader, conn.upstream = await asyncio.open_unix_connection(str(self.target))
            except OSError:
                return  # the target is down: the client sees its connection reset
            conn.tasks = [
                asyncio.create_task(self._pump(reader, conn.upstream, conn, request=True)),
                asyncio.create_task(self._pump(up_reader, writer, conn, request=False)),
            ]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
            self._drop(conn, rst=False)  # one side closed: close the other, after what is still to send
        finally:
            self._drop(conn, rst=True)  # no-op when closed already
            self._serving.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection, request: bool
    ) -> None:
        """Copy one direction until either side closes; during a cut what was read waits here (and is dropped with
        its connection at the restore)."""
        try:
            while True:
                data = await reader.read(65536)
                if not await self._forwarding(conn, request) or not data:
                    return
                writer.write(data)
                await writer.drain()
        except OSError:  # reset by a peer
            return

    def _drop(self, conn: _Connection, rst: bool) -> None:
        """Close both sides: with a TCP RST (``rst``), else gracefully after what is buffered."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        for task in conn.tasks:
            task.cancel()
        for writer in (conn.client, conn.upstream):
            if writer is None:
                continue
            if not rst:
                writer.close()
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            writer.transport.abort()
