"""PyAV's capture decodes keyframes only when the sampling allows it, and the sampler still gets the right frames.

The videos are real H.264 (libx264 through PyAV, with B-frames, a known keyframe schedule), made here at 320x240
and 25 fps from the synthetic scene (frames that differ and move): no downloads.
"""

from __future__ import annotations

import itertools
import random
import socket
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from common.backoff import Backoff
from common.config import CameraConfig, ConfigError, parse_config
from common.keys import Keys
from common.scenes import Scene
from ingest import reader as reader_module
from ingest.publisher import Publisher
from ingest.reader import CameraReader
from ingest.sampler import Sampler
from ingest.sources import FrameError, Source, SourceError, open_source
from ingest.sources._av import AvSource
from ingest.sources._capture import CaptureSource
from ingest.sources.base import tell_sample_interval
from ingest.sources.file import FileSourceConfig
from ingest.sources.http import HttpSourceConfig
from ingest.sources.rtsp import RtspSourceConfig
from tests.conftest import free_port
from tests.servers.hls import Folder, ffmpeg

FPS = 25
SIZE = (320, 240)


def make_video(path: Path, frames: int, keyframes: set[int] | int, fmt: str | None = None) -> Path:
    """An H.264 video whose keyframes are exactly ``keyframes`` (a set of frame numbers, or every n-th)."""
    wanted = set(range(0, frames, keyframes)) if isinstance(keyframes, int) else keyframes
    scene = Scene(7, *SIZE, shapes=3)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        # No keyframe of x264's own choosing (none on scene cuts, none at a GOP's end): only the forced ones.
        stream.options = {"preset": "veryfast", "g": "1000", "keyint_min": "1000", "sc_threshold": "0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(scene.render(i), format="bgr24")
            frame.pict_type = av.video.frame.PictureType.I if i in wanted else av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def full_decode(path: Path) -> list[np.ndarray]:
    """Every frame, in presentation order, decoded the ordinary way: the reference pixels."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def keyframe_numbers(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]


@dataclass
class Sampled:
    ts: float
    index: int | None
    image: np.ndarray
    key_frame: bool | None


def sample(source: Source, fps: float | None, every_n: int = 1) -> list[Sampled]:
    """What the camera reader does with a source: tell it the interval, grab everything, retrieve what is due."""
    tell_sample_interval(source, None if fps is None else 1.0 / fps)
    sampler = Sampler(every_n, fps)
    out = []
    while (ts := source.grab()) is not None:
        if sampler.due(ts):
            origin = source.origin()
            frame = getattr(source, "_frame", None)
            key = None if frame is None else bool(frame.key_frame)
            out.append(Sampled(ts, None if origin is None else origin[1], source.retrieve(), key))
    source.close()
    return out


def av_file(path: Path, **settings: object) -> AvSource:
    source = open_source(FileSourceConfig(path=path, **settings))  # type: ignore[arg-type]
    assert isinstance(source, AvSource)
    return source


@pytest.fixture(scope="module")
def gop25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s, a keyframe every second."""
    return make_video(tmp_path_factory.mktemp("v") / "gop25.mp4", 12 * FPS, 25)


# ---------------------------------------------------------------------------------------------------- (a)
def test_at_1_fps_with_a_keyframe_every_second_only_keyframes_are_decoded(gop25: Path) -> None:
    assert keyframe_numbers(gop25) == list(range(0, 300, 25))
    reference = full_decode(gop25)
    source = av_file(gop25)
    got = sample(source, 1.0)
    # Two gaps of a second seen (keyframes 0, 25, 50), then the ten keyframes from 2 s on, alone.
    assert source.skipping and source.decoded == 50 + 10
    assert [s.index for s in got] == [0, 23, 48, *range(75, 300, 25)]
    assert all(s.key_frame for s in got[3:])
    assert [s.ts for s in got] == pytest.approx([s.index / FPS for s in got])  # media time
    assert max(b.ts - a.ts for a, b in itertools.pairwise(got)) <= 1.08  # never a second missed
    assert len(got) == 12  # one a second over 12 s
    # Decoding everything, the sampler's slack (a tenth of an interval early) takes 0.92 s and keeps that phase,
    # which fits one more in: 0, 0.92, ..., 11.92.
    assert len(sample(av_file(gop25, keyframes_only="never"), 1.0)) == 13
    for s in got:
        assert s.index is not None and np.array_equal(s.image, reference[s.index]), s.index


def test_a_camera_at_1_fps_publishes_one_frame_a_second_through_the_reader(
    gop25: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Source] = []

    def keep(*args: object) -> Source:
        opened.append(open_source(*args))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(reader_module, "open_source", keep)
    camera = CameraConfig.model_validate({"name": "cam", "source": {"kind": "file", "path": str(gop25)}, "fps": 1})
    publisher = Publisher(__import__("fakeredis").FakeRedis(), Keys("t"))  # never started: frames stay queued
    CameraReader(camera, publisher, 100, Backoff(0.01, 0.01)).run()
    frames = [frame for frame, _ in publisher._queue]
    assert [f.frame_index for f in frames] == [0, 23, 48, *range(75, 300, 25)]
    assert publisher.counter("cam").sampled == 12
    assert isinstance(opened[0], AvSource) and opened[0].decoded == 60  # the reader told it the interval


# ---------------------------------------------------------------------------------------------------- (b)
def test_at_5_fps_with_a_keyframe_every_second_every_frame_is_decoded(gop25: Path) -> None:
    reference = full_decode(gop25)
    source = av_file(gop25)
    got = sample(source, 5.0)
    assert not source.skipping and source.decoded == 300
    assert [s.index for s in got] == list(range(0, 300, 5))
    assert [s.ts for s in got] == pytest.approx([i / 5 for i in range(60)])
    for s in got:
        assert s.index is not None and np.array_equal(s.image, reference[s.index]), s.index


def test_every_n_counts_frames_so_every_frame_is_decoded(gop25: Path) -> None:
    source = av_file(gop25)
    got = sample(source, None, every_n=25)
    assert source.decoded == 300 and [s.index for s in got] == list(range(0, 300, 25))


# ---------------------------------------------------------------------------------------------------- (c)
def test_a_keyframe_every_2_s_at_1_fps_decodes_every_frame(tmp_path: Path) -> None:
    path = make_video(tmp_path / "gop50.mp4", 12 * FPS, 50)
    source = av_file(path)
    got = sample(source, 1.0)
    assert not source.skipping and source.decoded == 300
    assert [s.index for s in got] == [0, *range(23, 300, 25)]  # each second's frame, not each keyframe
    reference = full_decode(path)
    assert all(np.array_equal(s.image, reference[s.index]) for s in got if s.index is not None)


def test_when_keyframes_grow_apart_the_skipped_frames_are_decoded_after_all(tmp_path: Path) -> None:
    # A keyframe every second for 6 s, then every 3 s: the camera's GOP changed.
    path = make_video(tmp_path / "grows.mp4", 14 * FPS, set(range(0, 151, 25)) | {225, 300})
    source = av_file(path)
    got = sample(source, 1.0)
    assert not source.skipping
    # Frames 0-49, keyframes 50-150 alone, then at 7.04 s (no keyframe since 6 s) 150-349 after all.
    assert source.decoded == 50 + 5 + 200
    assert [s.index for s in got] == [0, 23, 48, 75, 100, 125, 150, *range(173, 350, 25)]
    assert max(b.ts - a.ts for a, b in itertools.pairwise(got)) <= 1.08  # none missing around 6-9 s
    reference = full_decode(path)
    assert all(np.array_equal(s.image, reference[s.index]) for s in got if s.index is not None)


def test_an_intra_only_video_is_never_read_as_keyframes_only(tmp_path: Path) -> None:
    path = make_video(tmp_path / "intra.mp4", 3 * FPS, 1)  # every frame a keyframe: nothing to skip
    source = av_file(path)
    assert [s.index for s in sample(source, 1.0)] == [0, 23, 48, 73]
    assert not source.skipping and source.decoded == 75


def test_a_looped_file_keeps_its_media_time_and_its_keyframe_skipping(tmp_path: Path) -> None:
    path = make_video(tmp_path / "short.mp4", 4 * FPS, 25)
    source = av_file(path, loop=True)
    tell_sample_interval(source, 1.0)
    sampler = Sampler(1, 1.0)
    got: list[tuple[float, int | None]] = []
    while len(got) < 10:
        ts = source.grab()
        assert ts is not None
        if sampler.due(ts):
            got.append((round(ts, 2), source.origin()[1]))
    assert got == [(0.0, 0), (0.92, 23), (1.92, 48), (3.0, 75), (4.0, 0), (5.0, 25), (6.0, 50), (7.0, 75),
                   (8.0, 0), (9.0, 25)]  # fmt: skip
    assert source.skipping and source.decoded == 50 + 2 + 6


def test_keyframes_only_never_and_the_opencv_decoder_decode_every_frame(gop25: Path) -> None:
    never = av_file(gop25, keyframes_only="never")
    assert [s.index for s in sample(never, 1.0)] == [0, *range(23, 300, 25)]
    assert never.decoded == 300
    opencv = open_source(FileSourceConfig(path=gop25, decoder="opencv"))
    assert isinstance(opencv, CaptureSource)
    assert [s.index for s in sample(opencv, 1.0)] == [0, *range(23, 300, 25)]  # the interval is ignored


def test_pyav_gives_the_pixels_and_timestamps_opencv_gives(gop25: Path) -> None:
    """The default decoder changed from OpenCV to PyAV: what a camera publishes must not."""
    pyav = sample(av_file(gop25, keyframes_only="never"), None)
    opencv = sample(open_source(FileSourceConfig(path=gop25, decoder="opencv")), None)
    assert len(pyav) == len(opencv) == 300
    for a, b in zip(pyav, opencv, strict=True):
        assert a.index == b.index and a.ts == pytest.approx(b.ts)
        assert np.array_equal(a.image, b.image), a.index


def test_a_live_streams_keyframes_are_spaced_by_its_clock_not_by_their_jittery_arrival(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyframe arriving over 0.1 s early is passed over by a 1 fps sampler (its slack is a tenth of an interval);
    with arrivals jittered by up to 0.3 s, arrival times alone publish 18 frames of these 24 s."""
    source = AvSource(str(make_video(tmp_path / "24s.mp4", 24 * FPS, 25)), "test stream", live=True)
    jitter = random.Random(1)
    arrival = lambda: 1000.0 + (source._last_ts or 0.0) + jitter.uniform(-0.3, 0.3)  # noqa: E731
    monkeypatch.setattr("ingest.sources._av.time.monotonic", arrival)
    tell_sample_interval(source, 1.0)
    sampler, published = Sampler(1, 1.0), 0
    with pytest.raises(SourceError, match=r"test stream stopped delivering frames \(the stream ended\)"):
        while (ts := source.grab()) is not None:
            published += sampler.due(ts)
    assert source.skipping and source.decoded == 50 + 22
    assert published == 24


def test_an_hls_stream_of_h264_is_read_as_keyframes_only(tmp_path: Path) -> None:
    exe = ffmpeg()
    if exe is None:
        pytest.skip("needs imageio-ffmpeg to cut HLS segments")
    folder = tmp_path / "hls"
    folder.mkdir()
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-t", "8", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
         "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", str(folder / "index.m3u8")],
        check=True, timeout=120,
    )  # fmt: skip
    server = Folder(folder)
    try:
        source = open_source(HttpSourceConfig(url=server.url("index.m3u8"), open_timeout_s=5, read_timeout_s=5))
        assert isinstance(source, AvSource) and source.live
        tell_sample_interval(source, 1.0)
        grabbed = 0
        with pytest.raises(SourceError, match="stopped delivering frames"):  # a VOD playlist ends
            while source.grab() is not None:
                grabbed += 1
                assert source.retrieve().shape == (240, 320, 3)
        assert source.skipping and source.decoded == 50 + 6 and grabbed == 56
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- (d)
def test_a_non_video_or_an_audio_file_is_a_clear_source_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match=r"cannot open video file .*junk\.mp4 \(is it a video FFmpeg can read\?\): "):
        open_source(FileSourceConfig(path=junk))
    sound = tmp_path / "sound.wav"
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    with pytest.raises(SourceError, match=r"cannot open video file .*sound\.wav .*: it holds no video stream"):
        open_source(FileSourceConfig(path=sound))


def test_a_truncated_mp4_is_a_source_error(gop25: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(gop25.read_bytes()[: gop25.stat().st_size // 2])  # its index (moov) is at the end: gone
    with pytest.raises(SourceError, match=r"cannot open video file .*cut\.mp4 .*: Invalid data"):
        open_source(FileSourceConfig(path=cut))


@pytest.mark.parametrize("fps", [1.0, None])
def test_a_truncated_or_damaged_stream_is_read_to_its_end_without_crashing(tmp_path: Path, fps: float | None) -> None:
    ts_file = make_video(tmp_path / "v.ts", 6 * FPS, 25, fmt="mpegts")
    data = bytearray(ts_file.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 5, len(data) // 3):  # two bursts of garbage: damaged frames
        data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data[: len(data) * 2 // 3]))  # and cut off mid-packet
    source = av_file(damaged)
    tell_sample_interval(source, None if fps is None else 1.0 / fps)
    grabbed = good = bad = 0
    while source.grab() is not None:  # never raises: the end of what can be read is the end of the file
        grabbed += 1
        try:
            assert source.retrieve().shape == (240, 320, 3)
            good += 1
        except FrameError as exc:
            assert "damaged.ts" in str(exc)
            bad += 1
    source.close()
    assert 0 < grabbed < 150 and good > 0  # FFmpeg's H.264 decoder conceals damage: frames, not errors


def test_one_undecodable_frame_is_a_frame_error_and_the_others_are_read(tmp_path: Path) -> None:
    path = tmp_path / "m.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (160, 120))
    for i in range(6):
        out.write(np.full((120, 160, 3), i * 40, np.uint8))
    out.release()
    data = bytearray(path.read_bytes())
    third = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"][3]  # frame 3's JPEG
    data[third + 2 : third + 200] = b"\xff" * 198
    path.write_bytes(bytes(data))
    source = av_file(path)
    got: list[tuple[float, int | str]] = []
    while (ts := source.grab()) is not None:
        try:
            got.append((ts, int(source.retrieve()[0, 0, 0])))
        except FrameError as exc:
            got.append((ts, str(exc)))
    assert [t for t, _ in got] == pytest.approx([i / 25 for i in range(6)])
    assert got[3][1] == f"video file {path} (is it a video FFmpeg can read?): a frame could not be decoded"
    assert [v for _, v in got[:3] + got[4:]] == pytest.approx([0, 40, 80, 160, 200], abs=3)


def test_a_refused_rtsp_camera_is_a_source_error_that_shows_no_password() -> None:
    port = free_port()
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/cam"
    with pytest.raises(SourceError) as info:
        open_source(RtspSourceConfig(url=url, open_timeout_s=2))
    message = str(info.value)
    assert message.startswith(f"cannot open rtsp stream rtsp://admin:***@127.0.0.1:{port}/cam (check the URL")
    assert "the network and the camera): " in message and "hunter2" not in message


def test_a_stream_that_goes_silent_is_a_source_error_after_its_read_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def serve() -> None:  # an MJPEG camera that sends 5 frames, then nothing, with its connection still open
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
        for i in range(5):
            data = cv2.imencode(".jpg", np.full((120, 160, 3), i * 40, np.uint8))[1].tobytes()
            conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(data), data))
        done.wait(30)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/cam"
    try:
        source = open_source(HttpSourceConfig(url=url, open_timeout_s=5, read_timeout_s=1))
        grabbed = 0
        with pytest.raises(SourceError, match=r"stopped delivering frames \(silent past its read timeout\)"):
            while source.grab() is not None:
                grabbed += 1
                assert source.retrieve().shape == (120, 160, 3)
        assert grabbed == 5
    finally:
        done.set()
        server.close()


# ---------------------------------------------------------------------------------------------------- (e)
def test_the_decoder_settings_are_checked_and_their_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"decoder\n  Input should be 'pyav' or 'opencv'"):
        FileSourceConfig(path=Path("v.mp4"), decoder="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"keyframes_only\n  Input should be 'auto' or 'never'"):
        RtspSourceConfig(url="rtsp://cam/1", keyframes_only="always")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        parse_config(
            "ingest:\n  cameras:\n    - name: c\n"
            "      source: {kind: http, url: 'http://cam/1', keyframe_only: auto}\n",
            source="stack.yaml",
            environ={},
        )
    assert any("stack.yaml:4:" in p and "keyframe_only" in p for p in info.value.problems), info.value.problems
    defaults = FileSourceConfig(path=Path("v.mp4"))
    assert (defaults.decoder, defaults.keyframes_only) == ("pyav", "auto")
    assert HttpSourceConfig(url="http://cam/1").decoder == "pyav"
