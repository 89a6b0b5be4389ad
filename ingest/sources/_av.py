"""PyAV's capture (the FFmpeg its wheel bundles), shared by the file, rtsp and http sources: every packet is
demuxed, but only keyframes are decoded while the camera's sampling allows it. Imported only when such a camera
opens (PyAV loads FFmpeg's libraries): plug-in discovery must not load it.

A compressed stream's frames refer to earlier ones, so a frame between keyframes can only be had by decoding all
frames since the last keyframe. A keyframe decodes on its own: when keyframes come at least once per sampling
interval, decoding them alone still gives the sampler a frame every interval, at a fraction of the cost. The
spacing is measured, never assumed: the capture decodes everything until it has seen ``PROOF_GAPS`` keyframe gaps
no longer than the interval in a row. While it skips, it keeps the packets since the last keyframe; when the next
keyframe is overdue (the camera's GOP grew, a keyframe was lost) it decodes them after all and every frame from then
on, so no sampled frame goes missing, and proves the spacing again before skipping again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from fractions import Fraction

import av
import av.error
import numpy as np
from av.codec.context import ThreadType
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ingest.sources.base import FrameError, KeyframesOnly, SourceError

log = logging.getLogger(__name__)

PROOF_GAPS = 2
"""Keyframe gaps no longer than the sampling interval seen in a row before non-keyframes are skipped."""
GAP_TOLERANCE = 1.01
"""A gap up to 1 % over the interval still counts (timestamps rounded to the stream's time base)."""
LIVE_SLACK_S = 2.0
"""While a live stream's keyframes alone are read, their times follow the stream's clock from one to the next
unless that strays further than this from their arrival (a clock that drifts or jumps, a reconnection)."""


class AvSource:
    """A video file or network stream read through PyAV; implements :class:`ingest.sources.base.Source`.

    ``decoded`` counts the frames the decoder produced and ``skipping`` says whether non-keyframes are skipped
    now: what tests and benchmarks look at.
    """

    def __init__(
        self,
        target: str,
        what: str,
        *,
        live: bool,
        loop: bool = False,
        options: dict[str, str] | None = None,
        timeouts: tuple[float, float] | None = None,
        decoder_threads: int = 1,
        keyframes_only: KeyframesOnly = "auto",
        file: str | None = None,
    ) -> None:
        self.live = live
        self.loop = loop
        self._target = target
        self._what = what
        self._options = options or {}
        self._timeouts = timeouts
        self._threads = decoder_threads
        self._keyframes_allowed = keyframes_only == "auto"
        self._file = file
        self._container, self._stream = self._open()
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else 0.0
        self.fps: float | None = fps if 0 < fps < 1000 else None
        self.total = None if live or loop else self._frame_count()
        self.decoded = 0
        self.skipping = False
        self._interval: float | None = None
        self._packets = self._container.demux(self._stream)
        self._ready: deque[tuple[VideoFrame | None, float, int]] = deque()  # (frame or None if broken, ts, index)
        self._frame: VideoFrame | None = None
        self._index = -1  # position of the frame grabbed last in the file (presentation order)
        self._presented = 0  # frames handed out in this pass while decoding everything
        self._packet_count = 0  # video packets demuxed in this pass: a closed GOP's keyframe is presented after them
        self._first_pts: int | None = None  # the pass's first packet's: media time 0 (plus the offset)
        self._end = 0.0  # media time where the pass's last packet ends, skipped or not: where the next pass starts
        self._offset = 0.0  # media time of the passes already played (a looped file)
        self._last_ts: float | None = None
        self._last_key: float | None = None  # stream time of the last keyframe packet
        self._since_key = 0  # non-keyframe packets since it
        self._gaps_ok = 0
        self._held: list[Packet[VideoStream]] = []  # while skipping: the packets since the last keyframe
        self._repeat: int | None = None  # the pts of a keyframe decoded again when falling back
        self._ended = False
        self._live_last = 0.0  # the time grab() gave last, on a live stream
        self._live_anchor: tuple[float, float] | None = None  # (that time, its stream time) while skipping

    # ---------------------------------------------------------------------------------------------- opening
    def _open(self) -> tuple[InputContainer, VideoStream]:
        try:
            container = av.open(self._target, options=self._options, timeout=self._timeouts, metadata_errors="replace")
        except (av.error.FFmpegError, OSError, ValueError) as exc:  # its file name is the URL, password and all
            raise SourceError(f"cannot open {self._what}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"cannot open {self._what}: it holds no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # PyAV has no decoder for its codec
            container.close()
            raise SourceError(f"cannot open {self._what}: FFmpeg has no decoder for its video codec")
        context = stream.codec_context
        context.thread_count = self._threads  # 0: FFmpeg's default, one per CPU
        if self._threads != 1:
            context.thread_type = ThreadType.AUTO  # frames and slices, as OpenCV's FFmpeg does
        return container, stream

    def _frame_count(self) -> int | None:
        if self._stream.frames > 0:
            return self._stream.frames
        if self.fps and self._stream.duration and self._stream.time_base:
            return round(float(self._stream.duration * self._stream.time_base) * self.fps) or None
        return None

    # ---------------------------------------------------------------------------------------------- the protocol
    def sample_interval(self, seconds: float | None) -> None:
        """How often the camera's frames are sampled (None: not by time); keyframes alone may then be decoded."""
        # Taken into account at the next keyframe: only there can decoding switch between all frames and keyframes.
        self._interval = seconds if self._keyframes_allowed and seconds is not None and seconds > 0 else None

    def grab(self) -> float | None:
        while not self._ready:
            if self._ended:
                if not self._rewind():
                    return None
            else:
                self._read_packet()
        frame, ts, index = self._ready.popleft()
        self._frame, self._index = frame, index
        return self._live_time(ts) if self.live else ts

    def retrieve(self) -> np.ndarray:
        if self._frame is None:
            raise FrameError(f"{self._what}: a frame could not be decoded")
        try:
            image: np.ndarray = self._frame.to_ndarray(format="bgr24")
        except (av.error.FFmpegError, ValueError) as exc:
            raise FrameError(f"{self._what}: a frame could not be converted to BGR ({exc})") from None
        return image

    def origin(self) -> tuple[str, int | None] | None:
        return None if self._file is None else (self._file, self._index)

    def close(self) -> None:
        try:
            self._container.close()
        except av.error.FFmpegError as exc:  # closing a broken stream must not hide why it broke
            log.debug("%s: close: %s", self._what, _reason(exc))

    # ---------------------------------------------------------------------------------------------- reading
    def _read_packet(self) -> None:
        """Demux one packet and decode it if it must be; what comes out goes to ``_ready``."""
        try:
            packet = next(self._packets, None)
        except av.error.FFmpegError as exc:
            self._read_failed(exc)
            packet = None
        if packet is None:
            self._finish_pass()
            return
        if packet.size == 0:  # PyAV's flush packet, just before the end: _finish_pass drains the decoder
            return
        self._packet_count += 1
        at = self._packet_time(packet)
        if packet.pts is not None and packet.time_base is not None:
            if self._first_pts is None:
                self._first_pts = packet.pts
            length = packet.duration * packet.time_base if packet.duration else 1.0 / (self.fps or 25.0)
            self._end = max(self._end, self._offset + float((packet.pts - self._first_pts) * packet.time_base + length))
        if packet.is_keyframe:
            self._keyframe(packet, at)
            return
        self._since_key += 1
        if not self.skipping:
            self._decode(packet)
            return
        self._held.append(packet)
        interval, last = self._interval, self._last_key
        if interval is not None and last is not None and at is not None and at - last > interval * GAP_TOLERANCE:
            self._fall_back()

    def _read_failed(self, exc: av.error.FFmpegError) -> None:
        if self.live:
            if isinstance(exc, av.error.ExitError):  # PyAV's read timeout
                raise SourceError(f"{self._what} stopped delivering frames (silent past its read timeout)") from None
            raise SourceError(f"{self._what} stopped delivering frames: {_reason(exc)}") from None
        # As OpenCV does: a file that cannot be read further ends there (a damaged or truncated file).
        log.warning("%s: read error after %d packets, taken as its end: %s", self._what, self._packet_count,
                    _reason(exc))  # fmt: skip

    def _keyframe(self, packet: Packet[VideoStream], at: float | None) -> None:
        gap = None if self._last_key is None or at is None else at - self._last_key
        between, self._last_key, self._since_key = self._since_key, at, 0
        interval = self._interval
        # A gap proves something only with frames in it: an intra-only stream (MJPEG) has nothing to skip.
        if interval is not None and gap is not None and 0 < gap <= interval * GAP_TOLERANCE and between > 0:
            self._gaps_ok += 1
        elif gap is not None:
            self._gaps_ok = 0
        wanted = interval is not None and self._gaps_ok >= PROOF_GAPS
        if wanted and not self.skipping:  # the frames still in the decoder come before this keyframe
            self._drain()
        self.skipping = wanted
        self._held = [packet] if wanted else []
        self._decode(packet, alone=wanted)

    def _fall_back(self) -> None:
        """The next keyframe is overdue (the camera's GOP grew, or a keyframe was lost): decode the frames skipped
        since the last one after all, so none is missing, and every frame from now on."""
        log.info("%s: no keyframe within %.2f s: decoding every frame", self._what, self._interval or 0.0)
        held, self._held = self._held, []
        self.skipping = False
        self._gaps_ok = 0
        self._repeat = held[0].pts  # its frame was handed out already
        for packet in held:
            self._decode(packet)
        self._repeat = None

    def _decode(self, packet: Packet[VideoStream], alone: bool = False) -> None:
        """Decode a packet; ``alone``: a keyframe decoded by itself (the decoder is drained and reset after it, so
        its frame comes out now, not after the frames it would have been reordered with)."""
        context = self._stream.codec_context
        try:
            frames = context.decode(packet)
            if alone:
                frames += context.decode(None)
        except av.error.FFmpegError as exc:
            log.debug("%s: a packet could not be decoded: %s", self._what, _reason(exc))
            frames = []
            if packet.pts != self._repeat:  # retrieve() says so, if the sampler wants this frame
                index = self._packet_count - 1 if alone else self._presented
                self._presented = index + 1
                self._ready.append((None, self._broken_time(packet.pts), index))
        finally:
            if alone:
                context.flush_buffers()
        for frame in frames:
            self.decoded += 1
            if self._repeat is not None and frame.pts == self._repeat:
                continue
            # A keyframe alone: its GOP is closed, so every packet before it in decode order shows before it.
            index = self._packet_count - 1 if alone else self._presented
            self._presented = index + 1
            self._ready.append((frame, self._media_time(frame.pts), index))

    def _drain(self) -> None:
        """The frames the decoder still holds (reordering, frame threads), in order; the decoder is reset."""
        context = self._stream.codec_context
        try:
            frames = context.decode(None)
        except av.error.FFmpegError:
            frames = []
        context.flush_buffers()
        for frame in frames:
            self.decoded += 1
            self._ready.append((frame, self._media_time(frame.pts), self._presented))
            self._presented += 1

    def _finish_pass(self) -> None:
        if not self.skipping:
            self._drain()
        self._ended = True
        if self.live:
            raise SourceError(f"{self._what} stopped delivering frames (the stream ended)")

    def _rewind(self) -> bool:
        """Start a looped file over; False when it does not loop (or held no frame)."""
        if not self.loop or self._last_ts is None:
            return False
        if self._packet_count == 0:  # the last rewind led to nothing: rewinding again would spin forever
            raise SourceError(f"{self._what} cannot be rewound to loop: nothing could be read after rewinding")
        try:
            self._container.seek(0)
            self._stream.codec_context.flush_buffers()
        except av.error.FFmpegError:  # a format that cannot seek (or not to its start): open it again
            self.close()
            self._container, self._stream = self._open()
        self._packets = self._container.demux(self._stream)
        # The next pass starts where this one's last frame ends (its last frames may have been skipped, not decoded).
        self._offset = max(self._end, self._last_ts + 1.0 / (self.fps or 25.0))
        self._first_pts = None
        self._last_key = None  # no gap across the seam; the spacing proven so far still holds
        self._held = []
        self._packet_count = self._presented = self._since_key = 0
        self._ended = False
        return True

    # ---------------------------------------------------------------------------------------------- time
    def _packet_time(self, packet: Packet[VideoStream]) -> float | None:
        """A keyframe packet's time on the stream's clock (for the spacing); arrival time if it has none."""
        if packet.pts is None or packet.time_base is None:
            return time.monotonic() if self.live else None
        return float(packet.pts * packet.time_base)

    def _media_time(self, pts: int | None) -> float:
        """Seconds since the file's first frame, continued across loops and never going back (a timestamp jump
        back, as in joined recordings, restarts the count a frame after the last one)."""
        step = 1.0 / (self.fps or 25.0)
        base: Fraction | None = self._stream.time_base
        if pts is None or base is None:
            ts = self._offset if self._last_ts is None else self._last_ts + step
        else:
            if self._first_pts is None:
                self._first_pts = pts
            ts = self._offset + float((pts - self._first_pts) * base)
        if self._last_ts is not None and ts <= self._last_ts:
            self._offset += self._last_ts + step - ts
            ts = self._last_ts + step
        self._last_ts = ts
        return ts

    def _live_time(self, stream_time: float) -> float:
        """A live frame's time: its arrival, as OpenCV's capture gives it. While keyframes alone are read, one
        arriving early (network jitter, a late one before it) would fall outside the sampler's slack of a tenth
        of an interval and be passed over, a whole interval lost: the stream's own clock spaces them instead,
        anchored to the arrivals."""
        now = time.monotonic()
        ts = now
        if self.skipping and self._live_anchor is not None:
            guess = self._live_anchor[0] + (stream_time - self._live_anchor[1])
            if abs(guess - now) <= LIVE_SLACK_S:
                ts = guess
        ts = max(ts, self._live_last)  # never back: the sampler's schedule would stall
        self._live_anchor = (ts, stream_time) if self.skipping else None
        self._live_last = ts
        return ts

    def _broken_time(self, pts: int | None) -> float:
        """A frame that failed to decode: its time if it has one, without moving the clock the others keep."""
        base: Fraction | None = self._stream.time_base
        if pts is not None and base is not None and self._first_pts is not None:
            return self._offset + float((pts - self._first_pts) * base)
        return self._offset if self._last_ts is None else self._last_ts


def _reason(exc: Exception) -> str:
    """FFmpeg's reason without the file name PyAV appends (a URL with its password)."""
    reason = getattr(exc, "strerror", None)
    return reason if isinstance(reason, str) and reason else type(exc).__name__
