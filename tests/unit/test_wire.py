from __future__ import annotations

import pickle
from typing import Any

import msgpack
import pytest

from common.wire import VERSION, Detection, Frame, Result, Timings, WireError, decode, encode


def frame(**over: Any) -> Frame:
    fields: dict[str, Any] = dict(
        stream="cam1",
        seq=7,
        capture_ts=1_700_000_000.5,
        width=1920,
        height=1080,
        encoding="jpeg",
        image_width=640,
        image_height=360,
        data=b"\xff\xd8jpeg-bytes",
    )
    return Frame(**(fields | over))


def result() -> Result:
    return Result(
        frame_id="1700000000500-0",
        stream="cam1",
        seq=7,
        capture_ts=1_700_000_000.5,
        width=1920,
        height=1080,
        pool="main",
        replica="gpu0-a",
        engine="tensorflow",
        device="cpu",
        batch_size=4,
        published_ts=1_700_000_000.6,
        timings=Timings(queue_ms=3, decode_ms=1.5, inference_ms=40, postprocess_ms=0.5, end_to_end_ms=50),
        detections=[Detection(label="person", class_id=0, score=0.91, box=(10.0, 20.5, 300.0, 400.25))],
    )


def test_frames_and_results_round_trip() -> None:
    assert decode(encode(frame()), Frame) == frame()
    assert decode(encode(result()), Result) == result()


def test_a_frame_without_the_live_flag_is_live() -> None:
    body = msgpack.unpackb(encode(frame(live=False)), raw=False)
    assert body["live"] is False and decode(encode(frame(live=False)), Frame).live is False
    del body["live"]  # a frame from an ingest older than the flag
    assert decode(msgpack.packb(body, use_bin_type=True), Frame).live is True


def test_messages_are_plain_versioned_msgpack_maps_readable_from_any_language() -> None:
    body = msgpack.unpackb(encode(result()), raw=False)
    assert body["v"] == VERSION and body["type"] == "result"
    assert body["detections"][0] == {
        "label": "person",
        "class_id": 0,
        "score": 0.91,
        "box": [10.0, 20.5, 300.0, 400.25],
    }
    assert isinstance(msgpack.unpackb(encode(frame()), raw=False)["data"], bytes)


def pack(body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "entry has no 'msg' field"),
        (b"\xc1\x00garbage", "not a msgpack message"),
        (pickle.dumps({"v": 1}), "not a msgpack message"),
        (pack([1, 2, 3]), "message is a list, expected a map"),
        (pack({"v": 99, "type": "frame"}), "unknown message version 99"),
        (pack({"type": "frame"}), "unknown message version None"),
        (pack({"v": VERSION, "type": "result"}), "message type is 'result', expected 'frame'"),
        (pack({"v": VERSION, "type": "frame", "stream": "c"}), "bad frame: seq: Field required"),
        (
            pack({**msgpack.unpackb(encode(frame()), raw=False), "seq": -1}),
            "bad frame: seq: Input should be greater",
        ),
        (pack({**msgpack.unpackb(encode(frame()), raw=False), "x": 1}), "bad frame: x: Extra inputs"),
        (pack({**msgpack.unpackb(encode(frame()), raw=False), "encoding": "webp"}), "bad frame: encoding"),
    ],
)
def test_every_malformed_message_is_one_clear_wire_error(raw: bytes | None, message: str) -> None:
    with pytest.raises(WireError) as info:
        decode(raw, Frame)
    assert message in str(info.value)


def test_frame_fields_are_bounded() -> None:
    with pytest.raises(ValueError, match="width"):
        frame(width=0)
    with pytest.raises(ValueError, match="data"):
        frame(data=b"")
