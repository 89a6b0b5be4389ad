"""The door to Redis translates redis-py's errors into its own family, and nothing else imports redis-py."""

from __future__ import annotations

import ast
from typing import Any

import fakeredis
import pytest
import redis

from common.keys import Keys
from common.redis_io import (
    Denied,
    Entry,
    Full,
    GroupReader,
    RedisIOError,
    Refused,
    Unavailable,
    add_entries,
    backlog,
    fields,
    ping,
    stream_keys,
)
from tests.conftest import ROOT


class Failing:
    """fakeredis, except that every command (and every pipeline's execute) raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.fake = fakeredis.FakeRedis()
        self.error = error

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.fake, name)
        if not callable(attribute) or name == "pipeline":
            return attribute

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.fake.pipeline(transaction=transaction)

        def fail(raise_on_error: bool = True) -> list[Any]:
            raise self.error

        pipe.execute = fail  # type: ignore[method-assign]
        return pipe


CASES = [
    (redis.ConnectionError("Error 111 connecting to localhost:6379. Connection refused."), Unavailable),
    (redis.TimeoutError("Timeout reading from socket"), Unavailable),
    (redis.BusyLoadingError("Redis is loading the dataset in memory"), Unavailable),
    (ConnectionResetError(104, "Connection reset by peer"), Unavailable),
    (redis.AuthenticationError("invalid username-password pair or user is disabled."), Denied),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'xinfo|groups' command"), Denied),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), Full),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), Refused),
    (redis.DataError("Invalid input of type: 'NoneType'"), RedisIOError),
]


@pytest.mark.parametrize(("error", "family"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_a_redis_py_error_leaves_the_door_as_the_familys_with_its_message(
    error: Exception, family: type[RedisIOError]
) -> None:
    client: Any = Failing(error)
    for call in (lambda: ping(client), lambda: fields(client, "h"), lambda: backlog(client, "s", 10),
                 lambda: stream_keys(client, Keys("f").stage("frames"), ["*"])):  # fmt: skip
        with pytest.raises(RedisIOError) as caught:
            call()
        assert type(caught.value) is family
        assert str(caught.value) == str(error)  # the server's words, for the log
        assert caught.value.__cause__ is error  # and redis-py's exception, for a traceback


def test_the_family_is_ordered_by_what_a_caller_does() -> None:
    # Denied and Full are answers (Refused), not outages, though redis-py files AuthenticationError under
    # ConnectionError: a wrong password must not be retried as if the server were down.
    assert issubclass(Denied, Refused) and issubclass(Full, Refused)
    assert not issubclass(Denied, Unavailable)
    assert all(issubclass(c, RedisIOError) for c in (Unavailable, Refused, Denied, Full))


def test_a_write_refused_by_a_full_server_is_reported_per_entry_as_full() -> None:
    class FullServer(Failing):
        def pipeline(self, transaction: bool = True) -> Any:
            pipe = self.fake.pipeline(transaction=transaction)
            pipe.execute = lambda raise_on_error=True: [self.error, b"1-1"]  # type: ignore[method-assign]
            return pipe

    oom = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    first, second = add_entries(FullServer(oom), [("f:frames:a", b"x", 10), ("f:frames:a", b"y", 10)])  # type: ignore[arg-type]
    assert isinstance(first, Full) and str(first) == str(oom)
    assert second == "1-1"


def test_a_group_reader_retries_outages_but_hands_a_refusal_on_as_the_familys() -> None:
    keys = Keys("f")
    down: Any = Failing(redis.ConnectionError("Connection refused"))
    reader = GroupReader(down, group="g", consumer="c", dead_letters=keys.dead_letters, discover=lambda: ["f:frames:a"])
    assert reader.read(block_ms=0) == []  # an outage: logged, backed off, nothing read
    assert reader.stats.redis_errors == 1
    denied: Any = Failing(redis.exceptions.NoPermissionError("no permissions to run the 'xack' command"))
    reader = GroupReader(denied, group="g", consumer="c", dead_letters=keys.dead_letters, discover=lambda: [])
    with pytest.raises(Denied, match="xack"):
        reader.ack([Entry("f:frames:a", "1-0", b"x")])


def test_only_the_door_imports_redis_py() -> None:
    offenders = []
    for package in ("common", "ingest", "detector", "sink", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "common" / "redis_io"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if any(n == "redis" or n.startswith("redis.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "import redis-py through common.redis_io only"
