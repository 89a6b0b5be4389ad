"""The wire format as an outside reader sees it: decoded by a second msgpack implementation, and as documented.

umsgpack (u-msgpack-python) shares no code with the msgpack package the project encodes with, so what it reads is
what any other language's decoder reads. docs/result-schema.md is parsed so that the doc cannot drift from the
models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_origin

import pytest
import umsgpack  # type: ignore[import-untyped]
from pydantic import BaseModel

from common.keys import Keys
from common.wire import (
    VERSION,
    Alert,
    BestShot,
    Detection,
    Event,
    Frame,
    Result,
    Timings,
    TrackedObject,
    Tracks,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "result-schema.md"

# Values float32 cannot hold: a float32 on the wire would not compare equal.
DETECTIONS = [
    Detection(label="person", class_id=0, score=0.912345678901, box=(10.125, 20.5, 300.0009765625, 400.25)),
    Detection(label="car", class_id=2, score=0.5, box=(0.0, 0.0, 1919.999, 1079.5)),
]


def result() -> Result:
    return Result(
        frame_id="1700000000500-3",
        stream="cam-1.north",
        seq=123456789012,
        capture_ts=1_700_000_000.123456,
        width=1920,
        height=1080,
        pool="main",
        replica="gpu0-a",
        engine="torch",
        device="cuda:0",
        batch_size=16,
        published_ts=1_700_000_000.234567,
        timings=Timings(queue_ms=3.25, decode_ms=1.5, inference_ms=40.125, postprocess_ms=0.75, end_to_end_ms=51.3),
        detections=DETECTIONS,
        file="/videos/gate.mp4",
        frame_index=17,
    )


def alert() -> Alert:
    return Alert(
        sink="alerts",
        rule="person-at-door",
        stream="cam-1.north",
        label="person",
        state="on",
        frame_id="1700000000500-3",
        seq=42,
        capture_ts=1_700_000_000.123456,
        raised_ts=1_700_000_000.5,
        width=1920,
        height=1080,
        detections=DETECTIONS[:1],
        actions=["webhook", "log"],
    )


def frame() -> Frame:
    return Frame(
        stream="cam-1.north",
        seq=7,
        capture_ts=1_700_000_000.123456,
        width=1920,
        height=1080,
        encoding="jpeg",
        image_width=640,
        image_height=360,
        data=b"\xff\xd8\x00\x01jpeg",
    )


def tracks() -> Tracks:
    obj = TrackedObject(track_id=7, label="person", class_id=0, score=0.75, box=(1.5, 2.0, 30.25, 40.0))
    return Tracks(
        tracker="objects", frame_id="1700000000500-3", stream="cam-1.north", seq=42, capture_ts=1_700_000_000.5,
        width=1920, height=1080, objects=[obj], untracked=2, skipped=1,
    )  # fmt: skip


def event() -> Event:
    best = BestShot(frame_id="1700000000400-0", seq=40, capture_ts=1_700_000_000.25, score=0.9, box=(1.0, 2, 3, 4))
    return Event(
        event_id="objects:cam-1.north:7:2", tracker="objects", stream="cam-1.north", event="update",
        change="line_cross", zone=None, line="gate", direction="in", track_id=7, label="person", class_id=0,
        frame_id="1700000000500-3", seq=42, capture_ts=1_700_000_000.5, score=0.75, box=(1.5, 2.0, 30.25, 40.0),
        first_seen_ts=1_700_000_000.0, last_seen_ts=1_700_000_000.5, duration_s=0.5, zones=["door"], best=best,
        width=1920, height=1080,
    )  # fmt: skip


def test_tracks_and_events_decode_field_for_field_with_an_independent_msgpack() -> None:
    body = umsgpack.unpackb(encode(tracks()))
    assert set(body) == {"v", "type", *Tracks.model_fields} and body["type"] == "tracks"
    assert body["objects"] == [{"track_id": 7, "label": "person", "class_id": 0, "score": 0.75,
                                "box": [1.5, 2.0, 30.25, 40.0]}]  # fmt: skip
    check_types(body, Tracks)
    check_types(body["objects"][0], TrackedObject)
    body = umsgpack.unpackb(encode(event()))
    assert set(body) == {"v", "type", *Event.model_fields}
    assert (body["type"], body["event"], body["change"], body["zone"]) == ("event", "update", "line_cross", None)
    assert body["best"] == {"frame_id": "1700000000400-0", "seq": 40, "capture_ts": 1_700_000_000.25, "score": 0.9,
                            "box": [1.0, 2.0, 3.0, 4.0]}  # fmt: skip
    check_types(body, Event)
    check_types(body["best"], BestShot)


def expected_detection(d: Detection) -> dict[str, Any]:
    return {"label": d.label, "class_id": d.class_id, "score": d.score, "box": list(d.box)}


SCALARS: dict[Any, type] = {str: str, int: int, float: float}


def check_types(value: Any, model: type[BaseModel]) -> None:
    """Strings arrive as str (msgpack str, not bin), integers as int, floats as float: what the doc promises."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        want = str if get_origin(annotation) is Literal else SCALARS.get(annotation)
        if want is not None:
            assert type(value[name]) is want, f"{model.__name__}.{name} decoded as {type(value[name]).__name__}"


def test_a_result_decodes_field_for_field_with_an_independent_msgpack() -> None:
    r = result()
    body = umsgpack.unpackb(encode(r))
    assert isinstance(body, dict)
    assert set(body) == {"v", "type", *Result.model_fields}
    assert body["v"] == VERSION == 1
    assert body["type"] == "result"
    assert body["frame_id"] == "1700000000500-3"
    assert body["stream"] == "cam-1.north"
    assert body["seq"] == 123456789012
    assert body["capture_ts"] == 1_700_000_000.123456
    assert (body["width"], body["height"]) == (1920, 1080)
    assert (body["pool"], body["replica"], body["engine"], body["device"]) == ("main", "gpu0-a", "torch", "cuda:0")
    assert body["batch_size"] == 16
    assert body["published_ts"] == 1_700_000_000.234567
    assert body["timings"] == {
        "queue_ms": 3.25,
        "decode_ms": 1.5,
        "inference_ms": 40.125,
        "postprocess_ms": 0.75,
        "end_to_end_ms": 51.3,
    }
    assert body["detections"] == [expected_detection(d) for d in DETECTIONS]
    assert (body["file"], body["frame_index"]) == ("/videos/gate.mp4", 17)
    check_types(body, Result)
    check_types(body["timings"], Timings)
    for d in body["detections"]:
        check_types(d, Detection)
        assert [type(v) for v in d["box"]] == [float] * 4


def test_an_alert_decodes_field_for_field_with_an_independent_msgpack() -> None:
    body = umsgpack.unpackb(encode(alert()))
    assert set(body) == {"v", "type", *Alert.model_fields}
    assert body == {
        "v": 1,
        "type": "alert",
        "sink": "alerts",
        "rule": "person-at-door",
        "stream": "cam-1.north",
        "label": "person",
        "state": "on",
        "frame_id": "1700000000500-3",
        "seq": 42,
        "capture_ts": 1_700_000_000.123456,
        "raised_ts": 1_700_000_000.5,
        "width": 1920,
        "height": 1080,
        "detections": [expected_detection(DETECTIONS[0])],
        "actions": ["webhook", "log"],
        "event_id": None,
    }
    check_types(body, Alert)


def test_a_frame_carries_its_image_as_msgpack_bin() -> None:
    body = umsgpack.unpackb(encode(frame()))
    assert body["type"] == "frame"
    assert type(body["data"]) is bytes  # umsgpack gives bytes for bin only, str for str
    assert body["data"] == b"\xff\xd8\x00\x01jpeg"
    check_types(body, Frame)


# ---------------------------------------------------------------------------------------------------- the doc
def doc_tables() -> dict[str, list[list[str]]]:
    """Heading -> rows (cells, backticks removed) of the first table under each '## ' heading."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif heading is not None and line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            rows = tables.setdefault(heading, [])
            if not re.fullmatch(r"[-: |]+", line):
                rows.append(cells)
        elif heading in tables:
            heading = None  # the table ended: later tables under the same heading are not field lists
    return {h: rows[1:] for h, rows in tables.items()}  # without the header row


MODELS: dict[str, type[BaseModel]] = {
    "Result": Result,
    "Detection": Detection,
    "Timings": Timings,
    "Alert": Alert,
    "Frame": Frame,
    "Tracks": Tracks,
    "TrackedObject": TrackedObject,
    "Event": Event,
    "BestShot": BestShot,
}

# What each documented msgpack type decodes to.
DECODED = {
    "str": str, "int": int, "float64": float, "bin": bytes, "bool": bool, "array": list, "map": dict, "nil": type(None)
}  # fmt: skip


def decoded_types(documented: str) -> tuple[type, ...]:
    """A documented msgpack type (``str``; ``str or nil``: optional) as the Python types it decodes to."""
    return tuple(DECODED[t] for t in documented.split(" or "))


@pytest.mark.parametrize("name", MODELS)
def test_the_doc_lists_exactly_the_fields_of_each_message(name: str) -> None:
    rows = doc_tables().get(name)
    assert rows, f"{DOC} has no field table under '## {name}'"
    documented = [r[0] for r in rows]
    assert len(documented) == len(set(documented)), f"{name}: a field is documented twice"
    assert set(documented) == set(MODELS[name].model_fields), f"{name}: doc and model disagree"
    known = all(t in DECODED for r in rows for t in r[1].split(" or "))
    assert known and all(r[2] for r in rows), f"{name}: every row needs a known msgpack type and a meaning"


def test_the_doc_states_each_fields_msgpack_type_as_decoded() -> None:
    samples: dict[str, dict[str, Any]] = {
        "Result": umsgpack.unpackb(encode(result())),
        "Alert": umsgpack.unpackb(encode(alert())),
        "Frame": umsgpack.unpackb(encode(frame())),
        "Tracks": umsgpack.unpackb(encode(tracks())),
        "Event": umsgpack.unpackb(encode(event())),
    }
    samples["TrackedObject"] = samples["Tracks"]["objects"][0]
    samples["BestShot"] = samples["Event"]["best"]
    samples["Timings"] = samples["Result"]["timings"]
    samples["Detection"] = samples["Result"]["detections"][0]
    tables = doc_tables()
    for name, sample in samples.items():
        for field, msgpack_type, _ in tables[name]:
            assert type(sample[field]) in decoded_types(msgpack_type), f"{name}.{field} is documented as {msgpack_type}"


def test_the_doc_states_the_envelope_and_the_key_names() -> None:
    tables = doc_tables()
    envelope = {r[0]: r[1] for r in tables["Entries and the envelope"]}
    assert envelope == {"v": "int", "type": "str"}
    keys = Keys("{prefix}")
    documented = {r[0] for r in tables["Keys"]}
    assert documented == {
        keys.results("{stream}"), keys.frames("{stream}"), keys.alerts("{sink}"), keys.dead_letters(),
        keys.tracks("{tracker}", "{stream}"), keys.events("{tracker}", "{stream}"),
        keys.counts("{tracker}", "{stream}"),
    }  # fmt: skip
