"""The README's GPU table and plot, from the JSON ``bench/gpu_bench.py`` wrote (``bench/results/gpu_*.json``).

Run: ``python bench/gpu_report.py`` (needs matplotlib: ``pip install matplotlib``). Prints a Markdown table and
writes ``bench/results/gpu_e2e.png``: throughput and p99 capture-to-result latency against the number of streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"gpu_{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    model = load("model")
    print("| model | precision | batch | img/s | peak GPU memory |\n| --- | --- | ---: | ---: | ---: |")
    for r in model.get("model_only", []):
        memory = r["peak_gpu_memory_mb"]
        print(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['img_per_s']:,.0f} | {memory} MB |")
    decode = load("decode").get("decode", [])
    print("\n| frames | CPU OpenCV, one core | GPU nvJPEG, batch 64 | boxes matched (IoU >= 0.9) | heads max diff |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in decode:
        print(
            f"| {r['frame']} | {r['cpu_opencv_frames_per_s_one_core']:,.0f}/s | "
            f"{r['gpu_nvjpeg_frames_per_s_batch64']:,.0f}/s | {r['matched_iou_0_9_same_class']} of "
            f"{r['detections_cpu_path']} | {r['heads_max_rel_diff_gpu_vs_cpu_path']:.2%} |"
        )
    compiled = load("compile")
    print("\n| model, fp16 | graph | batch 1 | batch 8 | batch 32 | batch 64 | peak memory | engine start |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in dict.fromkeys(r["model"] for r in compiled.get("compile", [])):
        for flag in (False, True):
            rows = [r for r in compiled["compile"] if r["model"] == model and r["compiled"] == flag]
            rates = " | ".join(f"{r['img_per_s']:,.0f}" for r in rows)
            print(f"| {model} | {'compiled' if flag else 'eager'} | {rates} | {rows[0]['peak_gpu_memory_mb']:,} MB | "
                  f"{rows[0]['engine_start_s']} s |")  # fmt: skip
    for which, profile in load("profile").items():
        if isinstance(profile, dict) and "share_of_gpu_time" in profile:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in profile["share_of_gpu_time"].items())
            print(f"\nYOLOv3-416 fp16 batch 64, {which}: {profile['gpu_ms_per_batch']} ms, "
                  f"{profile['achieved_tflop_per_s']} TFLOP/s; GPU time: {shares}")  # fmt: skip
    e2e = e2e_rows()
    print(
        "\n| GPU | GPUs | replicas | max batch | graph | streams | frames/s | p50 ms | p99 ms | missing | detector "
        "cores | GPU memory | GPU MB/stream | host MB/stream |\n"
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in e2e:
        memory = sum(r.get("gpu_memory_mb_per_gpu", [r["gpu_memory_mb"]]))
        host = r.get("host_rss_mb_per_stream", "")
        print(
            f"| {r['card']} | {r.get('gpus', 1)} | {r['replicas']} | {r.get('max_batch', 64)} | "
            f"{'compiled' if r.get('compiled') else 'eager'} | {r['streams']} | {r['frames_per_s']:,.0f} | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {missing(r)} | "
            f"{detector_cores(r)} | {memory:,} MB | {memory / r['streams']:.1f} | {host} |"
        )
    seed = load("seed").get("seed_design", [])
    print("\n| seed design: processes | img/s total | GPU memory, all |\n| ---: | ---: | ---: |")
    for r in seed:
        print(f"| {r['processes']} | {r['img_per_s_total']} | {r.get('gpu0_used_mb_all_processes')} MB |")
    for r in load("two_gpu").get("two_gpu", []):
        print(f"\ntwo GPUs, frames from {r['frames_from']}: {r['one_gpu_img_per_s']:,.0f} img/s on one, "
              f"{r['two_gpus_img_per_s']:,.0f} on two: x{r['scaling']}")  # fmt: skip
    if e2e:
        plot(e2e)


def missing(r: dict[str, Any]) -> str:
    """Frames in the window without a result; since shedding, with how many of them were shed and how many stale."""
    if "missing_in_window" in r:
        return str(r["missing_in_window"])
    return f"{r['missing_in_window_stale_or_shed']} ({r['shed']:,} shed, {r['stale']:,} stale)"


def detector_cores(r: dict[str, Any]) -> str:
    cores = r.get("cpu_cores")
    if cores is None:
        return str(r["detector_cpu_cores"])
    per_k = r.get("cores_per_1000_fps", {})
    return f"{cores['detectors']} ({per_k.get('detectors', '?')} per 1,000 fps; ingest {per_k.get('ingest', '?')})"


def e2e_rows() -> list[dict[str, Any]]:
    """Every end-to-end row of every ``gpu_e2e*.json``, with the GPU's name, in a stable order."""
    rows = []
    for path in sorted(RESULTS.glob("gpu_e2e*.json")):
        data = json.loads(path.read_text())
        card = data.get("machine", {}).get("gpus", ["GPU"])[0].split(",")[0].replace("NVIDIA ", "")
        rows += [{**r, "card": card} for r in data.get("e2e", [])]
    return sorted(rows, key=series_key)


def series_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["card"], r.get("gpus", 1), bool(r.get("compiled")), r["replicas"], r.get("max_batch", 64), r["streams"])


def plot(e2e: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    everything = sorted({r["streams"] for r in e2e})
    top.plot(everything, [5 * n for n in everything], ":", color="grey", label="offered (5 fps a stream)")
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in e2e:
        series.setdefault(series_key(r)[:5], []).append(r)
    for (card, gpus, compiled, replicas, batch), rows in series.items():
        graph = "compiled" if compiled else "eager, before publishing had its own thread"
        label = f"{gpus} x {card}, {replicas} replica{'s' if replicas > 1 else ''}, {graph}, batch {batch}"
        streams = [r["streams"] for r in rows]
        line = top.plot(streams, [r["frames_per_s"] for r in rows], "o-" if compiled else "s--", label=label)
        bottom.plot(streams, [r["p99_ms"] for r in rows], "o-" if compiled else "s--", color=line[0].get_color())
    top.set_ylabel("frames/s published")
    top.legend(fontsize=7)
    top.set_title("YOLOv3-416 fp16, torch engine, JPEG decode on the GPU: one point per run", fontsize=10)
    bottom.axhline(150, color="tab:red", linestyle="--", linewidth=0.8)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 capture-to-result, ms")
    bottom.set_xlabel("streams at 5 fps (416-px JPEG)")
    fig.tight_layout()
    fig.savefig(RESULTS / "gpu_e2e.png", dpi=110)
    print(f"\nwrote {RESULTS / 'gpu_e2e.png'}")


if __name__ == "__main__":
    main()
