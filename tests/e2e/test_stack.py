"""The three services as real processes on a real embedded server: every frame pushed gets exactly one result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.wire import FIELD, Frame, encode
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

FRAMES = 12  # per camera


def stack_yaml(tmp: Path, prefix: str, *, architecture: str, fps: float = 8.0, replicas: int = 1) -> Path:
    clip = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(FRAMES):
        img = np.full((240, 320, 3), 40, np.uint8)
        cv2.rectangle(img, (20 + 10 * i, 60), (120 + 10 * i, 160), (0, 200, 255), -1)
        writer.write(img)
    writer.release()
    path = tmp / "stack.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {tmp}}}}}
        streams: {{prefix: {prefix}, frames_maxlen: 1000}}
        ingest:
          cameras:
            - name: synth
              source: {{kind: synthetic, seed: 4, width: 320, height: 240, fps: {fps}}}
              max_side: 320
            - name: clip
              source: {{kind: file, path: clip.avi}}
              encoding: bgr8
        detector:
          pools:
            - name: main
              replicas: {replicas}
              model: {{architecture: {architecture}, classes: [circle, square, triangle, "NULL"], input_size: 128}}
              max_batch: 4
              max_age_ms: null  # every frame must get a result, however slow the start
              shed_behind: null
              block_ms: 500
              score_threshold: 0.0
              max_per_class: 2
              ignore_labels: ["NULL"]
        sinks:
          - {{kind: jsonl, name: out, path: results.jsonl, block_ms: 500}}
        """)
    )
    return path


def service(name: str, config: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", name, "--config", str(config), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_frame_gets_exactly_one_result_and_bad_messages_are_dead_lettered(tmp_path: Path) -> None:
    prefix = "e2e"
    config = stack_yaml(tmp_path, prefix, architecture="yolov3")  # the full 252-layer YOLOv3
    keys = Keys(prefix)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        client: Client = connect(server.url)
        # Poison first: a message that is not msgpack, and a frame whose JPEG is corrupt.
        client.xadd(keys.frames("synth"), {FIELD: b"\x00not msgpack"})
        corrupt = Frame(
            stream="synth",
            seq=999,
            capture_ts=time.time(),
            width=320,
            height=240,
            encoding="jpeg",
            image_width=320,
            image_height=240,
            data=b"\xff\xd8\xff\xe0 truncated",
        )
        client.xadd(keys.frames("synth"), {FIELD: encode(corrupt)})

        ingest = service("ingest", config, server.url, "--max-frames", str(FRAMES))
        detector = service("detector", config, server.url, "--until-idle", "6")
        # The sink stops at the expected count (a lost frame would hold it to --duration and fail below).
        sink = service("sink", config, server.url, "--max-frames", str(2 * FRAMES), "--duration", "240")
        ingest_log = finish(ingest, 120)
        detector_log = finish(detector, 300)
        finish(sink, 300)

        assert f"camera synth: read {FRAMES}, sampled {FRAMES}, published {FRAMES}" in ingest_log
        assert f"camera clip: read {FRAMES}, sampled {FRAMES}, published {FRAMES}" in ingest_log
        got = results(tmp_path / "results.jsonl")
        per_frame = Counter((r["stream"], r["seq"]) for r in got)
        expected = {(s, i) for s in ("synth", "clip") for i in range(FRAMES)}
        assert set(per_frame) == expected
        assert set(per_frame.values()) == {1}, "a frame got more than one result"
        ids = {(r["stream"], r["frame_id"]) for r in got}  # entry ids are unique per stream
        assert len(ids) == len(got)
        for r in got:
            assert r["pool"] == "main" and r["engine"] == "tensorflow" and r["device"] == "cpu"
            assert (r["width"], r["height"]) == (320, 240)
            assert all(d["label"] != "NULL" for d in r["detections"])
            assert r["detections"], "score_threshold 0 keeps boxes: random weights still give detections"
            for d in r["detections"]:
                x0, y0, x1, y1 = d["box"]
                assert 0 <= x0 <= x1 <= 320 and 0 <= y0 <= y1 <= 240
        dead = client.xrange(keys.dead_letters())
        reasons = sorted(f[b"reason"].decode() for _, f in dead)
        assert len(reasons) == 2, reasons
        assert reasons[0].startswith("ImageError: image of")
        assert reasons[1].startswith("WireError: not a msgpack message")
        assert "dead-lettering" in detector_log
        for key in (keys.frames("synth"), keys.frames("clip")):
            assert client.xpending(key, keys.detector_group("main"))["pending"] == 0
        client.close()


def test_the_launcher_runs_the_stack_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    config = stack_yaml(tmp_path, "launch", architecture="tiny", fps=6.0, replicas=2)
    config.write_text(config.read_text().replace("ingest:\n", "ingest:\n  process_per_camera: true\n"))
    out = tmp_path / "results.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.stack.launcher", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and sum(1 for r in results(out) if r["stream"] == "synth") >= 8:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: to the whole foreground process group
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert "unavailable" not in log, "the server went away before the services drained"
    assert not (tmp_path / "launch.sock").exists()  # the embedded server was stopped
    got = results(out)
    for stream in ("synth", "clip"):
        seqs = Counter(r["seq"] for r in got if r["stream"] == stream)
        assert set(seqs.values()) == {1}, f"{stream}: duplicate results"
        # Sequence numbers are contiguous from 0: a gap would be a lost frame.
        assert set(seqs) == set(range(max(seqs) + 1)), f"{stream}: frames lost"
    assert len({r["seq"] for r in got if r["stream"] == "clip"}) == FRAMES
    assert {r["replica"] for r in got} <= {"main-0", "main-1"}
    assert "started sink-out, detector-main-0, detector-main-1, ingest-synth, ingest-clip" in log
