"""Clips against a real server: frames sampled at uneven rates written to a frames stream, a clip made of a span
of them, opened again with PyAV: H.264 in MP4 (moov first), every frame of the span and none outside it, each at
its capture time, the duration the span's; and a clear error when the frames are gone."""

from __future__ import annotations

import io
import time

import av
import cv2
import numpy as np
import pytest

from common.keys import Keys
from common.redis_io import Client
from common.wire import FIELD, Frame, encode
from sink.clips import ClipError, make_clip

pytestmark = [pytest.mark.contract, pytest.mark.timeout(120)]

T = 1_700_000_000.0
OFFSETS = [0.0, 0.1, 0.35, 0.4, 0.9, 1.0, 1.7, 2.0, 2.05, 3.0]
"""Capture times (s after T) of the frames written: sampled unevenly, as a camera that stalls and catches up."""


def frame(stream: str, seq: int, ts: float, size: tuple[int, int] = (320, 240)) -> Frame:
    """A grey frame with a white square that moves with the frame's number, as JPEG."""
    width, height = size
    image = np.full((height, width, 3), 60, np.uint8)
    cv2.rectangle(image, (10 + 20 * seq, 60), (50 + 20 * seq, 100), (255, 255, 255), cv2.FILLED)
    return Frame(
        stream=stream, seq=seq, capture_ts=ts, width=width, height=height, encoding="jpeg", image_width=width,
        image_height=height, data=cv2.imencode(".jpg", image)[1].tobytes(),
    )  # fmt: skip


def write(client: Client, keys: Keys, stream: str, offsets: list[float], lag_ms: int = 40, **kw: object) -> None:
    """Each frame added ``lag_ms`` after its capture, with the id Redis would have given it then."""
    for seq, offset in enumerate(offsets):
        ts = T + offset
        client.xadd(keys.frames(stream), {FIELD: encode(frame(stream, seq, ts))}, id=f"{round(ts * 1000) + lag_ms}-0",
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def opened(data: bytes) -> tuple[str, str, list[float], float]:
    """(codec, pixel format, each frame's time in s, duration in s) of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        codec, pix_fmt = video.codec_context.name, video.codec_context.pix_fmt or ""
        times = [float(f.pts * f.time_base) for f in container.decode(video=0) if f.pts is not None]
        duration = (container.duration or 0) / av.time_base
    return codec, pix_fmt, times, duration


def test_a_clip_holds_the_frames_of_its_span_at_their_capture_times(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    write(client, keys, "door", OFFSETS)
    # From 0.3 s less a 0.3 s pre-roll (0.0) to 2.0 s: eight frames, 0.0 ... 2.0 (2.05 and 3.0 are after the end).
    data = make_clip(client, keys, "door", T + 0.3, T + 2.0, pre_roll_s=0.3)
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # moov first: plays while loading
    codec, pix_fmt, times, duration = opened(data)
    assert codec == "h264" and pix_fmt == "yuv420p"
    assert times == pytest.approx([0.0, 0.1, 0.35, 0.4, 0.9, 1.0, 1.7, 2.0], abs=0.002)
    # Real speed: 2 s from the first frame to the last, plus the last frame's own (the mean interval, 2 / 7 s).
    assert duration == pytest.approx(2.0 + 2 / 7, abs=0.05)


def test_the_latest_frames_are_kept_and_odd_or_changing_sizes_are_fitted(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    write(client, keys, "yard", OFFSETS)
    _, _, times, _ = opened(make_clip(client, keys, "yard", T, T + 3.0, max_frames=3))
    assert times == pytest.approx([0.0, 0.05, 1.0], abs=0.002)  # 2.0, 2.05, 3.0: the end of the span kept
    for seq, (ts, size) in enumerate([(T + 10, (321, 241)), (T + 10.5, (640, 480)), (T + 11, (321, 241))]):
        client.xadd(keys.frames("odd"), {FIELD: encode(frame("odd", seq, ts, size))}, id=f"{round(ts * 1000)}-0")
    client.xadd(keys.frames("odd"), {FIELD: b"not msgpack"}, id=f"{round((T + 11.2) * 1000)}-0")  # skipped
    data = make_clip(client, keys, "odd", T + 9, T + 12)
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (320, 240)
        assert len(list(container.decode(video=0))) == 3


def test_no_clip_of_frames_that_are_gone_and_the_error_says_why(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    with pytest.raises(ClipError, match=r"no frames of camera 'nowhere' from .* are kept: its frames stream is empty"):
        make_clip(client, keys, "nowhere", T, T + 1)
    write(client, keys, "gate", [float(i) for i in range(30)], maxlen=10, approximate=False)  # the first 20 trimmed
    with pytest.raises(ClipError) as err:
        make_clip(client, keys, "gate", T + 2, T + 5, pre_roll_s=1)
    message = str(err.value)
    assert message.startswith("no frames of camera 'gate' from 2023-11-14 22:13:21.000 UTC to 2023-11-14 22:13:25")
    assert "keeps only its newest frames (streams.frames_maxlen)" in message
    assert "its oldest now is from 2023-11-14 22:13:40.040 UTC" in message
    with pytest.raises(ClipError, match="none was sampled then"):
        make_clip(client, keys, "gate", T + 25.2, T + 25.8)
    with pytest.raises(ClipError, match=r"ends .* before it starts"):
        make_clip(client, keys, "gate", T + 25, T + 24)
    assert len(opened(make_clip(client, keys, "gate", T + 25, T + 27))[2]) == 3


def test_a_clip_of_live_frames_added_with_the_servers_ids(client: Client, prefix: str) -> None:
    """The ids Redis gives (its clock) against capture times (the writer's clock): the way ingest writes."""
    keys = Keys(prefix)
    start = time.time()
    for seq in range(6):
        client.xadd(keys.frames("live"), {FIELD: encode(frame("live", seq, time.time()))})
        time.sleep(0.06 + 0.04 * (seq % 2))
    codec, _, times, _ = opened(make_clip(client, keys, "live", start, time.time()))
    assert codec == "h264" and len(times) == 6 and times[0] == 0.0 and 0.3 < times[-1] < 1.5
