"""Non-blocking GroupReader logic on fakeredis (blocking, timing and restarts are in tests/contract)."""

from __future__ import annotations

import fakeredis
import pytest

from common.keys import Keys
from common.redis_io import GroupReader, stream_keys


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def reader(fake: fakeredis.FakeRedis, names: list[str]) -> GroupReader:
    keys = Keys("f")
    return GroupReader(
        fake,
        group="g",
        consumer="c",
        dead_key=keys.dead_letters(),
        block_ms=1,
        rescan_s=60,
        discover=lambda: stream_keys(fake, keys.frames_pattern(), keys.frames(""), names),
    )


def test_literal_stream_names_get_their_group_before_any_frame_arrives(fake: fakeredis.FakeRedis) -> None:
    r = reader(fake, ["door"])
    assert r.read(block_ms=0) == []
    assert [g["name"] for g in fake.xinfo_groups("f:frames:door")] == [b"g"]
    fake.xadd("f:frames:door", {"msg": b"early"})
    got = [e.payload for _ in range(3) for e in r.read(block_ms=0)]
    assert got == [b"early"]


def test_only_streams_matching_the_patterns_are_read(fake: fakeredis.FakeRedis) -> None:
    fake.xadd("f:frames:cam1", {"msg": b"1"})
    fake.xadd("f:frames:yard", {"msg": b"2"})
    fake.xadd("other:frames:cam2", {"msg": b"3"})
    r = reader(fake, ["cam*"])
    got = [(e.key, e.payload) for _ in range(3) for e in r.read(block_ms=0)]
    assert got == [("f:frames:cam1", b"1")]


def test_an_entry_without_the_message_field_is_handed_on_to_be_dead_lettered(fake: fakeredis.FakeRedis) -> None:
    fake.xadd("f:frames:a", {"other": b"x"})
    r = reader(fake, ["a"])
    (entry,) = [e for _ in range(3) for e in r.read(block_ms=0)]
    assert entry.payload is None and not entry.trimmed
    assert r.stats.trimmed == 0
