"""Scoring detections against ground truth: mAP@0.5 (VOC, all points) and precision/recall at a threshold.

Truth boxes hidden behind shapes drawn after them (less than half visible) count as "difficult", as in VOC: a
detector is not asked to find them, and a detection on one is neither right nor wrong. No framework here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Labelled:
    label: str
    box: Box
    score: float = 1.0
    difficult: bool = False


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mark_occluded(truths: Sequence[Labelled], width: int, height: int, min_visible: float = 0.5) -> list[Labelled]:
    """``truths`` in drawing order; a box less than ``min_visible`` visible under later ones becomes difficult."""
    covered = np.zeros((height, width), bool)
    out: list[Labelled] = []
    for t in reversed(truths):
        x0, y0, x1, y1 = (round(v) for v in t.box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        area = max(1, (x1 - x0) * (y1 - y0))
        visible = 1.0 - float(covered[y0:y1, x0:x1].sum()) / area if x1 > x0 and y1 > y0 else 0.0
        covered[y0:y1, x0:x1] = True
        out.append(Labelled(t.label, t.box, t.score, t.difficult or visible < min_visible))
    return out[::-1]


def _match(dets: Sequence[Labelled], truths: Sequence[Labelled], threshold: float) -> list[str]:
    """Per detection, highest score first: "tp", "fp", or "ignore" (it found a difficult box)."""
    taken = [False] * len(truths)
    verdicts = []
    for d in sorted(dets, key=lambda d: -d.score):
        best, best_iou = -1, threshold
        for i, t in enumerate(truths):
            if t.label == d.label and (overlap := iou(d.box, t.box)) >= best_iou and not (taken[i] and not t.difficult):
                best, best_iou = i, overlap
        if best < 0:
            verdicts.append("fp")
        elif truths[best].difficult:
            verdicts.append("ignore")
        else:
            taken[best] = True
            verdicts.append("tp")
    return verdicts


def average_precision(
    frames: Sequence[tuple[Sequence[Labelled], Sequence[Labelled]]], label: str, iou_threshold: float = 0.5
) -> float:
    """VOC all-points AP of one label over (detections, truths) pairs, one pair a frame."""
    scored: list[tuple[float, str]] = []
    positives = 0
    for dets, truths in frames:
        mine = [t for t in truths if t.label == label]
        positives += sum(not t.difficult for t in mine)
        found = sorted((d for d in dets if d.label == label), key=lambda d: -d.score)
        scored += zip((d.score for d in found), _match(found, mine, iou_threshold), strict=True)
    if positives == 0:
        return float("nan")
    scored = [s for s in sorted(scored, key=lambda s: -s[0]) if s[1] != "ignore"]
    tp = np.cumsum([v == "tp" for _, v in scored], dtype=float)
    fp = np.cumsum([v == "fp" for _, v in scored], dtype=float)
    recall = np.concatenate([[0.0], tp / positives, [1.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1e-9), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(
    frames: Sequence[tuple[Sequence[Labelled], Sequence[Labelled]]], labels: Sequence[str]
) -> dict[str, float]:
    """AP@0.5 per label and their mean under ``"mAP"``."""
    aps = {label: average_precision(frames, label) for label in labels}
    aps["mAP"] = float(np.nanmean(list(aps.values())))
    return aps


def precision_recall(frames: Sequence[tuple[Sequence[Labelled], Sequence[Labelled]]]) -> tuple[float, float]:
    """Precision and recall of the detections as given (already thresholded), every label together."""
    tp = fp = positives = 0
    for dets, truths in frames:
        positives += sum(not t.difficult for t in truths)
        for verdict in _match(dets, truths, 0.5):
            tp += verdict == "tp"
            fp += verdict == "fp"
    return tp / max(1, tp + fp), tp / max(1, positives)
