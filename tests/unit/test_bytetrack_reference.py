"""Our ByteTracker against a library's, roboflow ``trackers``' ByteTrackTracker (Apache-2.0), on the same noisy,
unevenly sampled detections of the synthetic scene, both scored against the scene's truth with ``motmetrics`` (MIT).

The library is not a run-time dependency (its declared dependencies pull the GUI opencv-python); CI installs it with
``pip install --no-deps trackers==2.6.1 supervision==0.31.2 pydeprecate tqdm defusedxml``. Missing, this test is
skipped, except under CI, where it fails. ``pytest -s`` prints both trackers' figures.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from common.scenes import Scene
from common.wire import Detection
from sink.tracker.bytetrack import ByteTracker


def need(name: str) -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module(name)  # CI installs it: missing, the module fails to import
    module: ModuleType = pytest.importorskip(name)
    return module


trackers = need("trackers")
sv = need("supervision")
mm = need("motmetrics")

T0 = 1_700_000_000.0
FPS = 10.0  # the synthetic camera's default rate (ingest.sources.synthetic): one scene frame every 0.1 s
SEEDS = (1, 2, 3, 4, 5, 6)  # the constants of sink.tracker.bytetrack were chosen on seeds 11-18, never these
WIDTH, HEIGHT, SHAPES = 640, 480, 6
SAMPLES = 300  # sampled frames per sequence
STEPS = (1, 1, 1, 1, 2, 2, 3)  # frames from one sample to the next, drawn from these: ~6.4 a second, uneven
MISS = 0.08  # a shape goes undetected
WEAK = 0.15  # a shape's detection scores low (0.2-0.5): only ByteTrack's second round can use it
JITTER = 0.03  # box corners' noise, as a fraction of the shape's size
FALSE_PER_FRAME = 0.3  # mean false positives per frame
SETTINGS: dict[str, Any] = {  # the tracker sink's defaults, but for low_match_iou: the library has one IoU gate
    "high_score": 0.5,
    "low_score": 0.1,
    "new_track_score": 0.6,
    "match_iou": 0.2,
    "low_match_iou": 0.2,
    "min_hits": 3,
    "max_age_s": 2.0,
}


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    ts: float
    truth: list[tuple[int, Box]]  # (object, box): an object's identity is its place in the scene's list
    detections: list[Detection]


def sequence(seed: int) -> list[Sample]:
    """Detections of the scene's shapes with noise, misses, weak scores and false positives, sampled unevenly."""
    scene = Scene(seed, WIDTH, HEIGHT, SHAPES)
    rng = np.random.default_rng(seed + 1000)
    labels = sorted({t.label for t in scene.truth(0)})
    out: list[Sample] = []
    index = 0
    for _ in range(SAMPLES):
        index += int(rng.choice(STEPS))
        shapes = scene.truth(index)
        truth = [(k, _box(t.box)) for k, t in enumerate(shapes)]
        detections = []
        for t in shapes:
            if rng.random() < MISS:
                continue
            size = t.box[2] - t.box[0]
            noisy = _box(rng.normal(t.box, JITTER * size))
            score = rng.uniform(0.2, 0.5) if rng.random() < WEAK else rng.uniform(0.6, 0.95)
            detections.append(_detection(t.label, labels, score, noisy))
        for _ in range(rng.poisson(FALSE_PER_FRAME)):
            side = rng.uniform(40, 120)
            x, y = rng.uniform(0, WIDTH - side), rng.uniform(0, HEIGHT - side)
            label = labels[int(rng.integers(len(labels)))]
            detections.append(_detection(label, labels, rng.uniform(0.3, 0.7), _box((x, y, x + side, y + side))))
        out.append(Sample(T0 + index / FPS, truth, detections))
    return out


def _box(values: Any) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


def _detection(label: str, labels: list[str], score: float, box: Box) -> Detection:
    return Detection(label=label, class_id=labels.index(label), score=float(score), box=box)


Hypotheses = list[tuple[int, Box]]  # (track, box) of each tracked detection


def ours(samples: list[Sample]) -> list[Hypotheses]:
    """The confirmed tracks' detections, frame by frame, as the tracker sink publishes them."""
    tracker = ByteTracker(**SETTINGS)
    out = []
    for s in samples:
        matches = tracker.update(s.detections, s.ts).matches
        out.append([(m.track_id, s.detections[m.index].box) for m in matches if m.confirmed])
    return out


def library(samples: list[Sample]) -> list[Hypotheses]:
    """The same through the library: one tracker per class, since it matches across classes and ours never does;
    the weakest detections dropped first, since it has no low_score and our caller does that for ours."""
    per_class: dict[int, Any] = {}
    out = []
    for s in samples:
        frame: Hypotheses = []
        classes = {d.class_id for d in s.detections} | set(per_class)
        for class_id in sorted(classes):
            tracker = per_class.get(class_id)
            if tracker is None:
                tracker = per_class[class_id] = trackers.ByteTrackTracker(
                    lost_track_buffer=round(SETTINGS["max_age_s"] * 30),  # in 30 fps frames: max_age_s seconds
                    frame_rate=FPS,
                    track_activation_threshold=SETTINGS["new_track_score"],
                    minimum_consecutive_frames=SETTINGS["min_hits"],
                    minimum_iou_threshold=SETTINGS["match_iou"],
                    high_conf_det_threshold=SETTINGS["high_score"],
                )
            chosen = [
                i for i, d in enumerate(s.detections) if d.class_id == class_id and d.score >= SETTINGS["low_score"]
            ]
            boxes = np.array([s.detections[i].box for i in chosen], dtype=np.float64).reshape(-1, 4)
            result = tracker.update(
                sv.Detections(
                    xyxy=boxes,
                    confidence=np.array([s.detections[i].score for i in chosen], dtype=np.float64),
                    class_id=np.full(len(chosen), class_id, dtype=int),
                    data={"index": np.array(chosen, dtype=int)},
                ),
                timestamp=s.ts,
            )
            kept = result.data.get("index", np.empty(0, dtype=int))  # an empty result comes without the data
            for index, track_id in zip(kept.tolist(), result.tracker_id.tolist(), strict=True):
                if track_id >= 0:  # -1: not confirmed yet
                    frame.append((class_id * 1_000_000 + track_id, s.detections[index].box))
        out.append(frame)
    return out


def _iou_distance(truth: np.ndarray, hyp: np.ndarray) -> np.ndarray:
    """motmetrics' distances: 1 - IoU, NaN (no match) under IoU 0.5. Its own iou_matrix needs numpy < 2."""
    if not len(truth) or not len(hyp):
        return np.empty((len(truth), len(hyp)))
    lo = np.maximum(truth[:, None, :2], hyp[None, :, :2])
    hi = np.minimum(truth[:, None, 2:], hyp[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_t = np.prod(truth[:, 2:] - truth[:, :2], axis=1)
    area_h = np.prod(hyp[:, 2:] - hyp[:, :2], axis=1)
    iou = inter / (area_t[:, None] + area_h[None, :] - inter)
    distance: np.ndarray = np.where(iou >= 0.5, 1 - iou, np.nan)
    return distance


def score(sequences: list[tuple[list[Sample], list[Hypotheses]]]) -> dict[str, float]:
    accumulators = []
    for samples, hypotheses in sequences:
        acc = mm.MOTAccumulator(auto_id=True)
        for s, hyp in zip(samples, hypotheses, strict=True):
            truth = np.array([b for _, b in s.truth], dtype=np.float64).reshape(-1, 4)
            boxes = np.array([b for _, b in hyp], dtype=np.float64).reshape(-1, 4)
            acc.update([k for k, _ in s.truth], [h for h, _ in hyp], _iou_distance(truth, boxes))
        accumulators.append(acc)
    summary = mm.metrics.create().compute_many(
        accumulators,
        metrics=["idf1", "mota", "num_switches"],
        names=[str(i) for i in range(len(accumulators))],
        generate_overall=True,
    )
    overall = summary.loc["OVERALL"]
    return {"idf1": float(overall["idf1"]), "mota": float(overall["mota"]), "switches": int(overall["num_switches"])}


def test_ours_tracks_as_well_as_the_library() -> None:
    data = [sequence(seed) for seed in SEEDS]
    mine = score([(samples, ours(samples)) for samples in data])
    theirs = score([(samples, library(samples)) for samples in data])
    print(f"\nours:    IDF1 {mine['idf1']:.3f}  MOTA {mine['mota']:.3f}  ID switches {mine['switches']}")
    print(f"library: IDF1 {theirs['idf1']:.3f}  MOTA {theirs['mota']:.3f}  ID switches {theirs['switches']}")
    # Measured: ours 0.829 / 0.880 / 21 switches, the library 0.841 / 0.899 / 25. Not 0.9: the shapes bounce off the
    # walls at once, and across skipped frames a constant-velocity prediction then points the wrong way (with no frame
    # skipped both pass 0.9 IDF1 on held-out seeds). The library gains a little by letting lost and tentative tracks
    # take weak detections too, which ByteTrack (and ours) does not.
    assert mine["idf1"] >= 0.8
    assert mine["mota"] >= 0.85
    assert mine["idf1"] >= theirs["idf1"] - 0.03
    assert mine["mota"] >= theirs["mota"] - 0.03
    assert mine["switches"] <= theirs["switches"] + 5


def test_the_scoring_tells_a_bad_tracker_from_a_good_one() -> None:
    """The figures above can fail: a tracker that gives every frame new ids scores far below ours."""
    samples = sequence(SEEDS[0])
    good = score([(samples, ours(samples))])
    shuffled = [[(1000 * i + k, box) for k, (_, box) in enumerate(frame)] for i, frame in enumerate(ours(samples))]
    bad = score([(samples, shuffled)])
    assert bad["idf1"] < 0.2 and good["idf1"] > 0.7
    assert bad["switches"] > 10 * good["switches"] > 0
