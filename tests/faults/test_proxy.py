"""The fault tests' proxy on its own, against a real echo server over TCP and over a unix socket."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.proxy import Proxy, Target

pytestmark = pytest.mark.faults

WAIT_S = 0.3
"""How long a read waits before it counts as answered by nothing."""


class Echo(socketserver.BaseRequestHandler):
    """Sends back what it reads, and keeps it in ``received``."""

    received: list[bytes]

    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.received.append(data)
            self.request.sendall(data)


class TcpEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class UnixEcho(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


@pytest.fixture(params=["tcp", "unix"])
def echo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, list[bytes]]]:
    """A running echo server: where it listens, and what it received."""
    received: list[bytes] = []
    handler = type("Handler", (Echo,), {"received": received})
    server: socketserver.BaseServer
    if request.param == "tcp":
        server = TcpEcho(("127.0.0.1", 0), handler)
        target: Target = ("127.0.0.1", server.server_address[1])
    else:
        server = UnixEcho(str(tmp_path / "echo.sock"), handler)
        target = tmp_path / "echo.sock"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield target, received
    server.shutdown()
    server.server_close()


def dial(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT_S)
    return sock


def answered(sock: socket.socket, data: bytes) -> bool:
    """The data comes back (an echo); False when nothing answers within WAIT_S."""
    sock.sendall(data)
    try:
        return sock.recv(4096) == data
    except TimeoutError:
        return False


def test_it_forwards_both_ways(echo: tuple[Target, list[bytes]]) -> None:
    target, _ = echo
    with Proxy(target) as proxy:
        for _ in range(2):
            with dial(proxy) as sock:
                assert answered(sock, b"ping")
        assert proxy.accepted == 2


def test_a_cut_answers_nothing_and_the_restore_resets_what_it_held(echo: tuple[Target, list[bytes]]) -> None:
    target, received = echo
    with Proxy(target) as proxy, dial(proxy) as held:
        assert answered(held, b"before")
        proxy.cut()
        assert not answered(held, b"during")
        with dial(proxy) as new:  # accepted, and silent
            assert not answered(new, b"new")
            proxy.restore()
            with pytest.raises(ConnectionResetError):
                new.recv(10)
        with pytest.raises(ConnectionResetError):
            held.recv(10)
        assert received == [b"before"]  # what was sent into the cut never arrived
        with dial(proxy) as sock:
            assert answered(sock, b"after")


def test_a_one_way_cut_delivers_requests_but_no_reply(echo: tuple[Target, list[bytes]]) -> None:
    target, received = echo
    with Proxy(target) as proxy, dial(proxy) as sock:
        proxy.cut(replies_only=True)
        assert not answered(sock, b"lost reply")
        assert received == [b"lost reply"]


def test_a_reset_refuses_connections_until_restored(echo: tuple[Target, list[bytes]]) -> None:
    target, _ = echo
    with Proxy(target) as proxy:
        with dial(proxy) as sock:
            assert answered(sock, b"before")
            proxy.reset()
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        with pytest.raises(ConnectionRefusedError):
            dial(proxy)
        proxy.restore()
        with dial(proxy) as sock:  # on the same port
            assert answered(sock, b"after")
    with pytest.raises(ConnectionRefusedError):
        dial(proxy)  # closed for good
