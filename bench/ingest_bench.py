"""Ingest throughput and memory: frames/s one ingest process sustains, and RSS per stream, at 720p and 1080p.

Inputs are H.264 files made here with the FFmpeg of ``imageio-ffmpeg`` (libx264, 25 fps, 10 s of ``testsrc2`` with
temporal noise, at a camera-like 2 Mbit/s for 720p and 4 Mbit/s for 1080p). Each scenario runs a real
``python -m ingest`` process on an embedded valkey server (unix socket); cameras are looped file sources, resized to
640 px and JPEG-encoded at quality 85. Rates come from the frames streams' ``entries-added`` (monotonic, unlike XLEN,
which MAXLEN caps), taken between two snapshots after a warm-up that starts at the first published frame; CPU from
``/proc/PID/stat`` and RSS from ``/proc/PID/status``; the process is then stopped with SIGINT and its final per-camera
counter line gives the read/published ratio.

- throughput: ``realtime: false`` (read as fast as possible), every frame sampled, 1 and 2 cameras per resolution;
- memory: ``realtime: true`` (25 fps), ``fps: 5``, K = 1 and 6 cameras of one file per resolution; RSS per stream is
  (max RSS at K=6 - max RSS at K=1) / 5; each camera should keep 5 published frames/s.

Run: ``python bench/ingest_bench.py [--quick] [--out PATH]``. Prints a table and writes
``bench/results/ingest.json``. Nothing here is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from rich.progress import track

ROOT = Path(__file__).resolve().parent.parent


def ffmpeg_exe() -> str:
    """imageio-ffmpeg's binary, imported here only: the GPU machine has no imageio-ffmpeg, and bench.video_hw
    imports this module's helpers there."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


sys.path.insert(0, str(ROOT))

from bench.machine import cpu_machine, write_report  # noqa: E402
from common.embedded import EmbeddedServer  # noqa: E402
from common.keys import Keys  # noqa: E402
from common.redis_io import REDIS_PY_VERSION, Client, connect, entries_added  # noqa: E402
from common.redis_io.settings import EmbeddedServerConfig  # noqa: E402

PREFIX = "bench"
TARGET_RSS_PER_STREAM_MB = 25.0
VIDEO_FPS = 25
VIDEO_SECONDS = 10
RESOLUTIONS: dict[str, tuple[int, int, str]] = {"720p": (1280, 720, "2M"), "1080p": (1920, 1080, "4M")}
CLK_TCK = os.sysconf("SC_CLK_TCK")
COUNTER_LINE = re.compile(
    r"camera (?P<name>\S+): read (?P<read>\d+), sampled (?P<sampled>\d+), published (?P<published>\d+), "
    r"dropped (?P<dropped>\d+), skipped (?P<skipped>\d+), reconnects (?P<reconnects>\d+)"
)


@dataclass(frozen=True)
class Timing:
    """How long each phase of a scenario lasts, in seconds (``--quick`` shortens them)."""

    throughput_warmup_s: float
    throughput_window_s: float
    rss_rate_from_s: float
    rss_warmup_s: float
    rss_sample_s: float


FULL = Timing(
    throughput_warmup_s=3.0, throughput_window_s=13.0, rss_rate_from_s=3.0, rss_warmup_s=8.0, rss_sample_s=4.0
)
QUICK = Timing(
    throughput_warmup_s=2.0, throughput_window_s=4.0, rss_rate_from_s=2.0, rss_warmup_s=4.0, rss_sample_s=2.0
)


# ---------------------------------------------------------------------------------------------------- inputs
def make_video(path: Path, width: int, height: int, bitrate: str) -> dict[str, Any]:
    """An H.264 file with moving content and sensor-like noise, at a camera-like constant bitrate."""
    source = f"testsrc2=size={width}x{height}:rate={VIDEO_FPS}:duration={VIDEO_SECONDS},noise=alls=10:allf=t"
    cmd = [
        ffmpeg_exe(),
        *("-y", "-loglevel", "error", "-f", "lavfi", "-i", source),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        *("-b:v", bitrate, "-maxrate", bitrate, "-bufsize", "8M", str(path)),
    ]
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    return {
        "width": width,
        "height": height,
        "fps": VIDEO_FPS,
        "seconds": VIDEO_SECONDS,
        "codec": "h264 (libx264 veryfast, yuv420p, default GOP)",
        "bitrate_kbit_s": round(path.stat().st_size * 8 / VIDEO_SECONDS / 1000),
        "encode_s": round(time.monotonic() - started, 1),
    }


# ---------------------------------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces: cut after it
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat


def status_field(pid: int, name: str) -> int:
    """An integer field of /proc/PID/status (VmRSS and VmHWM are in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise KeyError(f"{name} not in /proc/{pid}/status")


# ---------------------------------------------------------------------------------------------------- one run
@dataclass
class Snapshot:
    at: float
    added: dict[str, int]
    ingest_cpu_s: float
    server_cpu_s: float


def snapshot(client: Client, cameras: list[str], pid: int, server_pid: int) -> Snapshot:
    keys = Keys(PREFIX)
    return Snapshot(
        at=time.monotonic(),
        added={c: entries_added(client, keys.frames(c)) for c in cameras},
        ingest_cpu_s=cpu_seconds(pid),
        server_cpu_s=cpu_seconds(server_pid),
    )


def write_config(
    path: Path, video: Path, cameras: list[str], realtime: bool, fps: float | None, source: str = "",
    frames_maxlen: int = 1000,
) -> None:  # fmt: skip
    """Cameras reading ``video`` in a loop (``source``: more of their source's settings, ", key: value" each)."""
    rate = f", fps: {fps:g}" if fps is not None else ""
    items = "".join(
        f"    - {{name: {name}, source: {{kind: file, path: '{video}', loop: true, realtime: {str(realtime).lower()}"
        f"{source}}}, max_side: 640, jpeg_quality: 85{rate}}}\n"
        for name in cameras
    )
    path.write_text(
        textwrap.dedent(f"""\
            streams: {{prefix: {PREFIX}, frames_maxlen: {frames_maxlen}}}
            ingest:
              stats_interval_s: 1000
              max_lag: null  # no detector here: a file read flat out, not paced by one
              cameras:
            """)
        + items
    )


def run_scenario(
    server: EmbeddedServer,
    tmp: Path,
    video: Path,
    *,
    label: str,
    n_cameras: int,
    realtime: bool,
    fps: float | None,
    rate_from_s: float,
    rss_from_s: float,
    until_s: float,
) -> dict[str, Any]:
    """One ingest process; times are counted from its first published frame. Returns rates, CPU, RSS, counters."""
    client = connect(server.url)
    client.flushall()
    server_pid = int(client.info("server")["process_id"])
    cameras = [f"cam{i}" for i in range(n_cameras)]
    config = tmp / f"{label}.yaml"
    write_config(config, video, cameras, realtime, fps)
    log_path = tmp / f"{label}.log"
    env = {**os.environ, "REDIS_URL": server.url}
    # --duration is a safety cap only: the process is stopped with SIGINT once measured (a normal drain).
    cmd = [sys.executable, "-m", "ingest", "--config", str(config), "--duration", str(until_s + 60), "--drain", "6"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        launched = time.monotonic()
        try:
            while sum(entries_added(client, Keys(PREFIX).frames(c)) for c in cameras) == 0:
                if proc.poll() is not None or time.monotonic() - launched > 60:
                    raise RuntimeError(f"{label}: ingest published nothing; its log:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.05)
            first = time.monotonic()
            startup_s = first - launched
            time.sleep(max(0.0, first + rate_from_s - time.monotonic()))
            start = snapshot(client, cameras, proc.pid, server_pid)
            time.sleep(max(0.0, first + rss_from_s - time.monotonic()))
            rss_kb: list[int] = []
            while time.monotonic() < first + until_s:
                rss_kb.append(status_field(proc.pid, "VmRSS"))
                time.sleep(0.25)
            end = snapshot(client, cameras, proc.pid, server_pid)
            threads = status_field(proc.pid, "Threads")
            hwm_kb = status_field(proc.pid, "VmHWM")
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    client.close()
    log = log_path.read_text(errors="replace")
    counters: dict[str, dict[str, int]] = {}
    for match in COUNTER_LINE.finditer(log):  # the last line per camera is the one logged on exit
        counters[match["name"]] = {k: int(v) for k, v in match.groupdict().items() if k != "name"}
    if rc != 0 or set(counters) != set(cameras):
        raise RuntimeError(f"{label}: ingest exited with {rc} or logged no final counters:\n{log[-3000:]}")
    wall = end.at - start.at
    per_camera_fps = {c: (end.added[c] - start.added[c]) / wall for c in cameras}
    published_fps = sum(per_camera_fps.values())
    read = sum(c["read"] for c in counters.values())
    published = sum(c["published"] for c in counters.values())
    result: dict[str, Any] = {
        "cameras": n_cameras,
        "startup_s": round(startup_s, 2),
        "window_s": round(wall, 2),
        "published_fps": round(published_fps, 1),
        "published_fps_per_camera": {c: round(v, 2) for c, v in per_camera_fps.items()},
        "ingest_cpu_cores": round((end.ingest_cpu_s - start.ingest_cpu_s) / wall, 2),
        "server_cpu_cores": round((end.server_cpu_s - start.server_cpu_s) / wall, 2),
        "rss_mb": round(max(rss_kb) / 1024, 1),
        "rss_min_mb": round(min(rss_kb) / 1024, 1),
        "rss_peak_hwm_mb": round(hwm_kb / 1024, 1),
        "threads": threads,
        "final_counters": counters,
        "dropped_total": sum(c["dropped"] for c in counters.values()),
        "skipped_total": sum(c["skipped"] for c in counters.values()),
    }
    # Frames read per frame published, over the whole run, scales the window's published rate to a read rate.
    result["read_fps_est"] = round(published_fps * read / published, 1) if published else None
    return result


# ---------------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    # OpenCV's FFmpeg backend sizes its decoder thread pool from its CPU count.
    return cpu_machine(opencv_cpus=str(cv2.getNumberOfCPUs()), redis_py=REDIS_PY_VERSION)


def print_table(throughput: list[dict[str, Any]], memory: list[dict[str, Any]], per_stream: dict[str, Any]) -> None:
    print(
        f"\n{'scenario':<21}{'pub fps':>9}{'read fps':>10}{'/cam':>7}{'cpu':>6}{'srv cpu':>8}{'rss MB':>8}{'drop':>7}"
    )
    for r in throughput + memory:
        per_cam = min(r["published_fps_per_camera"].values())
        print(
            f"{r['scenario']:<21}{r['published_fps']:>9}{r['read_fps_est']!s:>10}{per_cam:>7.2f}"
            f"{r['ingest_cpu_cores']:>6}{r['server_cpu_cores']:>8}{r['rss_mb']:>8}{r['dropped_total']:>7}"
        )
    print("(/cam: slowest camera's published fps; cpu: cores used by the ingest process, srv: by valkey)")
    print(f"\n{'input':<8}{'base RSS K=1 MB':>17}{'RSS K=6 MB':>12}{'per stream MB':>15}{'target':>8}{'meets':>7}")
    for res, row in per_stream.items():
        print(
            f"{res:<8}{row['base_rss_mb']:>17}{row['rss_k6_mb']:>12}{row['rss_per_stream_mb']:>15}"
            f"{TARGET_RSS_PER_STREAM_MB:>8g}{row['meets_target']!s:>7}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter warm-ups and windows")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/ingest.json")
    args = p.parse_args()
    timing = QUICK if args.quick else FULL
    started = time.monotonic()
    throughput: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    per_stream: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ingestbench") as tmp_name:
        tmp = Path(tmp_name)
        videos: dict[str, Path] = {}
        for res, (width, height, bitrate) in RESOLUTIONS.items():
            videos[res] = tmp / f"{res}.mp4"
            inputs[res] = make_video(videos[res], width, height, bitrate)
            print(f"input {res}: {json.dumps(inputs[res])}", flush=True)
        with EmbeddedServer(tmp / "b.sock", EmbeddedServerConfig(maxmemory_mb=4096)) as server:
            for res, video in track(list(videos.items()), description="throughput"):
                for n in (1, 2):
                    label = f"throughput-{res}-{n}cam"
                    row = run_scenario(
                        server,
                        tmp,
                        video,
                        label=label,
                        n_cameras=n,
                        realtime=False,
                        fps=None,
                        rate_from_s=timing.throughput_warmup_s,
                        rss_from_s=timing.throughput_warmup_s,
                        until_s=timing.throughput_warmup_s + timing.throughput_window_s,
                    )
                    throughput.append({"scenario": label, "input": res, **row})
                    print(json.dumps(throughput[-1]), flush=True)
            for res, video in track(list(videos.items()), description="memory"):
                rss: dict[int, dict[str, Any]] = {}
                for n in (1, 6):
                    label = f"memory-{res}-{n}cam"
                    row = run_scenario(
                        server,
                        tmp,
                        video,
                        label=label,
                        n_cameras=n,
                        realtime=True,
                        fps=5,
                        rate_from_s=timing.rss_rate_from_s,
                        rss_from_s=timing.rss_warmup_s,
                        until_s=timing.rss_warmup_s + timing.rss_sample_s,
                    )
                    slowest = min(row["published_fps_per_camera"].values())
                    row["kept_rate"] = slowest >= 4.5  # 5 fps sampled from 25: allow for the window's edges
                    rss[n] = row
                    memory.append({"scenario": label, "input": res, "sample_fps": 5, **row})
                    print(json.dumps(memory[-1]), flush=True)
                per = (rss[6]["rss_mb"] - rss[1]["rss_mb"]) / 5
                per_stream[res] = {
                    "base_rss_mb": rss[1]["rss_mb"],
                    "rss_k6_mb": rss[6]["rss_mb"],
                    "rss_per_stream_mb": round(per, 1),
                    "threads_per_stream": round((rss[6]["threads"] - rss[1]["threads"]) / 5, 1),
                    "target_rss_per_stream_mb": TARGET_RSS_PER_STREAM_MB,
                    "meets_target": per <= TARGET_RSS_PER_STREAM_MB,
                    "all_streams_kept_5_fps": bool(rss[1]["kept_rate"] and rss[6]["kept_rate"]),
                }
    print_table(throughput, memory, per_stream)
    report = {
        "what": "ingest: frames/s one process sustains, and RSS per stream, for H.264 720p and 1080p file input",
        "method": (
            "A real `python -m ingest` process on an embedded valkey server per scenario, looped H.264 files resized "
            "to 640 px and JPEG-encoded (q85); rates from the frames streams' entries-added between snapshots after "
            "a warm-up from the first published frame, CPU from /proc/PID/stat, RSS = max VmRSS sampled every 0.25 s. "
            "Throughput: realtime false, every frame published, 1 and 2 cameras. Memory: realtime true, fps 5, "
            "K = 1 and 6 cameras; RSS per stream = (RSS(K=6) - RSS(K=1)) / 5."
        ),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "machine": machine(),
        "timing_s": timing.__dict__,
        "inputs": inputs,
        "camera": {"max_side": 640, "encoding": "jpeg", "jpeg_quality": 85, "frames_maxlen": 1000},
        "target_rss_per_stream_mb": TARGET_RSS_PER_STREAM_MB,
        "meets_target": all(r["meets_target"] for r in per_stream.values()),
        "rss_per_stream": per_stream,
        "throughput": throughput,
        "memory": memory,
    }
    write_report(args.out, report, started)


if __name__ == "__main__":
    main()
