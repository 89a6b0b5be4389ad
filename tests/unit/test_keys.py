from __future__ import annotations

import pytest

from common.keys import Keys, matches, valid_stream_name


def test_key_names_live_under_the_prefix() -> None:
    k = Keys("lab")
    assert k.frames("cam-1") == "lab:frames:cam-1"
    assert k.results("cam-1") == "lab:results:cam-1"
    assert k.dead_letters() == "lab:dead"
    assert k.stream_of("lab:results:cam.2") == "cam.2"
    assert k.detector_group("main") == "detector:main"
    assert k.sink_group("db") == "sink:db"


def test_scan_patterns_escape_glob_characters_of_the_prefix() -> None:
    assert Keys("a*b").frames_pattern() == "a\\*b:frames:*"
    assert Keys("{tag}").results_pattern() == "{tag}:results:*"


def test_a_trackers_streams_name_the_tracker_and_the_camera() -> None:
    k = Keys("lab")
    assert k.tracks("objects", "cam.2") == "lab:tracks:objects:cam.2"
    assert k.events("objects", "cam.2") == "lab:events:objects:cam.2"
    assert k.stream_of("lab:events:objects:cam.2") == k.stream_of("lab:tracks:objects:cam.2") == "cam.2"
    assert k.stage("events", "objects") == ("lab:events:objects:*", "lab:events:objects:")
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
