"""A ByteTrack-class multi-object tracker (Zhang et al., 2022) for one camera: timestamp-aware and checkpointable.

Written here because the libraries looked at do not fit: roboflow ``trackers`` pulls the GUI opencv-python,
``supervision``'s ByteTrack is gone from its current release, ``norfair`` needs numpy<2 and ``boxmot`` is AGPL; and
ours must predict over the real time between sampled frames and save its whole state as plain data.

Motion. Each track is a constant-velocity Kalman filter over its box (cx, cy, w, h), velocities in pixels per
second, moved by dt = ts - previous ts. The noises are diagonal and each coordinate moves only with its own velocity,
so a track's covariance is four independent 2x2 blocks: all the tracks' filters are one array (6, tracks, 4),
prediction is one matrix product for all of them, and an update a dozen elementwise operations over the matched ones;
IoU matrices come in one go. Python loops are left only where a numpy call would cost more (a few dozen tracks).

Noise. ByteTrack's weights (standard deviations of 1/20 of the box size for position, 1/160 for velocity, per frame
of ~30 fps video) turned into rates per second: the process noise variance grows linearly with dt (a random walk), so
the noise put in over a stretch of time does not depend on how many frames were sampled in it, and one tuning holds
for every sampling rate. The velocity's is doubled (see below). x and w scale with the box width, y and h with its
height (ByteTrack scales all with the height: loose in y, tight in x for wide boxes). Measurement noise is 1/20 of the
detection's size.

Association, as ByteTrack with three changes: (1) strong detections (score >= high_score) against every live track, by
IoU with the track's prediction, gated at match_iou; a lost track's IoU is buffered (both boxes grown by
lost_buffer of their size on every side, C-BIoU's remedy for predictions that drift over a gap); the Hungarian
cost fuses the score (IoU x score, ByteTrack's ``fuse_score``) so that of two detections fighting for a track the
surer wins, the gate being on IoU alone; (2) weak detections against the confirmed tracks still free, by plain IoU
gated at low_match_iou: lost tracks too (ByteTrack takes only those matched in the previous update), tentative ones
never (so weak detections never make a track); (3) strong detections still unmatched, which would start tracks,
against confirmed tracks lost and free, by the distance from the prediction within recover_radius box sizes growing
with each second lost (an object a detector misses for seconds comes back under its id). A detection only ever
joins a track of its own class_id and label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from common.wire import Detection

if TYPE_CHECKING:
    from sink.tracker import TrackerSinkConfig

Array = npt.NDArray[np.float64]

# The Kalman filters of all tracks, one array (6, tracks, 4), tracks in creation order (so a restored tracker meets
# the same ties in the same order): six quantities, each a contiguous (tracks, 4) block over the four coordinates
# (cx, cy, w, h).
_POS, _VEL = 0, 1  # the box in pixels, its velocity in pixels per second
_P00, _P01, _P11 = 2, 3, 4  # var(position), cov(position, velocity), var(velocity)
_NOISE = 5  # the squared size the noises scale with: the last measured w (for cx and w) or h (for cy and h)

# ByteTrack's noise weights: standard deviations as fractions of the box size, per frame of the ~30 fps video they
# were tuned on. Ours are rates per second derived from them (a frame's variance times frames per second), with the
# velocity's doubled: on held-out synthetic sequences sampled with skipped frames, prediction over the gaps is what
# loses tracks, and a velocity that follows turns faster held them better (IDF1 +0.01 to +0.02; 0.01 less when no
# frame is skipped).
_REFERENCE_FPS = 30.0
_WEIGHT_POSITION = 1 / 20
_WEIGHT_VELOCITY = 1 / 160
_MEASURE_VAR = _WEIGHT_POSITION**2  # x size², per detection
_Q_POS = _WEIGHT_POSITION**2 * _REFERENCE_FPS  # x size² per second
_Q_VEL = (2 * _WEIGHT_VELOCITY * _REFERENCE_FPS) ** 2 * _REFERENCE_FPS  # x size²/s² per second (velocity in px/s)
_INIT_POS_VAR = (2 * _WEIGHT_POSITION) ** 2  # a new track, as ByteTrack's: 2x and 10x the weights
_INIT_VEL_VAR = (10 * _WEIGHT_VELOCITY * _REFERENCE_FPS) ** 2
_MIN_SIZE = 1.0  # pixels: the least width and height of a box, so areas and noises stay positive

# Detections are handled as columns (coordinates first, so the IoU's inner loops run along the detections):
# _GEOMETRY @ (x0, y0, x1, y1) = (x0, y0, -x1, -y1, cx, cy, w, h, w, h, w, h): corners for IoU (the far ones negated,
# so that one maximum finds the overlap), the measurement, and the sizes its coordinates' noises scale with. Every
# product is by 0, ±1 or ±0.5 (exact), so the result is the same whatever order the matmul sums in.
_GEOMETRY = np.array(
    [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, -1, 0],
        [0, 0, 0, -1],
        [0.5, 0, 0.5, 0],
        [0, 0.5, 0, 0.5],
        [-1, 0, 1, 0],
        [0, -1, 0, 1],
        [-1, 0, 1, 0],
        [0, -1, 0, 1],
        [-1, 0, 1, 0],
        [0, -1, 0, 1],
    ],
    dtype=np.float64,
)
_CORNER, _MEASURE, _SIZE = slice(0, 4), slice(4, 8), slice(8, 12)  # its row groups
# _CORNERS @ a track's (cx, cy, w, h) = (x0, y0, -x1, -y1), likewise exact.
_CORNERS = np.array([[1, 0, -0.5, 0], [0, 1, 0, -0.5], [-1, 0, -0.5, 0], [0, -1, 0, -0.5]], dtype=np.float64)
_INVALID = (0.0, 0.0, 1.0, 1.0, -1.0)  # a detection whose box is unusable: below every score threshold

_STATE_FORMAT = "streamyolo.bytetrack"
_STATE_VERSION = 1
_TRACK_KEYS = frozenset(
    {"id", "class_id", "label", "hits", "last_seen", "tracked", "box", "velocity", "covariance", "noise_size2"}
)


@dataclass(frozen=True, slots=True)
class Match:
    """A detection given to :meth:`ByteTracker.update` that is in a track."""

    index: int  # position of the detection in the list given to update()
    track_id: int  # >= 1, per tracker instance (one camera), never reused
    confirmed: bool  # the track has been seen min_hits times (now or before)
    started: bool  # it became confirmed in this very update (the caller raises its 'start' event)


@dataclass(frozen=True, slots=True)
class FrameTracks:
    """What one update did."""

    matches: list[Match]  # every detection that is in a track (tentative or confirmed), by detection order
    ended: list[int]  # ids of confirmed tracks unmatched for more than max_age_s, removed in this update


class ByteTracker:
    """The tracks of one camera. Not thread-safe: one caller per instance."""

    def __init__(
        self,
        *,
        high_score: float = 0.5,
        low_score: float = 0.1,
        new_track_score: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        min_hits: int = 3,
        max_age_s: float = 2.0,
        lost_buffer: float = 0.4,
        recover_radius: float = 1.0,
    ) -> None:
        if not (0 <= low_score <= high_score <= 1 and high_score > 0):
            raise ValueError(f"need 0 <= low_score ({low_score}) <= high_score ({high_score}) <= 1, high_score > 0")
        if not 0 < new_track_score <= 1:
            raise ValueError(f"new_track_score ({new_track_score}) must be in (0, 1]")
        if not (0 < match_iou < 1 and 0 < low_match_iou < 1):
            raise ValueError(f"match_iou ({match_iou}) and low_match_iou ({low_match_iou}) must be in (0, 1)")
        if min_hits < 1:
            raise ValueError(f"min_hits ({min_hits}) must be at least 1")
        if not 0 < max_age_s < math.inf:
            raise ValueError(f"max_age_s ({max_age_s}) must be a positive number of seconds")
        if not 0 <= lost_buffer <= 2:
            raise ValueError(f"lost_buffer ({lost_buffer}) must be in [0, 2]")
        if not 0 <= recover_radius <= 100:
            raise ValueError(f"recover_radius ({recover_radius}) must be in [0, 100]")
        self.high_score, self.low_score, self.new_track_score = high_score, low_score, new_track_score
        self.match_iou, self.low_match_iou = match_iou, low_match_iou
        self.min_hits, self.max_age_s, self.lost_buffer = min_hits, max_age_s, lost_buffer
        self.recover_radius = recover_radius
        self._start_score = max(new_track_score, high_score)  # only a strong detection starts a track
        self._next_id = 1
        self._ts: float | None = None
        # (class_id, label) -> a small number, all that the IoU's class mask needs.
        self._classes: dict[tuple[int, str], int] = {}
        self._class_keys: list[tuple[int, str]] = []
        # The live tracks, in creation order: the filters as one array, the rest as lists (cheaper than numpy's
        # fancy indexing at a few dozen tracks).
        self._kf: Array = np.empty((6, 0, 4))
        self._codes: Array = np.empty(0)  # the class of each, as in self._classes
        self._ids: list[int] = []
        self._hits: list[int] = []  # updates matched
        self._seen: list[float] = []  # time last matched
        self._tracked: list[bool] = []  # matched in the latest update

    @classmethod
    def from_settings(cls, cfg: TrackerSinkConfig) -> ByteTracker:
        return cls(
            high_score=cfg.high_score,
            low_score=cfg.low_score,
            new_track_score=cfg.new_track_score,
            match_iou=cfg.match_iou,
            low_match_iou=cfg.low_match_iou,
            min_hits=cfg.min_hits,
            lost_buffer=cfg.lost_buffer,
            recover_radius=cfg.recover_radius,
            max_age_s=cfg.max_age_s,
        )

    # --- tracking

    def update(self, detections: Sequence[Detection], ts: float) -> FrameTracks:
        """Assign one frame's detections (captured at ``ts``, UNIX seconds) to tracks."""
        if not math.isfinite(ts):
            raise ValueError(f"timestamp {ts!r} is not finite")
        last = self._ts
        if last is None or ts > last:
            now, dt = ts, (0.0 if last is None else ts - last)
            self._ts = ts
        else:  # not later than the previous frame: nothing moves, the clock stays
            now, dt = last, 0.0
        min_hits = self.min_hits
        ended: list[int] = []
        if self._ids:
            # Expired before association, so an expired track is never revived under its old id.
            max_age = self.max_age_s
            if now - min(self._seen) > max_age:
                ended = [
                    i
                    for i, h, s in zip(self._ids, self._hits, self._seen, strict=True)
                    if now - s > max_age and h >= min_hits
                ]
                self._keep([now - s <= max_age for s in self._seen])
            if dt > 0 and self._ids:
                kf = (_transition(dt) @ self._kf.reshape(6, -1)).reshape(self._kf.shape)
                np.maximum(kf[_POS, :, 2:], _MIN_SIZE, out=kf[_POS, :, 2:])  # a shrinking box stops at a pixel
                self._kf = kf
        if not detections:
            if self._ids:  # every track missed: the tentative ones die, the others are lost
                self._keep([h >= min_hits for h in self._hits])
                self._kf[_VEL, :, 2:] = 0.0
                self._tracked = [False] * len(self._ids)
            return FrameTracks([], ended)

        raw = self._rows(detections)
        geometry = _GEOMETRY @ raw[:, :4].T
        pairs = self._associate(raw, geometry) if self._ids else []
        found = self._correct(pairs, geometry, now)
        if len(found) < len(detections):
            found += self._births(raw, geometry, {d for d, _, _ in found}, now)
        found.sort()
        return FrameTracks([Match(d, i, h >= min_hits, h == min_hits) for d, i, h in found], ended)

    def flush(self, ts: float) -> list[int]:
        """End every confirmed track (its camera stopped) and forget the tentative ones: the ids ended."""
        if not math.isfinite(ts):
            raise ValueError(f"timestamp {ts!r} is not finite")
        ended = [i for i, h in zip(self._ids, self._hits, strict=True) if h >= self.min_hits]
        self._keep([False] * len(self._ids))
        if self._ts is None or ts > self._ts:
            self._ts = ts
        return ended

    def _rows(self, detections: Sequence[Detection]) -> Array:
        """The detections as rows (x0, y0, x1, y1, score, class). A box less than a pixel wide or high, or not finite
        (a detector's glitch), is made one that nothing takes."""
        classes = self._classes
        count = len(detections)
        try:
            raw = np.fromiter(_flat(detections, classes), np.float64, 6 * count).reshape(count, 6)
        except KeyError:  # a class seen for the first time
            for d in detections:
                if (d.class_id, d.label) not in classes:
                    classes[d.class_id, d.label] = len(self._class_keys)
                    self._class_keys.append((d.class_id, d.label))
            raw = np.fromiter(_flat(detections, classes), np.float64, 6 * count).reshape(count, 6)
        size = raw[:, 2:4] - raw[:, 0:2]
        valid = (size >= _MIN_SIZE) & (size < math.inf)  # NaN fails both
        if np.count_nonzero(valid) < valid.size:
            raw[~valid.all(axis=1), :5] = _INVALID
        return raw

    def _associate(self, raw: Array, geometry: Array) -> list[tuple[int, int]]:
        """The (track, detection) pairs of this frame, by ByteTrack's two rounds."""
        iou = _iou(self._kf[_POS], geometry)
        lost = [t for t, matched in enumerate(self._tracked) if not matched]
        if lost and self.lost_buffer:
            # A lost track's prediction drifts over the gap (a wrong velocity, a turn): it is compared buffered
            # (C-BIoU, Yang et al. 2023: both boxes grown by lost_buffer of their size on every side), so that a near
            # miss still overlaps. IDF1 0.854 -> 0.899 on the reference sequences, 0.76 -> 0.83 and 0.77 -> 0.87 on
            # the demo model's detections end to end (bench/tracker_accuracy.py).
            b, rows = self.lost_buffer, np.array(lost)
            iou[rows] = _iou(_grown(self._kf[_POS][rows], b), _grown_geometry(geometry, b))
        if len(self._class_keys) > 1:  # a track takes detections of its own class only
            iou *= self._codes[:, None] == raw[:, 5]
        score = raw[:, 4]
        # (1) strong detections, every live track: the score weighs in, the gate is on IoU alone.
        similarity = iou * np.where(score >= self.high_score, score, 0.0)
        similarity[iou < self.match_iou] = 0.0
        pairs = self._rounds(_assign(similarity), iou, score)
        return self._recover(pairs, raw, geometry) if self.recover_radius and len(pairs) < len(self._ids) else pairs

    def _rounds(self, pairs: list[tuple[int, int]], iou: Array, score: Array) -> list[tuple[int, int]]:
        tracks = len(self._ids)
        if len(pairs) == tracks:
            return pairs
        # (2) weak detections, the confirmed tracks still free, lost ones too (ByteTrack takes only those matched
        # last time; a sampled camera's detector often sees an object weakly for a while after losing it, and
        # re-finding it then keeps its id: +0.02 IDF1 on held-out sequences, ahead of roboflow's ByteTrack): IoU alone.
        low, high = self.low_score, self.high_score
        weak = [j for j, s in enumerate(score.tolist()) if low <= s < high]
        if not weak:
            return pairs
        taken = {t for t, _ in pairs}
        hits, min_hits = self._hits, self.min_hits
        candidates = [t for t in range(tracks) if hits[t] >= min_hits and t not in taken]
        if not candidates:
            return pairs
        sub = iou[np.array(candidates)[:, None], weak]
        sub[sub < self.low_match_iou] = 0.0
        return pairs + [(candidates[a], weak[b]) for a, b in _assign(sub)]

    def _recover(self, pairs: list[tuple[int, int]], raw: Array, geometry: Array) -> list[tuple[int, int]]:
        """(3) Strong detections that would start a track, against confirmed tracks lost for a while and not
        overlapping anything: by the distance of their centres from the track's prediction, within a radius of
        recover_radius box sizes, growing with every second the track has been lost. An object a detector misses
        for seconds (occluded) comes back under its id, when nothing of its class is nearer."""
        taken_tracks, taken = {t for t, _ in pairs}, {d for _, d in pairs}
        hits, tracked, min_hits = self._hits, self._tracked, self.min_hits
        lost = [t for t in range(len(self._ids)) if t not in taken_tracks and not tracked[t] and hits[t] >= min_hits]
        fresh = [d for d, s in enumerate(raw[:, 4].tolist()) if d not in taken and s >= self._start_score]
        if not lost or not fresh:
            return pairs
        rows = np.array(lost)
        pos = self._kf[_POS][rows]
        size = np.maximum(pos[:, 2], pos[:, 3])
        gone = (self._ts or 0.0) - np.array([self._seen[t] for t in lost])
        radius = self.recover_radius * size * (1.0 + gone)
        centres = geometry[_MEASURE][:2][:, fresh].T
        distance = np.hypot(pos[:, None, 0] - centres[None, :, 0], pos[:, None, 1] - centres[None, :, 1])
        similarity = 1.0 / (1.0 + distance / size[:, None])
        similarity[(distance > radius[:, None]) | (self._codes[rows][:, None] != raw[fresh, 5][None, :])] = 0.0
        return pairs + [(lost[a], fresh[b]) for a, b in _assign(similarity)]

    def _correct(self, pairs: list[tuple[int, int]], geometry: Array, now: float) -> list[tuple[int, int, int]]:
        """Update the matched tracks, lose or drop the others: (detection, track id, hits) of the matched."""
        tracks = len(self._ids)
        ids, hits, seen = self._ids, self._hits, self._seen
        tracked = [False] * tracks
        found = []
        for t, d in pairs:
            h = hits[t] + 1
            hits[t] = h
            seen[t] = now
            tracked[t] = True
            found.append((d, ids[t], h))
        if pairs:
            pairs.sort()
            track_rows, columns = zip(*pairs, strict=True)
            measured = geometry[:, np.array(columns)]
            if len(pairs) == tracks:  # all matched (the usual frame): rows 0, 1, ... in order, updated in place
                _kalman_update(self._kf, measured)
            else:
                rows = np.array(track_rows)
                self._kf[:, rows] = _kalman_update(self._kf[:, rows], measured)
        self._tracked = tracked
        if len(pairs) < tracks:
            # A lost box keeps its course but not its growth (ByteTrack too): over seconds, a size velocity would
            # shrink or blow it up.
            self._kf[_VEL, [t for t in range(tracks) if not tracked[t]], 2:] = 0.0
            # A tentative track that missed this update is dropped (nothing was published about it).
            min_hits = self.min_hits
            keep = [k or h >= min_hits for k, h in zip(tracked, hits, strict=True)]
            if not all(keep):
                self._keep(keep)
        return found

    def _births(self, raw: Array, geometry: Array, taken: set[int], now: float) -> list[tuple[int, int, int]]:
        """Start tracks from the strong detections left over: (detection, track id, hits) of each."""
        start = self._start_score
        born = [j for j, s in enumerate(raw[:, 4].tolist()) if s >= start and j not in taken]
        if not born:
            return []
        count = len(born)
        new = np.zeros((6, count, 4))
        new[_POS] = geometry[_MEASURE, born].T
        noise = np.square(geometry[_SIZE, born].T)
        new[_P00] = _INIT_POS_VAR * noise
        new[_P11] = _INIT_VEL_VAR * noise
        new[_NOISE] = noise
        self._kf = np.concatenate((self._kf, new), axis=1)
        self._codes = np.concatenate((self._codes, raw[born, 5]))
        ids = list(range(self._next_id, self._next_id + count))
        self._next_id += count
        self._ids += ids
        self._hits += [1] * count
        self._seen += [now] * count
        self._tracked += [True] * count
        # One hit: with min_hits == 1 a newborn confirms at once. That is all of ByteTrack's "tracks of the first
        # frame start activated" kept here: with min_hits > 1 the first frame earns no exception.
        return [(j, i, 1) for j, i in zip(born, ids, strict=True)]

    def _keep(self, keep: list[bool]) -> None:
        """Drop the tracks whose flag is False."""
        index = [i for i, k in enumerate(keep) if k]
        self._kf, self._codes = self._kf[:, index], self._codes[index]
        self._ids = [self._ids[i] for i in index]
        self._hits = [self._hits[i] for i in index]
        self._seen = [self._seen[i] for i in index]
        self._tracked = [self._tracked[i] for i in index]

    # --- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here, as plain data (msgpack-able)."""
        keys = self._class_keys
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "ts": self._ts,
            "next_id": self._next_id,
            "tracks": [
                {
                    "id": track_id,
                    "class_id": keys[int(code)][0],
                    "label": keys[int(code)][1],
                    "hits": hits,
                    "last_seen": seen,
                    "tracked": tracked,
                    "box": kalman[_POS],  # cx, cy, w, h
                    "velocity": kalman[_VEL],  # per second
                    "covariance": kalman[_P00] + kalman[_P01] + kalman[_P11],  # 4 x var(pos), cov, var(vel)
                    "noise_size2": kalman[_NOISE],
                }
                for kalman, code, track_id, hits, seen, tracked in zip(
                    self._kf.transpose(1, 0, 2).tolist(),
                    self._codes.tolist(),
                    self._ids,
                    self._hits,
                    self._seen,
                    self._tracked,
                    strict=True,
                )
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from what :meth:`state` returned. A malformed state raises ValueError and changes nothing."""
        if not isinstance(state, Mapping):
            raise ValueError(f"tracker state is a {type(state).__name__}, expected a map")
        if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"tracker state has format {state.get('format')!r} version {state.get('version')!r}, "
                f"expected {_STATE_FORMAT!r} version {_STATE_VERSION}"
            )
        missing = {"ts", "next_id", "tracks"} - state.keys()
        if missing:
            raise ValueError(f"tracker state lacks {sorted(missing)}")
        ts, next_id, tracks = state["ts"], state["next_id"], state["tracks"]
        if ts is not None and not _finite(ts):
            raise ValueError(f"tracker state: ts {ts!r} is neither null nor a finite number")
        if not _integer(next_id) or next_id < 1:
            raise ValueError(f"tracker state: next_id {next_id!r} is not an integer >= 1")
        if not isinstance(tracks, list):
            raise ValueError(f"tracker state: tracks is a {type(tracks).__name__}, expected a list")
        classes: dict[tuple[int, str], int] = {}
        class_keys: list[tuple[int, str]] = []
        numbers: list[float] = []
        codes: list[int] = []
        ids: list[int] = []
        hits: list[int] = []
        seen: list[float] = []
        tracked: list[bool] = []
        for i, track in enumerate(tracks):
            where = f"tracker state: track {i}"
            if not isinstance(track, Mapping) or track.keys() != _TRACK_KEYS:
                got = sorted(track.keys()) if isinstance(track, Mapping) else type(track).__name__
                raise ValueError(f"{where} must be a map of {sorted(_TRACK_KEYS)}, got {got}")
            track_id, class_id, label = track["id"], track["class_id"], track["label"]
            previous = ids[-1] if ids else 0
            if not _integer(track_id) or not previous < track_id < next_id:
                raise ValueError(
                    f"{where}: id {track_id!r} is not an integer above the previous track's ({previous}) and below "
                    f"next_id ({next_id}): tracks are kept in creation order"
                )
            if not _integer(class_id) or class_id < 0 or not isinstance(label, str):
                raise ValueError(f"{where}: class_id {class_id!r} / label {label!r} is not an integer >= 0 / a str")
            if not _integer(track["hits"]) or track["hits"] < 1:
                raise ValueError(f"{where}: hits {track['hits']!r} is not an integer >= 1")
            if not _finite(track["last_seen"]) or not isinstance(track["tracked"], bool):
                raise ValueError(f"{where}: last_seen must be a finite number and tracked a bool")
            for name, length in (("box", 4), ("velocity", 4), ("covariance", 12), ("noise_size2", 4)):
                value = track[name]
                if not isinstance(value, list) or len(value) != length or not all(_finite(v) for v in value):
                    raise ValueError(f"{where}: {name} must be a list of {length} finite numbers, got {value!r}")
                numbers.extend(value)
            key = (class_id, label)
            if key not in classes:
                classes[key] = len(class_keys)
                class_keys.append(key)
            codes.append(classes[key])
            ids.append(track_id)
            hits.append(track["hits"])
            seen.append(float(track["last_seen"]))
            tracked.append(track["tracked"])
        kf = np.array(numbers, dtype=np.float64).reshape(len(tracks), 6, 4).transpose(1, 0, 2).copy()
        bad = (kf[_POS, :, 2:] <= 0).any(axis=1) | (kf[[_P00, _P11, _NOISE]] < 0).any(axis=(0, 2))
        if bad.any():
            where = f"tracker state: track {int(bad.argmax())}"
            raise ValueError(f"{where} has a box size that is not positive, or a negative variance")
        self._kf, self._codes = kf, np.array(codes, dtype=np.float64)
        self._ids, self._hits, self._seen, self._tracked = ids, hits, seen, tracked
        self._next_id, self._ts = next_id, None if ts is None else float(ts)
        self._classes, self._class_keys = classes, class_keys


def _flat(detections: Sequence[Detection], classes: Mapping[tuple[int, str], int]) -> Iterator[float]:
    """x0, y0, x1, y1, score, class of each detection in turn (numpy reads a flat run faster than rows)."""
    return chain.from_iterable([(*d.box, d.score, classes[d.class_id, d.label]) for d in detections])


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_IDENTITY = np.eye(6)


def _transition(dt: float) -> Array:
    """F(dt), for kf' = F @ kf: pos += dt vel; P00 += 2 dt P01 + dt² P11 + q_pos dt noise; P01 += dt P11;
    P11 += q_vel dt noise."""
    f = _IDENTITY.copy()
    f[_POS, _VEL] = dt
    f[_P00, _P01] = 2 * dt
    f[_P00, _P11] = dt * dt
    f[_P00, _NOISE] = _Q_POS * dt
    f[_P01, _P11] = dt
    f[_P11, _NOISE] = _Q_VEL * dt
    return f


def _kalman_update(x: Array, geometry: Array) -> Array:
    """The filters ``x`` (6, m, 4) corrected by their detections (``geometry``'s m columns, see _GEOMETRY)."""
    noise = np.square(geometry[_SIZE].T)
    measure_var = _MEASURE_VAR * noise
    gain = x[_P00 : _P01 + 1] / (x[_P00] + measure_var)  # (2, m, 4): the position's and the velocity's
    x[_POS : _VEL + 1] += gain * (geometry[_MEASURE].T - x[_POS])
    # P11 - k_vel P01 first, while P01 is the prior's; then P00 (1 - k_pos) = k_pos R, and P01 (1 - k_pos) = k_vel R.
    x[_P11] -= gain[1] * x[_P01]
    np.multiply(gain, measure_var, out=x[_P00 : _P01 + 1])
    x[_NOISE] = noise
    return x


def _grown(pos: Array, b: float) -> Array:
    """Boxes (cx, cy, w, h) grown by ``b`` of their size on every side."""
    grown = pos.copy()
    grown[:, 2:] *= 1 + 2 * b
    return grown


def _grown_geometry(geometry: Array, b: float) -> Array:
    """Detections (see _GEOMETRY) grown by ``b`` of their size on every side: corners and sizes."""
    grown = geometry.copy()
    w, h = geometry[6], geometry[7]
    grown[0] -= b * w
    grown[1] -= b * h
    grown[2] -= b * w
    grown[3] -= b * h
    grown[6:8] *= 1 + 2 * b
    return grown


def _iou(pos: Array, geometry: Array) -> Array:
    """IoU of every track's predicted box (rows; ``pos``: cx, cy, w, h) with every detection (columns)."""
    corners = _CORNERS @ pos.T
    # max x0, max y0, -min x1, -min y1 of each pair: minus the overlap's sides is their sums, when negative.
    extremes = np.maximum(corners[:, :, None], geometry[_CORNER, None, :])
    sides = extremes[:2] + extremes[2:]
    np.minimum(sides, 0.0, out=sides)
    inter = sides[0] * sides[1]
    union = (pos[:, 2] * pos[:, 3])[:, None] + geometry[6] * geometry[7]
    union -= inter
    iou: Array = inter / union  # both boxes are at least a pixel wide, so the union is positive
    return iou


def _assign(similarity: Array) -> list[tuple[int, int]]:
    """The (row, column) pairs of the best one-to-one assignment, gated-out (zero) pairs left out.

    Dropping the zero pairs after solving the full matrix is still optimal: they add nothing to the sum."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return [
        (r, c) for r, c, v in zip(rows.tolist(), cols.tolist(), similarity[rows, cols].tolist(), strict=True) if v > 0
    ]
