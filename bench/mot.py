"""Tracking accuracy against a synthetic camera's ground truth: IDF1, MOTA and ID switches (CLEAR MOT and identity
metrics, computed by py-motmetrics, MIT).

The truth is what ingest writes with ``truth_path`` (each object's scene identity, label and box per frame seq);
the hypotheses are a tracker's ``Tracks`` messages. Boxes match at IoU >= 0.5 (the MOTChallenge convention).
motmetrics' own IoU helper calls ``np.asfarray``, gone in numpy 2: the distance matrix is computed here instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Box = Sequence[float]
Objects = list[tuple[int, Box]]
"""(identity, box) of each object in one frame."""


def truth_by_seq(path: Path, ignore: Iterable[str] = ("NULL",)) -> dict[int, Objects]:
    """The truth file of one camera: seq -> its objects (labels in ``ignore`` left out: the model is told to)."""
    skip = set(ignore)
    out: dict[int, Objects] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out[row["seq"]] = [(o["id"], o["box"]) for o in row["objects"] if o["label"] not in skip]
    return out


def distances(truth: Sequence[Box], hypotheses: Sequence[Box], min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU between every truth box and every hypothesis box; NaN (no match possible) under ``min_iou``."""
    if not truth or not hypotheses:
        return np.empty((len(truth), len(hypotheses)))
    t = np.asarray(truth, dtype=np.float64)[:, None, :]
    h = np.asarray(hypotheses, dtype=np.float64)[None, :, :]
    inter_w = np.clip(np.minimum(t[..., 2], h[..., 2]) - np.maximum(t[..., 0], h[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(t[..., 3], h[..., 3]) - np.maximum(t[..., 1], h[..., 1]), 0, None)
    inter = inter_w * inter_h
    iou = inter / (_area(t) + _area(h) - inter)
    cost: np.ndarray = 1.0 - iou
    cost[iou < min_iou] = np.nan
    return cost


def _area(b: np.ndarray) -> np.ndarray:
    area: np.ndarray = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return area


def score(truth: Mapping[int, Objects], tracked: Mapping[int, Objects]) -> dict[str, Any]:
    """IDF1, MOTA, ID switches and the counts behind them, over every frame of the truth (a frame the tracker
    never answered counts its objects as missed)."""
    import motmetrics as mm  # type: ignore[import-untyped]  # a dev and bench dependency only

    acc = mm.MOTAccumulator(auto_id=True)
    for seq in sorted(truth):
        objects, hypotheses = truth[seq], tracked.get(seq, [])
        acc.update(
            [i for i, _ in objects],
            [i for i, _ in hypotheses],
            distances([b for _, b in objects], [b for _, b in hypotheses]),
        )
    names = ["idf1", "mota", "num_switches", "num_frames", "num_objects", "num_misses", "num_false_positives"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="all")
    row = summary.loc["all"]
    return {
        "idf1": round(float(row["idf1"]), 4),
        "mota": round(float(row["mota"]), 4),
        "id_switches": int(row["num_switches"]),
        "frames": int(row["num_frames"]),
        "objects": int(row["num_objects"]),
        "misses": int(row["num_misses"]),
        "false_positives": int(row["num_false_positives"]),
    }
