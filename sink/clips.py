"""Clips: an MP4 (H.264, playable in browsers) of the frames a camera's frames stream still holds between two moments.

The frames are the sampled ones ingest published, at whatever rate each camera was sampled (uneven: a camera that
stalls, a sampler that skips); each is shown at its capture time (presentation times in milliseconds), so a clip
plays at real speed however many frames it has. The frames stream keeps only its newest ``streams.frames_maxlen``
frames (or the camera's own ``frames_maxlen``): a clip of a moment older than those cannot be made, and
:class:`ClipError` says so. Encoded with PyAV (its wheels carry libx264), imported only when a clip is made.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from common.codec import ImageError, decode_frame
from common.keys import Keys
from common.redis_io import Client, entries_between, oldest_id
from common.wire import Frame, WireError, decode

log = logging.getLogger(__name__)

ID_SLACK_S = 2.0
"""Entry ids are when Redis added a frame (its clock), a little after the capture (ingest's clock): the ids read
reach this far beyond the span, and the frames are then picked by their capture times."""
EXTRA_ENTRIES = 200
"""Entries read beyond ``max_frames``, for those of the slack after the span (2 s at up to 100 fps)."""
MS = Fraction(1, 1000)


class ClipError(Exception):
    """No clip can be made: which camera and span, and why."""


def make_clip(
    client: Client,
    keys: Keys,
    stream: str,
    start_ts: float,
    end_ts: float,
    pre_roll_s: float = 0.0,
    *,
    max_frames: int = 600,
    crf: int = 23,
) -> bytes:
    """An MP4 of the frames of ``stream`` captured from ``start_ts - pre_roll_s`` to ``end_ts`` (UNIX seconds),
    still in its frames stream; at most ``max_frames`` (the latest). :class:`ClipError` when none is left, or none
    can be decoded; the door's errors (``Unavailable``) when Redis cannot be read."""
    first = start_ts - pre_roll_s
    if end_ts < first:
        raise ClipError(f"clip of camera {stream!r}: the span ends ({_at(end_ts)}) before it starts ({_at(first)})")
    key = keys.frames(stream)
    found = entries_between(
        client, key, int((first - ID_SLACK_S) * 1000), int((end_ts + ID_SLACK_S) * 1000), max_frames + EXTRA_ENTRIES
    )
    frames, bad = [], 0
    for entry_id, payload in found:
        try:
            frame = decode(payload, Frame)
        except WireError as exc:
            log.warning("clip of %s: skipping frame %s: %s", stream, entry_id, exc)
            bad += 1
            continue
        if first <= frame.capture_ts <= end_ts:
            frames.append(frame)
    frames.sort(key=lambda f: f.capture_ts)
    if len(frames) > max_frames:
        log.info("clip of %s: %d frames kept for the span, the latest %d taken", stream, len(frames), max_frames)
        frames = frames[-max_frames:]
    if not frames:
        raise ClipError(_none_left(client, key, stream, first, end_ts, bad))
    images: list[tuple[int, np.ndarray]] = []
    for frame in frames:
        try:
            images.append((round((frame.capture_ts - frames[0].capture_ts) * 1000), decode_frame(frame)))
        except ImageError as exc:
            log.warning("clip of %s: skipping frame #%d: %s", stream, frame.seq, exc)
    if not images:
        raise ClipError(
            f"no clip of camera {stream!r} from {_at(first)} to {_at(end_ts)}: none of its {len(frames)} frames "
            "kept then can be decoded"
        )
    return encode_mp4(images, crf)


def encode_mp4(images: list[tuple[int, np.ndarray]], crf: int = 23) -> bytes:
    """H.264 in MP4 (moov first, for playing while it downloads) of BGR images at their times (ms from the
    first); images of another size than the first are scaled to it, a time not after the one before is skipped."""
    import av  # only when a clip is made: no other part of a sink needs FFmpeg's libraries

    height, width = images[0][1].shape[:2]
    width, height = max(2, width - width % 2), max(2, height - height % 2)  # 4:2:0 needs even sides
    span_ms = images[-1][0] - images[0][0]
    # The rate only sets the last frame's duration and x264's rate control: the times are the frames' own.
    rate = Fraction(1000 * (len(images) - 1), span_ms).limit_denominator(1000) if span_ms > 0 else Fraction(1)
    with tempfile.TemporaryDirectory(prefix="clip-") as folder:  # faststart rewrites the file: it must be seekable
        path = Path(folder) / "clip.mp4"
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream(
                "libx264", rate=max(rate, Fraction(1, 10)), options={"crf": str(crf), "preset": "veryfast", "bf": "0"}
            )  # no B-frames: with them FFmpeg's MP4 misstates a variable-rate clip's duration
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.time_base = MS
            video.time_base = MS
            last = -1
            for pts, decoded in images:
                if pts <= last:
                    continue
                last = pts
                image = decoded
                if image.shape[:2] != (height, width):
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
                frame.pts, frame.time_base = pts, MS
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
        return path.read_bytes()


def _none_left(client: Client, key: str, stream: str, first: float, end: float, bad: int) -> str:
    what = f"no frames of camera {stream!r} from {_at(first)} to {_at(end)}"
    if bad:
        return f"{what} can be read: {bad} frames kept then are malformed"
    oldest = oldest_id(client, key)
    if oldest is None:
        return f"{what} are kept: its frames stream is empty"
    oldest_ts = int(oldest.split("-")[0]) / 1000
    if oldest_ts > first:
        return (
            f"{what} are kept any more: the frames stream keeps only its newest frames (streams.frames_maxlen), "
            f"and its oldest now is from {_at(oldest_ts)}"
        )
    return f"{what} are in its frames stream: none was sampled then"


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
