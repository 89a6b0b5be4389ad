"""A transaction that publishes and acks whose reply is lost after the server ran it: the door asks the server whether
it ran instead of sending it again (redis-py's own retry would publish every result twice). On one server and on a
real Valkey cluster, where redis-py's cluster pipeline retries transactions by itself too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from common.keys import Keys
from common.redis_io import Client, GroupReader, add_entries, connect, ensure_group
from tests.servers.valkey_cluster import ValkeyCluster, door_client, spread_cameras

pytestmark = [pytest.mark.contract, pytest.mark.timeout(90)]

GROUP = "detector:p"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path_factory.mktemp("lost-reply"), replicas=0) as running:
        yield running


@pytest.fixture(params=["one server", "cluster"])
def door(request: pytest.FixtureRequest, server_url: str, prefix: str) -> Iterator[tuple[Client, Keys]]:
    if request.param == "cluster":
        c = door_client(request.getfixturevalue("cluster"))
        keys = Keys(prefix, shards=12)
    else:
        c, keys = connect(server_url), Keys(prefix)
    yield c, keys
    c.close()


@pytest.fixture
def lose_next_exec_reply(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], bool]], list[int]]:
    """Arm: the next reply to a request holding EXEC is lost on its connection, once ``ran()`` says the server ran
    it (a connection error where the reply should be: a reset, a timeout). Returns the count of replies lost."""
    lost: list[int] = []
    send: Any = redis.connection.AbstractConnection.send_packed_command
    read: Any = redis.connection.AbstractConnection.read_response

    def arm(ran: Callable[[], bool]) -> list[int]:
        def sending(conn: Any, command: Any, *args: Any, **kwargs: Any) -> None:
            parts = [command] if isinstance(command, bytes | str) else command
            sent = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts)
            if not lost and b"EXEC" in sent:
                conn._lose_reply = True
            send(conn, command, *args, **kwargs)

        def reading(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(conn, "_lose_reply", False):
                conn._lose_reply = False
                deadline = time.monotonic() + 5
                while not ran() and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert ran(), "the transaction did not run within 5 s"
                lost.append(1)
                raise redis.exceptions.ConnectionError("the reply was lost (test)")
            return read(conn, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", sending)
        monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", reading)
        return lost

    return arm


def test_a_transaction_whose_reply_was_lost_is_not_sent_again(
    door: tuple[Client, Keys], lose_next_exec_reply: Callable[[Callable[[], bool]], list[int]]
) -> None:
    client, keys = door
    names = spread_cameras(keys, 3) if keys.shards else ["cam0"]
    name = names[0]
    ensure_group(client, keys.frames(name), GROUP)
    add_entries(client, [(keys.frames(name), f"f{i}".encode(), 100) for i in range(4)])
    reader = GroupReader(
        client, group=GROUP, consumer="c1", discover=lambda: [keys.frames(name)], dead_letters=keys.dead_letters,
        block_ms=100, count=10,
    )  # fmt: skip
    try:
        entries = reader.read(block_ms=0)
        assert len(entries) == 4

        def ran() -> bool:  # asked on a connection of its own: the armed one is about to fail
            return bool(client.xlen(keys.results(name)) == 4)

        lost = lose_next_exec_reply(ran)
        reader.publish_and_ack([(keys.results(name), e.payload or b"", 100) for e in entries], entries)
        assert lost == [1], "the test lost no reply: it proves nothing"
        assert client.xlen(keys.results(name)) == 4, "a transaction whose reply was lost was sent again"
        assert not client.xpending_range(keys.frames(name), GROUP, "-", "+", 10)
        assert reader.stats.redis_errors == 1
    finally:
        reader.close()
