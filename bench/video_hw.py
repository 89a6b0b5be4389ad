"""Hardware video decoding (NVIDIA NVDEC) against software decoding of camera-like H.264, through PyAV: CPU per
frame, frames per second of one stream, and how many 25 fps camera streams the GPU's decoders carry at once.

Inputs are made here with ``bench.camera_cost.make_video`` (PyAV's libx264, 25 fps, GOP 25, CBR 2 Mbit/s at 720p and
4 Mbit/s at 1080p, the synthetic scene with sensor-like noise). A file's packets are demuxed into memory first, so
every timing is decoding alone (plus the BGR conversion where said), one decoder thread, in this process: CPU from
``time.process_time()`` (all its threads), wall from ``time.perf_counter()``. Each decoder decodes the first GOP
before it is timed (device and decoder set-up). Software: FFmpeg's h264 decoder as the ingest's PyAV source runs it
(``thread_count = 1``), every frame, and keyframes alone (``skip_frame = "NONKEY"``, all packets fed). Hardware, both
ways PyAV offers: its hwaccel API (``av.open(path, hwaccel=HWAccel(device_type="cuda",
allow_software_fallback=False))``: FFmpeg's h264 decoder parses, NVDEC decodes, each frame is copied back to system
memory as NV12) and FFmpeg's ``h264_cuvid`` decoder by name (``av.CodecContext.create("h264_cuvid", "r")`` with the
stream's extradata, fed the packets; its frames come back as NV12 too). A way that fails is recorded with the
exception and FFmpeg's log lines. For each that works: the BGR conversion (``to_ndarray(format="bgr24")``, a CPU
colour conversion) alone, the frames' mean absolute difference from the software decoder's (first 25 frames, BGR),
and K decoders in K threads of this process (PyAV releases the GIL while decoding) looping the 1080p packets for a
few seconds: frames per second in all, CPU cores, and ``nvidia-smi``'s ``utilization.decoder`` every 0.5 s.

Run: ``python -m bench.video_hw [--quick] [--out PATH]``. Prints tables and writes ``bench/results/video_hw.json``.
Nothing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.logging
import numpy as np
from av.container import InputContainer
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.camera_cost import GOP, VIDEO_FPS, make_video  # noqa: E402
from bench.gpu_bench import GpuUtilisation  # noqa: E402
from bench.machine import cpu_machine, write_report  # noqa: E402

INPUTS: dict[str, tuple[int, int, str]] = {"720p": (1280, 720, "2M"), "1080p": (1920, 1080, "4M")}
CONCURRENT_INPUT = "1080p"
HARDWARE = ("hwaccel", "cuvid")
HWACCEL_CALL = 'av.open(path, hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False))'
CUVID_CALL = 'av.CodecContext.create("h264_cuvid", "r"), extradata from the stream, fed its packets'
MATCH_FRAMES = 25  # compared with the software decoder's, in BGR
KEEP_FRAMES = 50  # decoded frames kept to time the BGR conversion alone


@dataclass(frozen=True)
class Timing:
    video_s: int
    streams: tuple[int, ...]  # concurrent hardware decoders
    warmup_s: float  # after the K decoders start, before the window
    window_s: float


FULL = Timing(video_s=10, streams=(1, 4, 16), warmup_s=0.5, window_s=5.0)
QUICK = Timing(video_s=3, streams=(1, 4), warmup_s=0.5, window_s=2.0)


# ---------------------------------------------------------------------------------------------------- decoders
class Decoder:
    """One decoder on a file, one thread: ``software``, ``hwaccel`` (PyAV's API, CUDA) or ``cuvid`` (FFmpeg's
    h264_cuvid); the file's packets are demuxed into ``packets``, and the first GOP is decoded at once."""

    def __init__(self, path: Path, way: str) -> None:
        self.way = way
        if way == "hwaccel":
            from av.codec.hwaccel import HWAccel

            self.container: InputContainer = av.open(
                str(path), hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False)
            )
        else:
            self.container = av.open(str(path))
        try:
            self._set_up()
        except BaseException:
            self.container.close()
            raise

    def _set_up(self) -> None:
        """Demux the packets, make the codec context, decode the first GOP (device and decoder set-up)."""
        stream = self.container.streams.video[0]
        self.packets: list[Packet[Any]] = [p for p in self.container.demux(stream) if p.size]
        context = stream.codec_context
        if self.way == "cuvid":
            created = av.CodecContext.create("h264_cuvid", "r")
            if not isinstance(created, VideoCodecContext):
                raise TypeError(f"h264_cuvid gave a {type(created).__name__}, not a video codec context")
            created.extradata = context.extradata
            context = created
        context.thread_count = 1
        self.context: VideoCodecContext = context
        frames = [f for p in [*self.packets[:GOP], None] for f in self.context.decode(p)]
        self.context.flush_buffers()
        if not frames:
            raise RuntimeError("no frame decoded from the first GOP")
        self.frame_format = frames[0].format.name
        self.is_hwaccel: bool | None = getattr(self.context, "is_hwaccel", None)
        if self.way == "hwaccel" and (self.is_hwaccel is False or self.frame_format == "yuv420p"):
            raise RuntimeError(f"decoded in software (is_hwaccel {self.is_hwaccel}, frames {self.frame_format}): "
                               "this FFmpeg has no CUDA hardware config for h264")  # fmt: skip

    def close(self) -> None:
        self.container.close()


def describe(exc: BaseException, logs: list[tuple[int, str, str]]) -> str:
    """The exception as raised, and FFmpeg's log lines (warnings and worse) while it happened."""
    lines = list(dict.fromkeys(f"[{name}] {message.strip()}" for _, name, message in logs if message.strip()))
    text = f"{type(exc).__name__}: {exc}"
    return text + (f" | FFmpeg log: {'; '.join(lines[-6:])}" if lines else "")


def attempt(path: Path, way: str) -> tuple[Decoder | None, str | None]:
    """A decoder of this way on this file, or None and why not."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            try:
                return Decoder(path, way), None
            except Exception as exc:  # whatever PyAV, FFmpeg or the driver raise: the reason is the result
                return None, describe(exc, logs)
    finally:
        av.logging.set_level(level)


# ---------------------------------------------------------------------------------------------------- one stream
@dataclass
class Pass:
    frames: int
    cpu_s: float
    wall_s: float
    kept: list[VideoFrame]


def timed_pass(decoder: Decoder, bgr: bool, keep: int = 0) -> Pass:
    """Every packet (then the drain) through the decoder, frames converted to BGR or not; the decoder is reset."""
    kept: list[VideoFrame] = []
    frames = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for packet in [*decoder.packets, None]:
        for frame in decoder.context.decode(packet):
            if bgr:
                frame.to_ndarray(format="bgr24")
            elif len(kept) < keep:
                kept.append(frame)
            frames += 1
    result = Pass(frames, time.process_time() - cpu, time.perf_counter() - wall, kept)
    decoder.context.flush_buffers()
    return result


def bgr_ms(frames: list[VideoFrame]) -> float | None:
    """CPU milliseconds per frame of the BGR conversion alone."""
    if not frames:
        return None
    cpu = time.process_time()
    for frame in frames:
        frame.to_ndarray(format="bgr24")
    return round((time.process_time() - cpu) * 1000 / len(frames), 3)


def measure(decoder: Decoder, sample_fps: float) -> dict[str, Any]:
    """Decode alone and with BGR: CPU per frame, wall frames/s, cores per camera sampled at ``sample_fps``."""
    plain = timed_pass(decoder, bgr=False, keep=KEEP_FRAMES)
    with_bgr = timed_pass(decoder, bgr=True)
    per_frame = plain.cpu_s / max(plain.frames, 1)
    per_frame_bgr = with_bgr.cpu_s / max(with_bgr.frames, 1)
    return {
        "frames": plain.frames,
        "frame_format": decoder.frame_format,
        "cpu_ms_per_frame": round(per_frame * 1000, 3),
        "cpu_ms_per_frame_with_bgr": round(per_frame_bgr * 1000, 3),
        "bgr_ms_per_frame": bgr_ms(plain.kept),
        "wall_fps": round(plain.frames / plain.wall_s, 1) if plain.wall_s else None,
        "wall_fps_with_bgr": round(with_bgr.frames / with_bgr.wall_s, 1) if with_bgr.wall_s else None,
        "sample_fps": sample_fps,
        "cores_per_camera": round(per_frame_bgr * sample_fps, 4),
        "cores_per_camera_decode_only": round(per_frame * sample_fps, 4),
        "_kept": plain.kept,
    }


def difference(frames: list[VideoFrame], reference: list[np.ndarray]) -> dict[str, float | int] | None:
    """Mean absolute difference (0-255) of the first frames in BGR from the software decoder's."""
    pairs = list(zip(frames[:MATCH_FRAMES], reference[:MATCH_FRAMES], strict=False))
    if not pairs:
        return None
    diffs = [float(np.abs(f.to_ndarray(format="bgr24").astype(np.int16) - r).mean()) for f, r in pairs]
    return {"frames": len(diffs), "mean": round(sum(diffs) / len(diffs), 3), "max": round(max(diffs), 3)}


# ---------------------------------------------------------------------------------------------------- K at once
def decoder_load(util: GpuUtilisation) -> dict[str, Any]:
    """NVDEC's load over a window, from nvidia-smi's ``utilization.decoder`` samples."""
    if util.exe is None:
        return {"decoder_util_mean": None, "decoder_util_max": None, "smi_samples": None, "smi": "missing"}
    s = util.column("decoder")
    return {
        "decoder_util_mean": round(sum(s) / len(s), 1) if s else None,
        "decoder_util_max": max(s) if s else None,
        "smi_samples": len(s),
    }


def smi(args: list[str]) -> str:
    """nvidia-smi's output, or '' when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ""
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@contextmanager
def opened(path: Path, way: str, k: int) -> Iterator[list[Decoder]]:
    """K decoders of this way on this file (each its own device context), closed after."""
    decoders: list[Decoder] = []
    try:
        for _ in range(k):
            decoders.append(Decoder(path, way))
        yield decoders
    finally:
        for decoder in decoders:
            decoder.close()


def concurrent(path: Path, way: str, k: int, timing: Timing) -> dict[str, Any]:
    """K decoders in K threads looping the file's packets: frames/s in all and per stream, CPU, NVDEC load."""
    started = time.monotonic()
    row: dict[str, Any] = {"input": CONCURRENT_INPUT, "way": way, "streams": k}
    try:
        with opened(path, way, k) as decoders:
            row["open_s_per_decoder"] = round((time.monotonic() - started) / k, 3)
            counts = [0] * k
            errors: list[str] = []
            stop = threading.Event()
            barrier = threading.Barrier(k + 1)

            def work(i: int, decoder: Decoder) -> None:
                barrier.wait()
                try:
                    while not stop.is_set():
                        for packet in decoder.packets:
                            counts[i] += len(decoder.context.decode(packet))
                            if stop.is_set():
                                break
                except Exception as exc:  # a stream that fails is counted, the others go on
                    errors.append(f"stream {i}: {type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=work, args=(i, d), daemon=True) for i, d in enumerate(decoders)]
            for thread in threads:
                thread.start()
            barrier.wait()
            time.sleep(timing.warmup_s)
            util = GpuUtilisation().start()
            c0, p0, t0 = list(counts), time.process_time(), time.perf_counter()
            time.sleep(timing.window_s)
            c1, p1, t1 = list(counts), time.process_time(), time.perf_counter()
            util.stop()
            stop.set()
            for thread in threads:
                thread.join(30)
    except Exception as exc:  # opening K decoders can fail where one works (device memory, NVDEC sessions)
        return {**row, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    wall = t1 - t0
    per_stream = [(b - a) / wall for a, b in zip(c0, c1, strict=True)]
    fps = sum(per_stream)
    cores = (p1 - p0) / wall
    return {
        **row,
        "status": "ok" if not errors else "errors",
        "window_s": round(wall, 2),
        "frames": sum(c1) - sum(c0),
        "fps_total": round(fps, 1),
        "fps_slowest_stream": round(min(per_stream), 1),
        "cameras_at_25fps": round(fps / VIDEO_FPS, 1),
        "cores": round(cores, 3),
        "cpu_ms_per_frame": round(cores * 1000 / fps, 3) if fps else None,
        "cores_per_camera_25fps": round(cores / fps * VIDEO_FPS, 4) if fps else None,
        **decoder_load(util),
        "errors": errors[:4],
    }


# ---------------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """The CPU benchmarks' fields, PyAV and FFmpeg's versions, its hardware device types and cuvid decoders, GPU."""
    from av.codec.hwaccel import hwdevices_available

    libs = {f"pyav_{name}": ".".join(map(str, v)) for name, v in av.library_versions.items()}
    gpu = smi(["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]).strip()
    return {
        **cpu_machine(pyav=av.__version__, **libs),
        "ffmpeg_hwdevices": list(hwdevices_available()),
        "ffmpeg_cuvid_decoders": sorted(c for c in av.codecs_available if c.endswith("_cuvid")),
        "gpu": gpu or None,
    }


def print_tables(rows: list[dict[str, Any]], streams: list[dict[str, Any]]) -> None:
    print(f"\n{'input':<7}{'way':>19}{'fmt':>8}{'fps':>8}{'fps+bgr':>9}{'cpu ms':>8}{'+bgr ms':>9}{'bgr ms':>8}"
          f"{'@fps':>6}{'cores/cam':>10}{'diff':>7}")  # fmt: skip
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['input']:<7}{r['way']:>19}  unavailable: {r['reason']}")
            continue
        diff = r.get("diff_vs_software")
        print(
            f"{r['input']:<7}{r['way']:>19}{r['frame_format']:>8}{r['wall_fps']!s:>8}{r['wall_fps_with_bgr']!s:>9}"
            f"{r['cpu_ms_per_frame']:>8.2f}{r['cpu_ms_per_frame_with_bgr']:>9.2f}{r['bgr_ms_per_frame']!s:>8}"
            f"{r['sample_fps']:>6g}{r['cores_per_camera']:>10.4f}{diff['mean'] if diff else '-'!s:>7}"
        )
    print("(one decoder thread; cpu ms per frame decoded, per keyframe for keyframes; cores/cam with BGR, "
          "at the sampling rate @fps; diff: mean |BGR - software's| over the first 25 frames)")  # fmt: skip
    if not streams:
        return
    print(f"\n{'way':<9}{'K':>4}{'fps all':>9}{'slowest':>9}{'cams@25':>9}{'cores':>7}{'cpu ms':>8}{'nvdec %':>9}")
    for s in streams:
        if s["status"] == "failed":
            print(f"{s['way']:<9}{s['streams']:>4}  failed: {s['reason']}")
            continue
        util = "-" if s["decoder_util_mean"] is None else f"{s['decoder_util_mean']:g}/{s['decoder_util_max']}"
        print(f"{s['way']:<9}{s['streams']:>4}{s['fps_total']:>9}{s['fps_slowest_stream']:>9}"
              f"{s['cameras_at_25fps']:>9}{s['cores']:>7}{s['cpu_ms_per_frame']!s:>8}{util:>9}"
              f"{'  errors: ' + s['errors'][0] if s['errors'] else ''}")  # fmt: skip
    print(f"(K decoders in K threads on {CONCURRENT_INPUT}, decode only; nvdec %: utilization.decoder mean/max)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s videos, K in 1 and 4, shorter windows")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/video_hw.json")
    args = p.parse_args()
    timing = QUICK if args.quick else FULL
    started = time.monotonic()
    inputs: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    working: list[str] = []
    with tempfile.TemporaryDirectory(prefix="videohw") as tmp_name:
        videos: dict[str, Path] = {}
        for res, (width, height, bitrate) in INPUTS.items():
            videos[res] = Path(tmp_name) / f"{res}.mp4"
            inputs[res] = {"bitrate": bitrate, **make_video(videos[res], width, height, bitrate, timing.video_s),
                           "file_bytes": videos[res].stat().st_size}  # fmt: skip
            print(f"input {res}: {inputs[res]}", flush=True)
        for res, video in videos.items():
            software = Decoder(video, "software")
            row: dict[str, Any] = {"input": res, "way": "software", "status": "ok", **measure(software, VIDEO_FPS)}
            reference = [f.to_ndarray(format="bgr24") for f in row.pop("_kept")[:MATCH_FRAMES]]
            software.close()
            rows.append(row)
            keyframes = Decoder(video, "software")
            keyframes.context.skip_frame = "NONKEY"
            row = {"input": res, "way": "software-keyframes", "status": "ok", **measure(keyframes, 1.0)}
            row.pop("_kept")
            keyframes.close()
            rows.append(row)
            for way in HARDWARE:
                decoder, reason = attempt(video, way)
                row = {"input": res, "way": way, "call": HWACCEL_CALL if way == "hwaccel" else CUVID_CALL}
                if decoder is None:
                    rows.append({**row, "status": "unavailable", "reason": reason})
                    continue
                measured = measure(decoder, VIDEO_FPS)
                kept = measured.pop("_kept")
                row |= {"status": "ok", "is_hwaccel": decoder.is_hwaccel, **measured}
                row["diff_vs_software"] = difference(kept, reference)
                decoder.close()
                rows.append(row)
                if res == CONCURRENT_INPUT:
                    working.append(way)
            for r in rows[-2 - len(HARDWARE) :]:
                print({k: v for k, v in r.items() if k != "call"}, flush=True)
        for way in working:
            for k in timing.streams:
                streams.append(concurrent(videos[CONCURRENT_INPUT], way, k, timing))
                print(streams[-1], flush=True)
    print_tables(rows, streams)
    from av.codec.hwaccel import HWAccel

    report = {
        "what": "NVDEC hardware decoding (PyAV hwaccel API and h264_cuvid) vs software decoding of camera-like H.264",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "machine": machine(),
        "timing": timing.__dict__,
        "inputs": inputs,
        "hardware_calls": {
            "hwaccel": HWACCEL_CALL,
            "cuvid": CUVID_CALL,
            "hwaccel_doc": (HWAccel.__doc__ or "").strip().split("\n")[0],
        },
        "working_hardware": working,
        "rows": rows,
        "concurrent": streams,
    }
    write_report(args.out, report, started)


if __name__ == "__main__":
    main()
