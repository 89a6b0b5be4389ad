"""The ingest process on real sources (files, image folders, HTTP MJPEG, HLS, RTSP) and a real server."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.redis_io.settings import EmbeddedServerConfig
from common.wire import Frame, decode
from tests.conftest import ROOT
from tests.servers.hls import Folder, ffmpeg, make_hls
from tests.servers.mjpeg import MjpegCamera

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GST_PYTHON = "/usr/bin/python3"


def gstreamer_rtsp() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return bool(shutil.which(GST_PYTHON)) and subprocess.run([GST_PYTHON, "-c", probe], check=False).returncode == 0


def write_config(tmp: Path, prefix: str, cameras: str, extra: str = "") -> Path:
    path = tmp / "stack.yaml"
    body = textwrap.indent(textwrap.dedent(cameras).strip(), "    ")
    path.write_text(
        f"streams: {{prefix: {prefix}, frames_maxlen: 5000}}\n"
        f"ingest:\n  retry_initial_s: 0.2\n  retry_max_s: 1.0\n  stats_interval_s: 1\n{extra}  cameras:\n{body}\n"
    )
    return path


def ingest(config: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "--config", str(config), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def frames(client: Client, prefix: str, stream: str) -> list[Frame]:
    return [decode(cast(bytes, f[b"msg"]), Frame) for _, f in client.xrange(Keys(prefix).frames(stream))]


def image(frame: Frame) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (frame.image_height, frame.image_width, 3)
    return img


@pytest.fixture
def mjpeg() -> Iterator[list[MjpegCamera]]:
    cameras: list[MjpegCamera] = []
    yield cameras
    for cam in cameras:
        cam.stop()


def test_files_folders_and_the_synthetic_camera_publish_every_sampled_frame(
    tmp_path: Path, server_url: str, client: Client, prefix: str
) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (1280, 720))
    for i in range(30):
        writer.write(np.full((720, 1280, 3), i * 8, np.uint8))
    writer.release()
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(6):
        cv2.imwrite(str(shots / f"{i:03d}.jpg"), np.full((100, 200, 3), 40 * i, np.uint8))
    (shots / "003.jpg").write_bytes(b"\xff\xd8 a truncated upload")
    config = write_config(
        tmp_path,
        prefix,
        f"""
        - name: clip
          source: {{kind: file, path: {clip}}}
          fps: 5
        - name: shots
          source: {{kind: images, path: {shots}, fps: 2}}
          encoding: bgr8
        - name: synth
          source: {{kind: synthetic, seed: 9, width: 320, height: 240, realtime: false, truth_path: truth.jsonl}}
          every_n: 3
          max_side: 160
        """,
    )
    log = finish(ingest(config, server_url, "--max-frames", "20"))

    clip_frames = frames(client, prefix, "clip")  # 30 frames at 25 fps sampled at 5 fps: 6 frames
    assert [f.seq for f in clip_frames] == list(range(6))
    assert all((f.width, f.height, f.image_width, f.image_height) == (1280, 720, 640, 360) for f in clip_frames)
    assert [int(image(f)[0, 0, 0]) for f in clip_frames] == pytest.approx([0, 40, 80, 120, 160, 200], abs=3)
    shots_frames = frames(client, prefix, "shots")  # 6 images, one broken: skipped and counted
    assert [f.encoding for f in shots_frames] == ["bgr8"] * 5
    assert "camera shots: read 6, sampled 6, published 5, dropped 0, skipped 1" in log
    assert "003.jpg is not a readable image" in log
    synth = frames(client, prefix, "synth")
    assert [f.seq for f in synth] == list(range(20))
    assert (synth[0].image_width, synth[0].image_height) == (160, 120)
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [t["seq"] for t in truth] == list(range(20))
    assert {o["label"] for t in truth for o in t["objects"]} == {"circle", "square", "triangle"}
    assert "camera synth: read 58, sampled 20, published 20" in log  # every 3rd of 58 frames read


def test_http_mjpeg_and_hls_streams(tmp_path: Path, server_url: str, client: Client, prefix: str,
                                    mjpeg: list[MjpegCamera]) -> None:  # fmt: skip
    mjpeg.append(MjpegCamera(fps=20, size=(640, 480)).start())
    hls_camera = ""
    if ffmpeg() is not None:
        hls = Folder(make_hls(tmp_path / "hls").parent)
        hls_camera = f"""
        - name: hls
          source: {{kind: http, url: "{hls.url("index.m3u8")}"}}"""
    config = write_config(
        tmp_path,
        prefix,
        f"""
        - name: mjpeg
          source: {{kind: http, url: "{mjpeg[0].url}"}}
          fps: 5
          max_side: 320{hls_camera}
        """,
    )
    log = finish(ingest(config, server_url, "--max-frames", "8"))
    got = frames(client, prefix, "mjpeg")
    assert len(got) == 8
    assert all((f.width, f.height, f.image_width) == (640, 480, 320) for f in got)
    ts = [f.capture_ts for f in got]
    assert ts[-1] - ts[0] > 0.9, "sampled at 5 fps from a 20 fps camera: ~1.4 s apart, not back to back"
    if hls_camera:
        assert len(frames(client, prefix, "hls")) == 8, log
        image(frames(client, prefix, "hls")[0])


@pytest.mark.skipif(
    not gstreamer_rtsp(), reason="needs GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)"
)
def test_an_rtsp_camera(tmp_path: Path, server_url: str, client: Client, prefix: str) -> None:
    from tests.servers.mjpeg import _free_port

    port = _free_port()
    server = subprocess.Popen([GST_PYTHON, str(ROOT / "tests/servers/rtsp_server.py"), str(port), "15"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("ready")
        config = write_config(
            tmp_path,
            prefix,
            f"""
            - name: door
              source: {{kind: rtsp, url: "rtsp://127.0.0.1:{port}/cam", transport: tcp}}
              fps: 5
            """,
        )
        finish(ingest(config, server_url, "--max-frames", "6"))
    finally:
        server.terminate()
        server.wait(10)
        assert server.stdout is not None
        server.stdout.close()
    got = frames(client, prefix, "door")
    assert [f.seq for f in got] == list(range(6)) and got[0].width == 320
    assert image(got[0]).mean() > 10  # the test pattern, not a black frame


def gaps(ts: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(ts))


def test_one_camera_dying_leaves_the_others_at_their_rate_and_it_comes_back(
    tmp_path: Path, server_url: str, client: Client, prefix: str, mjpeg: list[MjpegCamera]
) -> None:
    mjpeg.extend(MjpegCamera(fps=10).start() for _ in range(3))
    config = write_config(tmp_path, prefix, "\n".join(f"""
        - name: cam{i}
          source: {{kind: http, url: "{cam.url}", open_timeout_s: 2, read_timeout_s: 2}}
          fps: 5""" for i, cam in enumerate(mjpeg)))  # fmt: skip
    proc = ingest(config, server_url, "--duration", "14")
    time.sleep(4)
    down = time.time()
    mjpeg[1].stop()  # camera 1 dies...
    time.sleep(5)
    up = time.time()
    mjpeg[1].start()  # ...and comes back on the same address
    log = finish(proc)

    for name in ("cam0", "cam2"):
        during = [f.capture_ts for f in frames(client, prefix, name) if down <= f.capture_ts <= up]
        assert len(during) >= 0.7 * 5 * (up - down), f"{name} slowed down while cam1 was down: {len(during)}"
        assert gaps(during) < 1.0, f"{name} stalled while cam1 was down"
    cam1 = [f.capture_ts for f in frames(client, prefix, "cam1")]
    assert not [t for t in cam1 if down + 0.5 < t < up - 0.5], "frames from a dead camera?"
    assert [t for t in cam1 if t > up], "cam1 did not come back"
    assert "camera cam1: " in log and "reconnects 0" not in next(
        line for line in reversed(log.splitlines()) if "camera cam1: read" in line
    )
    assert "camera cam0: " in log and "camera cam2: " in log


def test_a_wrong_url_or_path_is_a_clear_error_for_that_camera_only(
    tmp_path: Path, server_url: str, client: Client, prefix: str
) -> None:
    config = write_config(
        tmp_path,
        prefix,
        f"""
        - name: good
          source: {{kind: synthetic, fps: 20}}
        - name: typo
          source: {{kind: file, path: {tmp_path}/no-such-clip.mp4}}
        - name: nobody
          source: {{kind: rtsp, url: "rtsp://127.0.0.1:9/cam", open_timeout_s: 1}}
        """,
    )
    log = finish(ingest(config, server_url, "--duration", "4"))
    assert len(frames(client, prefix, "good")) >= 40
    assert f"camera typo: video file {tmp_path}/no-such-clip.mp4 does not exist: fix the camera's source.path" in log
    assert "camera nobody: cannot open rtsp stream rtsp://127.0.0.1:9/cam (check the URL" in log
    assert "retrying in" in log
    assert "Traceback" not in log


def test_sighup_adds_and_removes_cameras_without_touching_the_others(
    tmp_path: Path, server_url: str, client: Client, prefix: str
) -> None:
    keep = "- name: keep\n  source: {kind: synthetic, seed: 1, fps: 10}"
    config = write_config(tmp_path, prefix, keep + "\n- name: old\n  source: {kind: synthetic, fps: 10}")
    proc = ingest(config, server_url, "--duration", "8")
    time.sleep(3)
    write_config(tmp_path, prefix, keep + "\n- name: new\n  source: {kind: synthetic, fps: 10}")
    proc.send_signal(signal.SIGHUP)
    switched = time.time()
    log = finish(proc)
    assert "SIGHUP: config reloaded, 2 cameras" in log
    keep_frames = frames(client, prefix, "keep")
    assert [f.seq for f in keep_frames] == list(range(len(keep_frames))), "keep was restarted"
    assert gaps([f.capture_ts for f in keep_frames]) < 0.5
    assert max(f.capture_ts for f in frames(client, prefix, "old")) < switched + 0.5
    assert min(f.capture_ts for f in frames(client, prefix, "new")) > switched - 0.5


def test_one_process_per_camera_from_the_same_config(tmp_path: Path, server_url: str, client: Client,
                                                     prefix: str) -> None:  # fmt: skip
    config = write_config(
        tmp_path,
        prefix,
        """
        - {name: a, source: {kind: synthetic, realtime: false}}
        - {name: b, source: {kind: synthetic, realtime: false}}
        """,
    )
    finish(ingest(config, server_url, "--camera", "b", "--max-frames", "5"))
    assert len(frames(client, prefix, "b")) == 5 and frames(client, prefix, "a") == []
    bad = subprocess.run([sys.executable, "-m", "ingest", "--config", str(config), "--camera", "zz"],
                         cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "--camera zz: not in ingest.cameras (a, b)" in bad.stderr


def test_redis_going_away_drops_and_counts_frames_and_publishing_resumes(tmp_path: Path, prefix: str) -> None:
    sock = tmp_path / "r.sock"
    server = EmbeddedServer(sock).start()
    config = write_config(tmp_path, prefix, "- {name: cam, source: {kind: synthetic, fps: 20}}")
    proc = ingest(config, server.url, "--duration", "9")
    try:
        time.sleep(3)
        server.kill()
        gone = time.time()
        time.sleep(2)
        server = EmbeddedServer(sock).start()
        back = time.time()
        log = finish(proc)
        got = frames(connect(server.url), prefix, "cam")
    finally:
        server.stop()
    assert got and min(f.capture_ts for f in got) > back - 1.0, "only frames from after the restart survive"
    assert max(f.capture_ts for f in got) > back + 3.0, "publishing did not resume"
    assert "dropping frames until it accepts them again" in log
    final = next(line for line in reversed(log.splitlines()) if "camera cam: read" in line)
    dropped = int(final.split("dropped ")[1].split(",")[0])
    assert dropped >= 15, final  # ~2 s at 20 fps went nowhere, and that is counted
    assert gone < back


def test_a_full_server_refuses_frames_which_are_dropped_and_counted(tmp_path: Path, prefix: str) -> None:
    with EmbeddedServer(tmp_path / "oom.sock", EmbeddedServerConfig(maxmemory_mb=16)) as server:
        config = write_config(
            tmp_path,
            prefix,
            """
            - name: big
              source: {kind: synthetic, width: 1280, height: 960, realtime: false}
              max_side: 1280
              jpeg_quality: 100
            """,
        )
        log = finish(ingest(config, server.url, "--max-frames", "400"), timeout=120)
    final = next(line for line in reversed(log.splitlines()) if "camera big: read" in line)
    assert "redis refused frames (Full: command not allowed when used memory" in log
    published = int(final.split("published ")[1].split(",")[0])
    dropped = int(final.split("dropped ")[1].split(",")[0])
    assert published > 0 and dropped > 0 and published + dropped == 400, final
