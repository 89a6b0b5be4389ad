"""A camera's ingest cost: CPU cores per camera for H.264 720p and 1080p at 25 fps, sampled to 5 and to 1 fps, with
OpenCV's decoder (every frame decoded) and PyAV's with ``keyframes_only: auto`` (keyframes alone, when they come at
least once per sampling interval).

Inputs are H.264 files made here with PyAV's libx264 (25 fps, a keyframe every second: GOP 25, no scene-cut
keyframes; 20 s of the synthetic scene, ``common.scenes.Scene``, with sensor-like temporal noise; a camera-like
constant bitrate: 2 Mbit/s at 720p, 4 Mbit/s at 1080p, VBV buffer of one second; and 1080p at 2 Mbit/s, sampled to
1 fps only, whose smaller keyframes show what a keyframe's size costs). Each case runs a real
``python -m ingest`` process on an embedded valkey server (unix socket) with N cameras on that file (``realtime:
true`` so frames come at 25 fps as from a camera, ``loop: true``, resized to 640 px, JPEG 85, one decoder thread);
its CPU comes from ``/proc/PID/stat`` over a window that starts a few seconds after its first published frame
(PyAV decodes everything for its first two keyframe gaps), published frames from the streams' ``entries-added``.
In-process micro-timings (one thread) split a frame's cost: decoding every frame, a keyframe alone, the BGR
conversion, and preparation (resize and JPEG), which gives the JPEG share of each case.

Run: ``python bench/camera_cost.py [--quick] [--cameras N] [--out PATH]``. Prints a table and writes
``bench/results/camera_cost.json``. Nothing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import COUNTER_LINE, cpu_seconds, status_field, write_config  # noqa: E402
from bench.machine import cpu_machine, write_report  # noqa: E402
from common.config import CameraConfig  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import Client, connect, entries_added  # noqa: E402
from common.redis_io.settings import EmbeddedServerConfig  # noqa: E402
from common.scenes import Scene  # noqa: E402
from ingest.prepare import make_frame  # noqa: E402
from ingest.sources.synthetic import SyntheticSourceConfig  # noqa: E402

PREFIX = "cc"
VIDEO_FPS = 25
GOP = 25  # a keyframe every second
# name: (width, height, bitrate, sampling rates). A keyframe decoded alone costs about its size (CABAC): the extra
# 1080p input at half the bitrate, whose keyframes are half the size, shows how the 1 fps cost follows it.
INPUTS: dict[str, tuple[int, int, str, tuple[float, ...]]] = {
    "720p": (1280, 720, "2M", (5.0, 1.0)),
    "1080p": (1920, 1080, "4M", (5.0, 1.0)),
    "1080p-2Mbit": (1920, 1080, "2M", (1.0,)),
}
DECODERS: dict[str, dict[str, str]] = {
    "opencv": {"decoder": "opencv"},
    "pyav-keyframes": {"decoder": "pyav", "keyframes_only": "auto"},
}
TARGET_CORES = 0.02  # per 1080p camera at 1 fps with a keyframe every second


@dataclass(frozen=True)
class Timing:
    video_s: int
    warmup_s: float  # from the first published frame: start-up, and PyAV's two keyframe gaps of proof
    window_s: float


FULL = Timing(video_s=20, warmup_s=4.0, window_s=12.0)
QUICK = Timing(video_s=10, warmup_s=3.0, window_s=5.0)


# ---------------------------------------------------------------------------------------------------- inputs
def make_video(path: Path, width: int, height: int, bitrate: str, seconds: int) -> dict[str, Any]:
    """The synthetic scene with temporal noise (a sensor's), H.264 at a camera's constant bitrate, GOP 25."""
    scene = Scene(11, width, height, shapes=4)
    rng = np.random.default_rng(5)
    noise = [rng.normal(0, 3, (height, width, 1)).astype(np.int16) for _ in range(7)]
    started = time.monotonic()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0",
                          "b": bitrate, "maxrate": bitrate, "bufsize": bitrate}  # fmt: skip
        for i in range(seconds * VIDEO_FPS):
            image = np.clip(scene.render(i).astype(np.int16) + noise[i % len(noise)], 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        sizes = [(p.size, p.is_keyframe) for p in container.demux(video=0) if p.size]
    keys = [s for s, k in sizes if k]
    others = [s for s, k in sizes if not k]
    return {
        "width": width,
        "height": height,
        "fps": VIDEO_FPS,
        "seconds": seconds,
        "gop": GOP,
        "codec": "h264 (libx264 veryfast, yuv420p, B-frames, CBR with a 1 s VBV buffer)",
        "bitrate_kbit_s": round(path.stat().st_size * 8 / seconds / 1000),
        "keyframes": len(keys),
        "keyframe_kb": round(sum(keys) / len(keys) / 1000, 1),
        "other_frame_kb": round(sum(others) / len(others) / 1000, 1),
        "encode_s": round(time.monotonic() - started, 1),
    }


# ---------------------------------------------------------------------------------------------------- in-process
def micro(path: Path) -> dict[str, float]:
    """Milliseconds of CPU (one thread) per frame for each step, on this file."""
    out: dict[str, float] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        started, n = time.process_time(), 0
        for _ in container.decode(stream):
            n += 1
        out["pyav_decode_every_frame_ms"] = (time.process_time() - started) * 1000 / n
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = 1
        started, frames = time.process_time(), []
        for packet in container.demux(stream):
            if packet.size and packet.is_keyframe:
                frames += context.decode(packet) + context.decode(None)
                context.flush_buffers()
        out["pyav_decode_keyframe_alone_ms"] = (time.process_time() - started) * 1000 / len(frames)
        started = time.process_time()
        images = [f.to_ndarray(format="bgr24") for f in frames]
        out["pyav_to_bgr_ms"] = (time.process_time() - started) * 1000 / len(frames)
    with av.open(str(path)) as container:
        started = time.process_time()
        count = sum(1 for _ in container.demux(video=0))
        out["demux_per_packet_ms"] = (time.process_time() - started) * 1000 / count
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    started, n = time.process_time(), 0
    while capture.grab():
        n += 1
    out["opencv_grab_every_frame_ms"] = (time.process_time() - started) * 1000 / n
    capture.release()
    camera = CameraConfig(name="c", source=SyntheticSourceConfig(), max_side=640, jpeg_quality=85)
    started = time.process_time()
    for i, image in enumerate(images):
        make_frame(camera, image, i, time.time())
    out["prepare_resize_jpeg_ms"] = (time.process_time() - started) * 1000 / len(images)
    return {k: round(v, 2) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------- one case
def added(client: Client, cameras: list[str]) -> dict[str, int]:
    return {c: entries_added(client, Keys(PREFIX).frames(c)) for c in cameras}


def run_case(server: EmbeddedServer, tmp: Path, video: Path, label: str, n: int, fps: float,
             decoder: dict[str, str], timing: Timing) -> dict[str, Any]:  # fmt: skip
    """One ingest process with n cameras; rates and CPU over the window after the warm-up."""
    client = connect(server.url)
    client.flushall()
    server_pid = int(client.info("server")["process_id"])
    cameras = [f"cam{i}" for i in range(n)]
    config = tmp / f"{label}.yaml"
    extra = "".join(f", {k}: {v}" for k, v in decoder.items())
    write_config(config, video, cameras, True, fps, extra, frames_maxlen=200)
    log_path = tmp / f"{label}.log"
    env = {**os.environ, "REDIS_URL": server.url}
    until = timing.warmup_s + timing.window_s
    cmd = [sys.executable, "-m", "ingest", "--config", str(config), "--duration", str(until + 60), "--drain", "5"]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        launched = time.monotonic()
        try:
            while sum(added(client, cameras).values()) == 0:
                if proc.poll() is not None or time.monotonic() - launched > 60:
                    raise RuntimeError(f"{label}: ingest published nothing:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.05)
            first = time.monotonic()
            time.sleep(max(0.0, first + timing.warmup_s - time.monotonic()))
            t0, a0, c0, s0 = time.monotonic(), added(client, cameras), cpu_seconds(proc.pid), cpu_seconds(server_pid)
            time.sleep(timing.window_s)
            t1, a1, c1, s1 = time.monotonic(), added(client, cameras), cpu_seconds(proc.pid), cpu_seconds(server_pid)
            rss_mb = status_field(proc.pid, "VmRSS") / 1024
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    client.close()
    log = log_path.read_text(errors="replace")
    counters = {
        m["name"]: {k: int(v) for k, v in m.groupdict().items() if k != "name"} for m in COUNTER_LINE.finditer(log)
    }
    if rc != 0 or set(counters) != set(cameras):
        raise RuntimeError(f"{label}: ingest exited with {rc} or logged no final counters:\n{log[-3000:]}")
    wall = t1 - t0
    per_camera = [(a1[c] - a0[c]) / wall for c in cameras]
    cores = (c1 - c0) / wall
    read = sum(c["read"] for c in counters.values())
    sampled = sum(c["sampled"] for c in counters.values())
    return {
        "cameras": n,
        "window_s": round(wall, 2),
        "published_fps_per_camera": round(sum(per_camera) / n, 2),
        "published_fps_slowest_camera": round(min(per_camera), 2),
        "ingest_cores": round(cores, 3),
        "cores_per_camera": round(cores / n, 4),
        "server_cores": round((s1 - s0) / wall, 3),
        "rss_mb": round(rss_mb, 1),
        # Frames grabbed per frame sampled over the whole run: 25 / fps when every frame is read; PyAV reading
        # keyframes alone grabs only those (after its first two seconds of proof).
        "grabbed_per_sampled": round(read / sampled, 2) if sampled else None,
        "dropped": sum(c["dropped"] for c in counters.values()),
        "skipped": sum(c["skipped"] for c in counters.values()),
    }


# ---------------------------------------------------------------------------------------------------- report
def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'input':<7}{'sample':>7}{'decoder':>16}{'pub fps/cam':>12}{'cores':>7}{'cores/cam':>10}"
          f"{'jpeg share':>11}{'grab/sample':>12}")  # fmt: skip
    for r in rows:
        print(
            f"{r['input']:<7}{r['sample_fps']:>7g}{r['decoder']:>16}{r['published_fps_per_camera']:>12}"
            f"{r['ingest_cores']:>7}{r['cores_per_camera']:>10}{r['jpeg_share']:>11.0%}{r['grabbed_per_sampled']!s:>12}"
        )
    print("(cores: the ingest process, all cameras; jpeg share: resize + JPEG, from the micro-timings)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter videos and windows")
    p.add_argument("--cameras", type=int, default=8, help="cameras per ingest process (default 8)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/camera_cost.json")
    args = p.parse_args()
    timing = QUICK if args.quick else FULL
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    steps: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cameracost") as tmp_name:
        tmp = Path(tmp_name)
        videos: dict[str, Path] = {}
        for res, (width, height, bitrate, _) in INPUTS.items():
            videos[res] = tmp / f"{res}.mp4"
            inputs[res] = make_video(videos[res], width, height, bitrate, timing.video_s)
            steps[res] = micro(videos[res])
            print(f"input {res}: {json.dumps(inputs[res])}\n  one thread, ms per frame: {json.dumps(steps[res])}",
                  flush=True)  # fmt: skip
        with EmbeddedServer(tmp / "c.sock", EmbeddedServerConfig(maxmemory_mb=2048)) as server:
            for res, video in videos.items():
                for fps in INPUTS[res][3]:
                    for name, decoder in DECODERS.items():
                        label = f"{res}-{fps:g}fps-{name}"
                        row = run_case(server, tmp, video, label, args.cameras, fps, decoder, timing)
                        prepare_s = row["published_fps_per_camera"] * steps[res]["prepare_resize_jpeg_ms"] / 1000
                        row = {"case": label, "input": res, "sample_fps": fps, "decoder": name, **row,
                               "jpeg_share": round(prepare_s / row["cores_per_camera"], 3)}  # fmt: skip
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    print_table(rows)
    target_row = next(r for r in rows if r["case"] == "1080p-1fps-pyav-keyframes")
    met = target_row["cores_per_camera"] <= TARGET_CORES
    print(f"target: <= {TARGET_CORES} cores per 1080p camera at 1 fps (keyframe every second): "
          f"{target_row['cores_per_camera']} -> {'met' if met else 'NOT met'}")  # fmt: skip
    report = {
        "what": "ingest CPU cores per camera, H.264 25 fps, sampled to 5 and 1 fps, OpenCV (every frame decoded) "
        "vs PyAV with keyframes_only auto",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "machine": cpu_machine(pyav=av.__version__, pyav_libavcodec=str(av.library_versions["libavcodec"])),
        "timing_s": timing.__dict__,
        "inputs": inputs,
        "ms_per_frame_one_thread": steps,
        "camera": {
            "max_side": 640,
            "encoding": "jpeg",
            "jpeg_quality": 85,
            "decoder_threads": 1,
            "realtime": True,
            "loop": True,
        },
        "target_cores_per_1080p_camera_at_1fps": TARGET_CORES,
        "target_met": met,
        "cases": rows,
    }
    write_report(args.out, report, started)


if __name__ == "__main__":
    main()
