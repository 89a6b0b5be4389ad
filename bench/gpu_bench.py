"""GPU benchmarks of the torch engine, run on an NVIDIA machine (one script, every variant, JSON out).

Parts (``python bench/gpu_bench.py PART --out DIR``):
- ``model``: model only — YOLOv3-416 and tiny, batch 1 to 64, fp32/fp16/bf16: img/s (CUDA events, median of
  graph replays on a device-resident uint8 batch, normalisation included) and peak GPU memory; plus fp16/bf16
  against fp32 on the same random input (max |diff| of the raw heads, relative to their range).
- ``seed``: the seed's design on the same GPU — K processes, one per stream, batch 1, each with its own model and
  a 1/K memory share, running this engine flat out (``--compile``: compiled, as the pipeline runs it): img/s each
  and in aggregate, GPU memory per process.
- ``buckets``: model only, compiled, batches of 64, 128 and 256.
- ``autotune``: model only at batch 64 with Inductor's max-autotune (Triton convolutions with fused epilogues).
- ``fractions``: several replicas on one GPU whose memory fractions sum to <= 1, growth off: every one runs and
  none goes past its share (torch's reserved memory and nvidia-smi's per-process figure).
- ``decode``: JPEG frames (416 px, and 720p that need a resize) decoded and letterboxed on the GPU (nvJPEG) against
  the CPU path (OpenCV, one core): frames/s each, and the detections and raw heads of the two paths compared.
- ``e2e``: a Redis-compatible server (one; ``--primaries N``: a cluster of N primaries), ingest processes pushing
  N synthetic 416-px JPEG streams at 5 fps, detector replicas on GPU 0 (``--decode gpu|cpu``): frames/s, p50/p99
  capture-to-result latency, stale drops and frames missing in the measured window, CPU cores used (valkey's per
  node), GPU memory (all, and per replica).
- ``profile``: where YOLOv3-416's GPU time goes at batch 64 in fp16 (torch.profiler over eager forwards):
  CUDA time by kernel kind (convolutions, elementwise, copies), against the FLOP count.
- ``two-gpu``: one model-only replica pinned to each of two GPUs at once vs one GPU alone, with nvidia-smi's
  per-process GPU placement as evidence.
Nothing is asserted; ``bench/gpu_report.py`` turns the JSON into the README's table and plot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Arch = Literal["yolov3", "tiny"]


def engine(
    arch: Arch,
    precision: str,
    gpu: int = 0,
    fraction: float = 1.0,
    growth: bool = True,
    decode: str = "cpu",
    compile: bool = False,
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
) -> Any:
    from common.config import ModelConfig
    from detector.engines.torch import TorchEngine, TorchEngineConfig
    from detector.model import ModelSpec

    spec = ModelSpec.from_config(ModelConfig(classes=["a", "b", "c"], architecture=arch, input_size=416))
    cfg = TorchEngineConfig(
        gpu=gpu, precision=cast(Any, precision), memory_fraction=fraction, allow_growth=growth,
        batch_buckets=list(buckets), decode=cast(Any, decode), compile=compile,
    )  # fmt: skip
    return TorchEngine(cfg, spec)


def time_device(e: Any, batch: int, iters: int = 50) -> float:
    """Median seconds of one batch through the engine's CUDA graph, input already on the GPU."""
    import torch

    x = torch.randint(0, 256, (batch, 416, 416, 3), dtype=torch.uint8, device="cuda").permute(0, 3, 1, 2)
    for _ in range(5):
        e.forward(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        e.forward(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return float(np.median(times))


def part_model(out: Path) -> dict[str, Any]:
    import torch

    rows = []
    for arch in cast(list[Arch], ["yolov3", "tiny"]):
        for precision in ("fp16", "bf16", "fp32"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            e = engine(arch, precision)
            for batch in (1, 8, 32, 64):
                seconds = time_device(e, batch)
                rows.append({
                    "model": f"{arch}-416", "precision": precision, "batch": batch,
                    "img_per_s": round(batch / seconds, 1), "ms_per_batch": round(seconds * 1000, 3),
                    "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            del e
    accuracy = []
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (4, 416, 416, 3), dtype=np.uint8)
    for arch in cast(list[Arch], ["yolov3", "tiny"]):
        ref = engine(arch, "fp32").predict(frames)
        for precision in ("fp16", "bf16"):
            got = engine(arch, precision).predict(frames)
            rel = max(float(np.abs(g - r).max() / (np.abs(r).max() + 1e-9)) for g, r in zip(got, ref, strict=True))
            accuracy.append({"model": f"{arch}-416", "precision": precision, "max_rel_diff_vs_fp32": rel})
    return {"model_only": rows, "precision_vs_fp32": accuracy}


def part_compile(out: Path) -> dict[str, Any]:
    """Eager against ``engine.compile: true`` (Inductor's fused epilogues), fp16, both inside CUDA graphs."""
    import torch

    rows, accuracy = [], []
    frames = np.random.default_rng(11).integers(0, 256, (8, 416, 416, 3), dtype=np.uint8)
    for arch in cast(list[Arch], ["yolov3", "tiny"]):
        ref = engine(arch, "fp32").predict(frames)
        heads = {}
        for compiled in (False, True):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            e = engine(arch, "fp16", compile=compiled)
            start_s = time.perf_counter() - t0
            for batch in (1, 8, 32, 64):
                seconds = time_device(e, batch)
                rows.append({
                    "model": f"{arch}-416", "compiled": compiled, "batch": batch, "engine_start_s": round(start_s, 1),
                    "img_per_s": round(batch / seconds, 1), "ms_per_batch": round(seconds * 1000, 3),
                    "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            heads[compiled] = e.predict(frames)
            del e
        for name, got in (("compiled fp16 vs eager fp16", heads[True]), ("compiled fp16 vs eager fp32", heads[True])):
            want = heads[False] if "eager fp16" in name else ref
            rel = max(float(np.abs(g - r).max() / (np.abs(r).max() + 1e-9)) for g, r in zip(got, want, strict=True))
            accuracy.append({"model": f"{arch}-416", "comparison": name, "max_rel_diff": rel})
    return {"compile": rows, "compile_accuracy": accuracy}


def part_buckets(out: Path) -> dict[str, Any]:
    """Model only, YOLOv3-416 fp16 compiled: do batches past 64 buy anything?"""
    e = engine("yolov3", "fp16", compile=True, buckets=(64, 128, 256))
    rows = []
    for batch in (64, 128, 256):
        seconds = time_device(e, batch)
        rows.append({"model": "yolov3-416", "batch": batch, "img_per_s": round(batch / seconds, 1),
                     "ms_per_batch": round(seconds * 1000, 3)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"buckets": rows}


def part_autotune(out: Path) -> dict[str, Any]:
    """Model only, YOLOv3-416 fp16 at batch 64 with Inductor's max-autotune: Triton convolution templates beside
    cuDNN's, so that a convolution may carry its bias, LeakyReLU and residual add in its epilogue, where today they
    are a third of the GPU time in kernels of their own. Compile time, img/s and the GPU time's split."""
    import torch._inductor.config as inductor

    inductor.max_autotune = True
    inductor.max_autotune_conv_backends = "ATEN,TRITON"
    started = time.perf_counter()
    e = engine("yolov3", "fp16", compile=True, buckets=(64,))
    start_s = time.perf_counter() - started
    seconds = time_device(e, 64)
    row = {"model": "yolov3-416", "batch": 64, "max_autotune": True, "engine_start_s": round(start_s, 1),
           "img_per_s": round(64 / seconds, 1), "ms_per_batch": round(seconds * 1000, 3)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return {"autotune": row, "profile": profile_forward(e)}


def jpeg_frames(count: int, width: int, height: int) -> list[bytes]:
    """Frames of the synthetic source (moving shapes on a noisy gradient), as ingest sends them."""
    import cv2

    from ingest.sources.synthetic import SyntheticSource, SyntheticSourceConfig

    source = SyntheticSource(SyntheticSourceConfig(kind="synthetic", seed=3, width=width, height=height, fps=5))
    quality = [cv2.IMWRITE_JPEG_QUALITY, 85]
    return [cv2.imencode(".jpg", source.render(i * 7), quality)[1].tobytes() for i in range(count)]


def part_decode(out: Path) -> dict[str, Any]:
    import torch

    from common.wire import Frame
    from detector.pipeline import decode_image
    from detector.training.evaluate import iou
    from detector.yolo.postprocess import decode, letterbox_into

    rows: list[dict[str, Any]] = []
    for width, height in ((416, 416), (1280, 720)):
        jpegs = jpeg_frames(64, width, height)
        frames = [
            Frame(stream="s", seq=i, capture_ts=1.0, width=width, height=height, encoding="jpeg",
                  image_width=width, image_height=height, data=j)
            for i, j in enumerate(jpegs)
        ]  # fmt: skip
        batch = np.empty((64, 416, 416, 3), np.uint8)
        t0 = time.perf_counter()
        for _ in range(3):
            for i, f in enumerate(frames):
                letterbox_into(decode_image(f), 416, batch[i], "opencv")
        cpu_fps = 3 * 64 / (time.perf_counter() - t0)  # OpenCV's resize: the faster CPU option
        for i, f in enumerate(frames):
            letterbox_into(decode_image(f), 416, batch[i], "pil")  # the reference: TYOY's PIL bicubic
        gpu_engine = engine("yolov3", "fp16", decode="gpu")
        cpu_engine = engine("yolov3", "fp16")
        for e in (gpu_engine, cpu_engine):
            lift_objectness(e)
        for _ in range(3):
            gpu_engine.load(jpegs)
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            gpu_engine.load(jpegs)  # returns once the batch is on the GPU, letterboxed
            times.append(time.perf_counter() - t0)
        loaded = gpu_engine.load(jpegs)
        heads_gpu, heads_cpu = gpu_engine.predict(loaded), cpu_engine.predict(batch)
        rel = max(
            float(np.abs(g - c).max() / (np.abs(c).max() + 1e-9)) for g, c in zip(heads_gpu, heads_cpu, strict=True)
        )
        sizes = [(width, height)] * 64
        anchors = gpu_engine_anchors()
        found = [decode(h, anchors, 3, 416, sizes, 0.3, 0.45, 20) for h in (heads_gpu, heads_cpu)]
        matched, total, score_diff = 0, 0, 0.0
        for a, b in zip(*found, strict=True):
            total += len(b.scores)
            for box, score, cls in zip(b.boxes, b.scores, b.classes, strict=True):
                same = [k for k in range(len(a.scores)) if a.classes[k] == cls and iou(a.boxes[k], box) >= 0.9]
                if same:
                    matched += 1
                    score_diff = max(score_diff, min(abs(float(a.scores[k]) - float(score)) for k in same))
        rows.append({
            "frame": f"{width}x{height}", "jpeg_kb": round(np.mean([len(j) for j in jpegs]) / 1024, 1),
            "cpu_opencv_frames_per_s_one_core": round(cpu_fps, 1),
            "gpu_nvjpeg_frames_per_s_batch64": round(64 / float(np.median(times)), 1),
            "heads_max_rel_diff_gpu_vs_cpu_path": rel, "detections_cpu_path": total,
            "matched_iou_0_9_same_class": matched, "max_score_diff_matched": round(score_diff, 4),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        del gpu_engine, cpu_engine
        torch.cuda.empty_cache()
    return {"decode": rows}


def lift_objectness(e: Any) -> None:
    """Random weights find nothing; raise the output convs' objectness bias so both paths have boxes to compare.
    In place: the captured CUDA graphs read the parameters where they are."""
    import torch

    with torch.no_grad():
        for module in e._model.modules():
            if module.__class__.__name__ == "_Conv" and not module.leaky:
                module.conv.bias.view(3, -1)[:, 4] += 6.0


def gpu_engine_anchors() -> np.ndarray:
    from common.config import ModelConfig
    from detector.model import ModelSpec

    return ModelSpec.from_config(ModelConfig(classes=["a", "b", "c"], architecture="yolov3", input_size=416)).anchors


def part_profile(out: Path) -> dict[str, Any]:
    return {"eager": profile_forward(engine("yolov3", "fp16")), "compiled": profile_forward(engine("yolov3", "fp16",
            compile=True))}  # fmt: skip


def profile_forward(e: Any) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.randint(0, 256, (64, 416, 416, 3), dtype=torch.uint8, device="cuda").permute(0, 3, 1, 2)
    conv_flops: list[int] = []  # 2 * MACs of each convolution, counted by a hook on one forward

    def count(conv: Any, _: Any, out: Any) -> None:
        conv_flops.append(2 * conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels * out.numel())

    hooks = [m.register_forward_hook(count) for m in e._model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        e._model(e._normalise(x))
        for hook in hooks:
            hook.remove()
        flops = sum(conv_flops)
        for _ in range(3):
            e._run(e._normalise(x))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                e._run(e._normalise(x))
            torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        us = float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
        if us <= 0 or event.key.startswith("aten::") or event.key.startswith("cuda"):
            continue
        name = event.key.lower()
        kind = (
            "fused elementwise (Inductor's Triton kernels)" if name.startswith("triton_")
            else "convolution (cuDNN/cutlass)" if any(k in name for k in ("conv", "gemm", "cutlass", "xmma", "sm90"))
            else "elementwise (bias, leaky ReLU, add, normalise)" if "elementwise" in name or "vectorized" in name
            else "copy / concat / upsample" if any(k in name for k in ("copy", "cat", "upsample", "nearest"))
            else "other"
        )  # fmt: skip
        kinds[kind] = kinds.get(kind, 0.0) + us / 5
    total_ms = sum(kinds.values()) / 1000
    top = sorted(prof.key_averages(), key=lambda ev: -float(getattr(ev, "device_time_total", 0.0)))[:12]
    return {
        "batch": 64, "precision": "fp16", "gpu_ms_per_batch": round(total_ms, 2),
        "img_per_s_gpu_time": round(64 / total_ms * 1000, 1), "gflop_per_image": round(flops / 64 / 1e9, 1),
        "achieved_tflop_per_s": round(flops / (total_ms / 1000) / 1e12, 1),
        "share_of_gpu_time": {k: round(v / 1000 / total_ms, 3) for k, v in sorted(kinds.items())},
        "top_kernels_ms_per_batch": [
            [ev.key[:90], round(float(getattr(ev, "device_time_total", 0.0)) / 5 / 1000, 2)] for ev in top
        ],
    }  # fmt: skip


def worker_loop(
    arch: Arch,
    precision: str,
    gpu: int,
    fraction: float,
    growth: bool,
    seconds: float,
    batch: int,
    compiled: bool,
    source: str = "host",
) -> None:
    """One process: the engine flat out at ``batch``, heads read back each batch, from host uint8 frames (as a
    per-stream process would) or from frames already on the GPU (as a replica decoding JPEGs there has them)."""
    import torch

    from detector.engines import DeviceBatch

    e = engine(arch, precision, gpu, fraction, growth, compile=compiled, buckets=(batch,))
    frames: Any = np.random.default_rng(os.getpid()).integers(0, 256, (batch, 416, 416, 3), dtype=np.uint8)
    if source == "device":
        on_gpu = torch.from_numpy(frames).to(e._device).permute(0, 3, 1, 2).contiguous()
        frames = DeviceBatch(on_gpu, list(range(batch)), {})
    for _ in range(5):
        e.predict(frames)
    if barrier := os.environ.get("BENCH_BARRIER"):  # "folder:count": measure only once every worker is ready
        folder, count = barrier.rsplit(":", 1)
        Path(folder, str(os.getpid())).touch()
        deadline = time.monotonic() + 600
        while len(list(Path(folder).iterdir())) < int(count) and time.monotonic() < deadline:
            time.sleep(0.2)
    n, started, used = 0, time.perf_counter(), None
    while time.perf_counter() - started < seconds:
        e.predict(frames)
        n += batch
        if used is None and time.perf_counter() - started > seconds / 2:
            used = gpu_used_mb()  # every GPU's memory in use, read mid-run from outside torch
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "pid": os.getpid(), "img_per_s": n / elapsed, "device": e.device, "gpu_used_mb_mid_run": used,
        "reserved_mb": torch.cuda.memory_reserved(e._device) / 2**20,
        "peak_allocated_mb": torch.cuda.max_memory_allocated(e._device) / 2**20,
        "total_mb": torch.cuda.get_device_properties(e._device).total_memory / 2**20,
    }), flush=True)  # fmt: skip
    time.sleep(2)  # stay alive while the parent reads nvidia-smi


def gpu_apps() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    uuids = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True, text=True, check=False
    ).stdout
    index = {u.split(",")[1].strip(): int(u.split(",")[0]) for u in uuids.strip().splitlines()}
    apps = []
    for line in out.strip().splitlines():
        pid, uuid, mem = (v.strip() for v in line.split(","))
        apps.append({"pid": int(pid), "gpu": index.get(uuid), "used_mb": int(mem)})
    return apps


def gpu_used_mb() -> list[int]:
    """Memory in use on each GPU, all processes together (nvidia-smi cannot always tell processes apart in a VM)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [int(v) for v in out.split()]


def run_workers(
    specs: list[list[str]], seconds: float, start_s: float = 20
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    barrier = tempfile.mkdtemp(prefix="barrier")
    env = {**os.environ, "BENCH_BARRIER": f"{barrier}:{len(specs)}"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", *s, "--seconds", str(seconds)], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, env=env)
        for s in specs
    ]  # fmt: skip
    time.sleep(seconds * 0.6 + start_s)  # model load + warm-up, then mid-run
    apps = gpu_apps() + [{"pid": -1, "gpu": i, "used_mb": mb} for i, mb in enumerate(gpu_used_mb())]
    reports = []
    for p in procs:
        line, _ = p.communicate(timeout=seconds + 300)
        reports.append(json.loads(line.strip().splitlines()[-1]))
    return reports, apps


def part_seed(
    out: Path, compiled: bool = False, ks: tuple[int, ...] = (1, 8, 16), seconds: float = 20
) -> dict[str, Any]:
    """The seed's design (K processes, batch 1 each) on this engine; ``compiled``: the engine the pipeline runs."""
    results = []
    for k in ks:
        share = round(min(1.0, 0.95 / k), 3)
        spec = ["yolov3", "fp16", "0", str(share), "1", "1", "1" if compiled else "0"]
        reports, apps = run_workers([spec] * k, seconds=seconds, start_s=40 if compiled else 20)
        mine = {a["pid"]: a["used_mb"] for a in apps}
        results.append({
            "processes": k, "memory_fraction_each": share, "compiled": compiled,
            "img_per_s_each": [round(r["img_per_s"], 1) for r in reports],
            "img_per_s_total": round(sum(r["img_per_s"] for r in reports), 1),
            "gpu_memory_mb_each_nvidia_smi": [mine.get(r["pid"]) for r in reports],
            "gpu0_used_mb_all_processes": next(a["used_mb"] for a in apps if a["pid"] == -1 and a["gpu"] == 0),
            "reserved_mb_each_torch": [round(r["reserved_mb"]) for r in reports],
            "total_gpu_mb": round(reports[0]["total_mb"]),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    return {"seed_design": results}


def part_fractions(out: Path) -> dict[str, Any]:
    fractions = [0.2, 0.3, 0.45]
    reports, apps = run_workers([["yolov3", "fp16", "0", str(f), "0", "16", "0"] for f in fractions], seconds=15)
    mine = {a["pid"]: a["used_mb"] for a in apps}
    rows = [
        {
            "memory_fraction": f, "cap_mb": round(f * r["total_mb"]), "torch_reserved_mb": round(r["reserved_mb"]),
            "nvidia_smi_used_mb": mine.get(r["pid"]), "img_per_s": round(r["img_per_s"], 1),
            "within_cap": r["reserved_mb"] <= f * r["total_mb"],
        }
        for f, r in zip(fractions, reports, strict=True)
    ]  # fmt: skip
    used = next(a["used_mb"] for a in apps if a["pid"] == -1 and a["gpu"] == 0)
    return {"fractions": rows, "sum_of_fractions": sum(fractions), "gpu0_used_mb_all_processes": used}


def part_two_gpu(out: Path, compiled: bool, sources: list[str]) -> dict[str, Any]:
    flag, start_s = ("1", 30) if compiled else ("0", 20)
    rows = []
    for source in sources:
        spec = ["yolov3", "fp16", "GPU", "1.0", "1", "64", flag, source]
        alone, _ = run_workers([[v.replace("GPU", "0") for v in spec]], 20, start_s)
        both, apps = run_workers([[v.replace("GPU", str(g)) for v in spec] for g in (0, 1)], 20, start_s)
        one = alone[0]["img_per_s"]
        two = sum(r["img_per_s"] for r in both)
        placement = {r["pid"]: sorted({a["gpu"] for a in apps if a["pid"] == r["pid"]}) for r in both}
        used = {a["gpu"]: a["used_mb"] for a in apps if a["pid"] == -1}
        rows.append({
            "frames_from": source, "compiled": compiled, "one_gpu_img_per_s": round(one, 1),
            "two_gpus_img_per_s": round(two, 1), "scaling": round(two / one, 3),
            "replicas": [{"device": r["device"], "img_per_s": round(r["img_per_s"], 1), "gpus_seen_by_nvidia_smi":
                          placement[r["pid"]]} for r in both],
            "used_mb_per_gpu_while_both_ran": used,
            "nvidia_smi_used_mb_per_gpu_mid_run": {"alone_on_gpu0": alone[0]["gpu_used_mb_mid_run"],
                                                   "both": both[0]["gpu_used_mb_mid_run"]},
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"two_gpu": rows}


def part_e2e(
    out: Path,
    streams: list[int],
    seconds: float,
    replicas: int,
    decoder: str,
    compiled: bool,
    gpus: int,
    max_batch: int = 64,
    max_wait_ms: int = 25,
    decode_threads: int = 6,
    arch: Arch = "yolov3",
    shed_behind: str = "default",
    primaries: int = 0,
    engine_gpu: str = "0",
    ingest: str = "synthetic",
) -> dict[str, Any]:
    from common.config import load_config
    from common.redis_io import connect, ensure_group
    from common.wire import Result, decode

    rows = []
    for n in streams:
        with (
            tempfile.TemporaryDirectory(prefix="e2e") as tmp,
            redis_server(Path(tmp), primaries, 2048 + n * 8) as server,
            contextlib.ExitStack() as cleanup,
        ):
            procs: list[subprocess.Popen[Any]] = []
            cleanup.callback(kill_leftovers, procs)  # a variant that fails must not leave replicas on the GPU
            config = Path(tmp) / "stack.yaml"
            cams = "\n".join(
                f"    - {{name: c{i}, source: {{kind: synthetic, seed: {i}, width: 416, height: 416, fps: 5}}, "
                f"max_side: 416}}"
                for i in range(n)
            )  # fmt: skip
            config.write_text(textwrap.dedent("""\
                streams: {prefix: e2e, frames_maxlen: 25, results_maxlen: 1000}
                ingest:
                  queue_size: 4096
                  cameras:
                """) + cams + textwrap.dedent("""
                redis: {cluster: CLUSTER}
                detector:
                  pools:
                    - name: gpu
                      model: {architecture: ARCH, classes: [a, b, c], input_size: 416}
                      engine: {kind: torch, gpu: GPU, precision: fp16, decode: DECODE, compile: COMPILE}
                      max_batch: MAX_BATCH
                      max_wait_ms: MAX_WAIT
                      max_age_ms: 1000
                      decode_threads: THREADS
                      block_ms: 200
                      SHED
                """).replace("DECODE", decoder).replace("ARCH", arch).replace("THREADS", str(decode_threads))
                  .replace("SHED", "" if shed_behind == "default" else f"shed_behind: {shed_behind}")
                  .replace("COMPILE", str(compiled).lower()).replace("GPU", engine_gpu)
                  .replace("CLUSTER", str(primaries > 0).lower())
                  .replace("MAX_BATCH", str(max_batch)).replace("MAX_WAIT", str(max_wait_ms)))  # fmt: skip
            env = {**os.environ, "REDIS_URL": server.url, "LOG_LEVEL": "WARNING"}
            stack = load_config(config, {"REDIS_URL": server.url})
            client, keys = connect(server.url, stack.redis), stack.keys
            for i in range(n):  # the streams exist from the start, so a replica reads (and shows it is ready) early
                ensure_group(client, keys.frames(f"c{i}"), keys.detector_group("gpu"))
            dets = [
                subprocess.Popen([sys.executable, "-m", "detector", "--config", str(config), "--replica", f"r{r}"],
                                 cwd=ROOT, env={**env, "LOG_LEVEL": "INFO", "CUDA_VISIBLE_DEVICES": str(r % gpus)},
                                 stderr=subprocess.PIPE, text=True)
                for r in range(replicas)
            ]  # fmt: skip
            procs += dets
            ready_s = wait_for_consumers(client, keys, replicas, dets)  # model load, compile, graph capture
            groups = max(1, n // (400 if ingest == "replay" else 100))  # processes pushing
            # replay: frames encoded once, pushed at the cameras' pace (ingest on other hosts, the detector host
            # measured); synthetic: ingest here, rendering and encoding every frame
            pusher = ["bench.replay_cameras"] if ingest == "replay" else ["ingest"]
            ingests = [
                subprocess.Popen(
                    [sys.executable, "-m", *pusher, "--config", str(config), "--duration", str(seconds),
                     *[a for i in range(g, n, groups) for a in ("--camera", f"c{i}")]],
                    cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
                )
                for g in range(groups)
            ]  # fmt: skip
            procs += ingests
            valkey = server.pids
            parts = {"detectors": [p.pid for p in dets], "ingest": [p.pid for p in ingests], "valkey": valkey}
            cpu_before = {part: cpu_seconds(pids) for part, pids in parts.items()}
            node_before = [cpu_seconds([pid]) for pid in server.pids]
            started = time.time()
            time.sleep(seconds * 0.25)
            pushed_before, window_t0 = frames_pushed(client, keys, n), time.time()
            gpu_util = GpuUtilisation().start()
            profiler = None
            if os.environ.get("PROFILE_WITH_PYSPY") and shutil.which("py-spy") is None:
                print("== py-spy is not on the PATH: no profile", flush=True)
            elif os.environ.get("PROFILE_WITH_PYSPY"):  # where a replica's time goes, under this load
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(dets[0].pid), "--duration", str(int(seconds * 0.6)),
                     "--rate", "50", "--threads", "--format", "raw", "--nonblocking",
                     "--output", str(out / f"pyspy_{n}_streams{os.environ.get('PYSPY_TAG', '')}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                procs.append(profiler)
            time.sleep(seconds * 0.45)
            gpu_used_all = gpu_used_mb()
            gpu_used = gpu_used_all[0]
            per_replica = {a["pid"]: a["used_mb"] for a in gpu_apps()}
            host_mb = {"detectors": rss_mb([d.pid for d in dets]), "ingest": rss_mb([i.pid for i in ingests])}
            time.sleep(max(0.0, started + seconds - 2 - time.time()))
            pushed_after, window_t1 = frames_pushed(client, keys, n), time.time()
            cores = {part: round((cpu_seconds(pids) - cpu_before[part]) / (window_t1 - started), 2)
                     for part, pids in parts.items()}  # fmt: skip
            node_cores = [round((cpu_seconds([pid]) - c) / (window_t1 - started), 2)
                          for pid, c in zip(server.pids, node_before, strict=True)]  # fmt: skip
            utilisation = gpu_util.stop()
            for pushing in ingests:
                pushing.wait(timeout=seconds + 120)
            if profiler is not None:
                profiler.wait(timeout=60)
            time.sleep(3)
            logs = []
            for det in dets:
                det.send_signal(signal.SIGTERM)
                logs.append(det.communicate(timeout=60)[1])
            shed = sum(
                int(v) for t in keys.tallies("shed", keys.detector_group("gpu")) for v in client.hgetall(t).values()
            )
            results = [
                decode(cast(bytes, f[b"msg"]), Result)  # type: ignore[index]
                for i in range(n)
                for _, f in client.xrange(keys.results(f"c{i}"))  # type: ignore[union-attr]
            ]
            client.close()
        # The window leaves out the first quarter (ingest's start-up burst, first batches) and the last seconds.
        warm = [r for r in results if started + seconds * 0.25 < r.capture_ts < started + seconds - 2]
        lat = np.array([r.timings.end_to_end_ms for r in warm]) if warm else np.array([np.nan])
        stale = sum(int(x) for log in logs for x in _grab(log, "'stale': "))
        span = max(r.published_ts for r in warm) - min(r.published_ts for r in warm) if warm else 0
        seqs: dict[str, list[int]] = {}
        for r in warm:
            seqs.setdefault(r.stream, []).append(r.seq)
        # Synthetic streams sample every frame: a seq missing between a stream's first and last result in the
        # window is a frame that got no result (stale, or never read).
        missing = sum(max(v) - min(v) + 1 - len(set(v)) for v in seqs.values())
        rows.append({
            "streams": n, "replicas": replicas, "gpus": gpus, "decode": decoder, "compiled": compiled,
            "replicas_ready_s": ready_s, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
            "frames_per_s": round(len(warm) / span, 1) if span else 0,
            "offered_frames_per_s": n * 5, "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "stale": stale, "shed": shed,
            "missing_in_window_stale_or_shed": missing,
            "max_behind_when_read": max((r.behind or 0 for r in warm), default=None),
            "mean_batch": round(float(np.mean([r.batch_size for r in warm])), 1) if warm else 0,
            "pushed_frames_per_s": round((pushed_after - pushed_before) / (window_t1 - window_t0), 1),
            "cpu_cores": cores, "gpu_utilisation_pct": utilisation, "decode_threads": decode_threads,
            "model": f"{arch}-416", "shed_behind": shed_behind, "ingest": ingest,
            "redis": f"cluster of {primaries} primaries (TCP)" if primaries else "one server (unix socket)",
            "valkey_cores_per_node": node_cores,
            "cores_per_1000_fps": {k: round(v * span / len(warm) * 1000, 2) for k, v in cores.items()} if span else {},
            "gpu_memory_mb": gpu_used, "gpu_memory_mb_per_gpu": gpu_used_all,
            "gpu_memory_mb_per_replica": [per_replica.get(d.pid) for d in dets],
            "host_rss_mb": host_mb, "host_rss_mb_per_stream": round(sum(host_mb.values()) / n, 2),
            "ok": missing == 0 and float(np.percentile(lat, 99)) <= 150,
            "replica_problems": [problems(log) for log in logs],
            # How often each replica went into its turns (past capacity) and back: flapping would show here.
            "turns_entered": [log.count("taking the live streams in turn") for log in logs],
            "turns_left": [log.count("the load fits again") for log in logs],
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"e2e": rows}


class Server:
    """The bench's Redis: one valkey-server on a unix socket, or a cluster of ``primaries`` (TCP, no replicas)."""

    def __init__(self, url: str, pids: list[int]) -> None:
        self.url, self.pids = url, pids


@contextlib.contextmanager
def redis_server(tmp: Path, primaries: int, maxmemory_mb: int) -> Iterator[Server]:
    """Sized by the caller for the streams: 25 frames of ~33 KB (5 s at 5 fps, past max_age_ms) and 1,000 results
    per stream, split over the primaries."""
    from common.embedded import EmbeddedServer
    from common.redis_io.settings import EmbeddedServerConfig
    from tests.servers.valkey_cluster import ValkeyCluster

    if primaries == 0:
        with EmbeddedServer(tmp / "v.sock", EmbeddedServerConfig(maxmemory_mb=maxmemory_mb)) as one:
            yield Server(one.url, [one.pid] if one.pid is not None else [])
        return
    with ValkeyCluster(tmp / "cluster", primaries, 0, maxmemory_mb=maxmemory_mb // primaries + 256) as cluster:
        yield Server(cluster.url, [n.process.pid for n in cluster.nodes if n.process is not None])


def kill_leftovers(procs: list[subprocess.Popen[Any]]) -> None:
    """Kill what a failed variant left running (a replica holding the GPU would skew every variant after it)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def frames_pushed(client: Any, keys: Any, n: int) -> int:
    """Entries ever added to the frames streams (XINFO GROUPS: read + still unread, per stream)."""
    from common.redis_io import group_states

    total = 0
    for i in range(n):
        for g in group_states(client, keys.frames(f"c{i}")):
            if g.name == keys.detector_group("gpu"):
                total += (g.entries_read or 0) + g.unread
    return total


class GpuUtilisation:
    """nvidia-smi's utilisation counters sampled every 0.5 s on a thread: SMs busy, video and JPEG engines. Without
    nvidia-smi (a dry run on a CPU machine) nothing is sampled and every mean is -1."""

    FIELDS = ("utilization.gpu", "utilization.decoder", "utilization.jpeg")

    def __init__(self) -> None:
        import threading

        self.exe = shutil.which("nvidia-smi")
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> GpuUtilisation:
        if self.exe is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self.exe is not None
        while not self._stop.wait(0.5):
            out = subprocess.run([self.exe, f"--query-gpu={','.join(self.FIELDS)}", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, check=False).stdout  # fmt: skip
            try:
                self.samples.append([float(v) for v in out.strip().split(",")])
            except ValueError:  # a field this driver does not know: "[N/A]"
                self.samples.append([float(v) if v.strip().replace(".", "").isdigit() else -1 for v in out.split(",")])

    def stop(self) -> dict[str, float]:
        """Stop sampling; each counter's mean (-1 where nothing was sampled)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        rows = np.array(self._rows() or [[-1.0] * len(self.FIELDS)])
        return {f.split(".")[1]: round(float(np.mean(rows[:, i])), 1) for i, f in enumerate(self.FIELDS)}

    def column(self, name: str) -> list[float]:
        """One counter's samples (``decoder``, say), those the driver could tell."""
        i = [f.split(".")[1] for f in self.FIELDS].index(name)
        return [row[i] for row in self._rows() if row[i] >= 0]

    def _rows(self) -> list[list[float]]:
        return [r for r in self.samples if len(r) == len(self.FIELDS)]


def wait_for_consumers(client: Any, keys: Any, replicas: int, dets: list[Any], timeout: float = 400) -> float:
    """Seconds until every replica reads from the frames streams (XREADGROUP registers it as a consumer)."""
    from common.redis_io import group_state

    started = time.monotonic()
    while time.monotonic() - started < timeout and all(d.poll() is None for d in dets):
        state = group_state(client, keys.frames("c0"), keys.detector_group("gpu"))  # None: no stream or group yet
        if state is not None and state.consumers >= replicas:
            break
        time.sleep(1)
    return round(time.monotonic() - started, 1)


def problems(log: str) -> list[str]:
    """A replica's error lines and its last lines, when it logged an error or a traceback."""
    lines = log.splitlines()
    bad = [line for line in lines if "ERROR" in line or "Traceback" in line or "Error:" in line]
    return (bad[:5] + lines[-6:]) if bad else []


def _grab(text: str, key: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if key in line:
            out.append(line.split(key, 1)[1].split(",")[0].split("}")[0])
    return out[-1:]


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes together, MB (mid-run)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        except (OSError, StopIteration):
            pass
    return round(total / 1024, 1)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


def machine() -> dict[str, Any]:
    import torch

    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    ).stdout.strip().splitlines()  # fmt: skip
    return {
        "gpus": smi, "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "part",
        choices=[
            "model",
            "seed",
            "fractions",
            "decode",
            "compile",
            "profile",
            "buckets",
            "autotune",
            "e2e",
            "two-gpu",
            "worker",
            "all",
        ],
    )
    p.add_argument("args", nargs="*")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--streams", default="100,300,500,700")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--decode", choices=["gpu", "cpu"], default="gpu", help="e2e: where the detectors decode JPEGs")
    p.add_argument("--compile", action="store_true", help="e2e and two-gpu: engines with engine.compile: true")
    p.add_argument("--max-batch", type=int, default=64, help="e2e: the pool's max_batch")
    p.add_argument("--max-wait-ms", type=int, default=25, help="e2e: the pool's max_wait_ms")
    p.add_argument("--decode-threads", type=int, default=6, help="e2e: the pool's decode_threads (CPU decoding)")
    p.add_argument("--arch", choices=["yolov3", "tiny"], default="yolov3", help="e2e: the model")
    p.add_argument("--shed-behind", default="default", help="e2e: the pool's shed_behind (a number, null, default)")
    p.add_argument("--sources", default="device,host", help="two-gpu: where the frames come from")
    p.add_argument("--seed-processes", default="1,8,16", help="seed: the process counts")
    p.add_argument("--gpus", type=int, default=1, help="e2e: replica r runs on GPU r %% gpus")
    p.add_argument("--primaries", type=int, default=0, help="e2e: 0: one server (unix socket); N: a cluster of N")
    p.add_argument("--engine-gpu", default="0", help="e2e: the engine's gpu setting (null: the CPU, for a dry run)")
    p.add_argument("--ingest", choices=["synthetic", "replay"], default="synthetic",
                   help="e2e: ingest rendering and encoding every frame here, or frames encoded once and pushed at "
                        "the cameras' pace (bench/replay_cameras.py)")  # fmt: skip
    p.add_argument("--tag", default="", help="suffix for the JSON file name (e.g. one e2e sweep per setting)")
    a = p.parse_args()
    if a.part == "worker":
        arch, precision, gpu, fraction, growth, batch, compiled, *source = a.args
        flags = (growth == "1", a.seconds, int(batch), compiled == "1", *source)
        worker_loop(cast(Arch, arch), precision, int(gpu), float(fraction), *flags)
        return
    parts = ["model", "seed", "fractions", "decode", "e2e"] if a.part == "all" else [a.part]
    for part in parts:
        started = time.time()
        try:
            if part == "model":
                result = part_model(a.out)
            elif part == "seed":
                result = part_seed(a.out, a.compile, tuple(int(k) for k in a.seed_processes.split(",")), a.seconds)
            elif part == "buckets":
                result = part_buckets(a.out)
            elif part == "autotune":
                result = part_autotune(a.out)
            elif part == "fractions":
                result = part_fractions(a.out)
            elif part == "decode":
                result = part_decode(a.out)
            elif part == "compile":
                result = part_compile(a.out)
            elif part == "profile":
                result = part_profile(a.out)
            elif part == "two-gpu":
                result = part_two_gpu(a.out, a.compile, a.sources.split(","))
            else:
                streams = [int(s) for s in a.streams.split(",")]
                result = part_e2e(
                    a.out,
                    streams,
                    a.seconds,
                    a.replicas,
                    a.decode,
                    a.compile,
                    a.gpus,
                    a.max_batch,
                    a.max_wait_ms,
                    a.decode_threads,
                    a.arch,
                    a.shed_behind,
                    a.primaries,
                    a.engine_gpu,
                    a.ingest,
                )
        except Exception as exc:  # keep what the other parts measured
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result |= {"part": part, "seconds": round(time.time() - started), "machine": machine(),
                   "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"gpu_{part.replace('-', '_')}{a.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"== {part}: {json.dumps(result)[:1500]}", flush=True)


if __name__ == "__main__":
    main()
