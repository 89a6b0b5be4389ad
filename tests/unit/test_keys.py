from __future__ import annotations

import binascii
from collections import Counter

import pytest

from common.keys import SLOTS, Keys, key_slot, matches, shard_tags, valid_stream_name


def test_key_names_live_under_the_prefix() -> None:
    k = Keys("lab")
    assert k.frames("cam-1") == "lab:frames:cam-1"
    assert k.results("cam-1") == "lab:results:cam-1"
    assert k.dead_letters() == "lab:dead"
    assert k.stream_of("lab:results:cam.2") == "cam.2"
    assert k.detector_group("main") == "detector:main"
    assert k.sink_group("db") == "sink:db"


def test_scan_patterns_escape_glob_characters_of_the_prefix() -> None:
    assert Keys("a*b").stage("frames").pattern == "a\\*b:frames:*"
    assert Keys("{tag}").stage("results").pattern == "{tag}:results:*"


def test_a_trackers_streams_name_the_tracker_and_the_camera() -> None:
    k = Keys("lab")
    assert k.tracks("objects", "cam.2") == "lab:tracks:objects:cam.2"
    assert k.events("objects", "cam.2") == "lab:events:objects:cam.2"
    assert k.stream_of("lab:events:objects:cam.2") == k.stream_of("lab:tracks:objects:cam.2") == "cam.2"
    events = k.stage("events", "objects")
    assert (events.pattern, events.key("cam.2")) == ("lab:events:objects:*", "lab:events:objects:cam.2")
    assert events.name("lab:events:objects:cam.2") == "cam.2" and events.name("lab:tracks:objects:cam.2") is None
    with pytest.raises(ValueError, match="name the tracker sink"):
        k.stage("tracks")
    with pytest.raises(ValueError, match="not a frames, results, tracks or events key"):
        k.stream_of("lab:tracks:objects")  # no camera


def test_stream_of_refuses_foreign_keys() -> None:
    with pytest.raises(ValueError, match="not a frames, results, tracks or events key"):
        Keys("lab").stream_of("other:frames:x")


def test_stream_patterns_and_names() -> None:
    assert matches("cam7", ["door", "cam*"])
    assert not matches("yard", ["door", "cam?"])
    assert valid_stream_name("front_door.2-a")
    assert not valid_stream_name("a:b")
    assert not valid_stream_name("x*")
    assert not valid_stream_name("")


# ---------------------------------------------------------------------------------------------------- cluster layout
def test_on_a_cluster_a_cameras_keys_share_its_shards_hash_tag() -> None:
    k = Keys("lab", shards=12)
    tag = k.shard("cam-1")
    assert tag is not None and tag in shard_tags(12)
    one_slot = {k.frames("cam-1"), k.results("cam-1"), k.tracks("t", "cam-1"), k.events("t", "cam-1"),
                k.lease("t", "cam-1"), k.track_state("t", "cam-1"), k.counts("t", "cam-1"),
                k.stale("detector:main", "cam-1"), k.shed("detector:main", "cam-1"),
                k.dead_letters(k.frames("cam-1"))}  # fmt: skip
    assert len({key_slot(key) for key in one_slot}) == 1
    assert k.frames("cam-1") == f"lab:{{{tag}}}:frames:cam-1"
    assert k.stream_of(k.frames("cam-1")) == k.stream_of(k.events("t", "cam-1")) == "cam-1"
    assert k.stage("frames").name(k.frames("cam-1")) == "cam-1" and k.stage("results").name(k.frames("x")) is None
    # An alert sink's own keys share a slot of theirs (its alerts, its marks, their dead letters).
    assert len({key_slot(k.alerts("s")), key_slot(k.alerted("s")), key_slot(k.dead_letters(k.alerts("s")))}) == 1
    assert len(k.tallies("stale", "detector:main")) == 12 and k.stale("detector:main", "cam-1") in k.tallies(
        "stale", "detector:main"
    )


def test_the_shards_spread_evenly_over_the_slots() -> None:
    for shards in (1, 3, 12, 64, 256):
        slots = [key_slot(f"{{{t}}}") for t in shard_tags(shards)]
        assert [s * shards // SLOTS for s in slots] == list(range(shards))  # shard i in the i-th part
    cameras = Counter(key_slot(Keys("p", 12).frames(f"cam{i}")) * 3 // SLOTS for i in range(3000))
    assert min(cameras.values()) > 900  # three primaries splitting the slots evenly get a third each


def test_key_slot_is_the_clusters() -> None:
    # Values from Redis's CLUSTER KEYSLOT (and its hash tag rules: the first non-empty {...}).
    assert key_slot("foo") == 12182 and key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == binascii.crc_hqx(b"foo{}{bar}", 0) % SLOTS  # an empty tag: the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")  # the tag ends at the first '}'


def test_a_cluster_prefix_holds_no_braces_and_the_shards_are_bounded() -> None:
    with pytest.raises(ValueError, match="no braces"):
        Keys("{lab}", shards=4)
    with pytest.raises(ValueError, match="shards must be 1 to 256"):
        Keys("lab", shards=0)
    assert Keys("lab").shard("cam") is None and Keys("lab").tallies("shed", "g") == ["lab:shed:g"]
