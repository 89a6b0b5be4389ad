"""JPEG decoding on the GPU machine: the GPU's hardware JPEG engines (nvImageCodec's ``HW_GPU_ONLY`` backend)
against nvJPEG on the SMs (nvImageCodec ``GPU_ONLY``, torchvision's ``decode_jpeg`` on CUDA) and OpenCV on one core.

    PYTHONPATH=/tmp/nvimg:/tmp/site:. LD_LIBRARY_PATH=/tmp/nvimg/nvidia/cu13/lib python3 -m bench.jpeg_hw --out DIR

Frames are the synthetic source's 416x416 JPEGs (q85, ~33 KB), as ingest sends them. Per way and batch size:
frames/s (wall, synchronised), host CPU per frame (this process), nvidia-smi's SM and JPEG-engine utilisation while
it runs, and the mean absolute difference of the decoded pixels against OpenCV's. Nothing is asserted; a way that
cannot run here is reported with its error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_bench import GpuUtilisation, jpeg_frames, machine  # noqa: E402

SECONDS = 4.0


def timed(decode: Callable[[list[bytes]], Any], frames: list[bytes], batch: int) -> dict[str, Any]:
    """Decode batches of ``batch`` frames for SECONDS; the last call's output is the caller's to compare."""
    import torch

    decode(frames[:batch])  # warm: contexts, buffers
    torch.cuda.synchronize()
    util = GpuUtilisation().start()
    done, i = 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < SECONDS:
        chunk = [frames[(i + k) % len(frames)] for k in range(batch)]
        decode(chunk)
        torch.cuda.synchronize()
        done, i = done + batch, i + batch
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "batch": batch, "frames_per_s": round(done / wall, 1), "host_cpu_ms_per_frame": round(cpu / done * 1000, 4),
        "host_cores": round(cpu / wall, 2), "gpu_utilisation_pct": util.stop(),
    }  # fmt: skip


def ways() -> dict[str, Callable[[list[bytes]], list[np.ndarray]]]:
    """Each way's batch decode, returning HxWx3 RGB device tensors brought back as arrays only when compared."""
    import torch
    from torchvision.io import decode_jpeg

    out: dict[str, Callable[[list[bytes]], Any]] = {}

    def torchvision_cuda(chunk: list[bytes]) -> Any:
        return decode_jpeg([torch.frombuffer(c, dtype=torch.uint8) for c in chunk], device="cuda")

    out["torchvision_nvjpeg"] = torchvision_cuda
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"== nvimgcodec: {exc}", flush=True)
        return out
    for kind in ("HW_GPU_ONLY", "GPU_ONLY"):
        try:  # the first run (H100, 2026-12-06) got "Could not create decoder. Code: 7" for HW_GPU_ONLY
            decoder = nvimgcodec.Decoder(backends=[nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))])
        except RuntimeError as exc:
            print(f"== nvimgcodec {kind}: {exc}", flush=True)
            continue

        def nvimg(chunk: list[bytes], decoder: Any = decoder) -> Any:
            return decoder.decode([nvimgcodec.CodeStream(c) for c in chunk])

        out[f"nvimgcodec_{kind.lower()}"] = nvimg
    return out


def as_rgb(image: Any) -> np.ndarray:
    import torch
    import torch.utils.dlpack

    if isinstance(image, torch.Tensor):  # torchvision: CHW
        return image.permute(1, 2, 0).cpu().numpy()
    if image is None:
        raise ValueError("not decoded (None)")
    return np.asarray(torch.utils.dlpack.from_dlpack(image).cpu())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import cv2

    started = time.time()
    frames = jpeg_frames(256, 416, 416)
    reference = [cv2.cvtColor(cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # type: ignore[arg-type]
                 for f in frames[:16]]  # fmt: skip
    t0 = time.process_time()
    for f in frames:
        cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)
    cpu_fps = len(frames) / (time.process_time() - t0)
    rows: list[dict[str, Any]] = [{"way": "opencv_one_core", "frames_per_s": round(cpu_fps, 1)}]
    print(json.dumps(rows[-1]), flush=True)
    for name, decode in ways().items():
        try:
            decoded = decode(frames[:16])
            pairs = zip(decoded, reference, strict=True)
            diff = [float(np.mean(np.abs(as_rgb(d).astype(np.int16) - r))) for d, r in pairs]
            for batch in (64, 256):
                row = {"way": name, **timed(decode, frames, batch), "mean_abs_diff_vs_opencv": round(max(diff), 3)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        except Exception as exc:  # a backend this machine lacks: say so, keep the others
            rows.append({"way": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    kb = round(float(np.mean([len(f) for f in frames])) / 1000, 1)
    result = {"jpeg_hw": rows, "frame": "416x416 q85", "jpeg_kb": kb, "machine": machine(),
              "seconds": round(time.time() - started), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (args.out / "gpu_jpeg_hw.json").write_text(json.dumps(result, indent=2) + "\n")
    print("== jpeg_hw:", json.dumps(rows)[:1500], flush=True)


if __name__ == "__main__":
    main()
