"""Letterbox, decode and NMS against values worked out by hand from keras-yolo3's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from detector.yolo.files import DEFAULT_ANCHORS
from detector.yolo.postprocess import ANCHOR_MASKS, Detections, decode, letterbox, letterbox_into, nms

GREY = np.float32(128) / np.float32(255)
ANCHORS = DEFAULT_ANCHORS["yolov3"]
TINY = DEFAULT_ANCHORS["tiny"]
BACKGROUND = -20.0  # sigmoid(-20) ~ 2e-9: nothing passes any threshold


def _heads(batch: int, num_classes: int, size: int = 416, strides: tuple[int, ...] = (32, 16, 8)) -> list[np.ndarray]:
    return [
        np.full((batch, size // s, size // s, 3 * (5 + num_classes)), BACKGROUND, dtype=np.float32) for s in strides
    ]


def _put(
    head: np.ndarray,
    *,
    b: int = 0,
    row: int,
    col: int,
    anchor: int,
    num_classes: int,
    obj: float,
    cls: int,
    txy: tuple[float, float] = (0.0, 0.0),
    twh: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Write one prediction: raw logits for anchor slot ``anchor`` of cell (row, col)."""
    base = anchor * (5 + num_classes)
    head[b, row, col, base : base + 4] = [txy[0], txy[1], twh[0], twh[1]]
    head[b, row, col, base + 4] = obj
    head[b, row, col, base + 5 : base + 5 + num_classes] = -20.0
    head[b, row, col, base + 5 + cls] = 20.0


def _sig(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


# ---------------------------------------------------------------- letterbox


def test_anchor_masks_are_keras_yolo3s() -> None:
    assert ANCHOR_MASKS == {"yolov3": [[6, 7, 8], [3, 4, 5], [0, 1, 2]], "tiny": [[3, 4, 5], [1, 2, 3]]}


def test_letterbox_landscape_bars_top_and_bottom() -> None:
    image = np.full((480, 640, 3), 200, np.uint8)  # h=480, w=640: scale 0.65 -> 416x312, dy = 52
    out = letterbox(image, 416)
    assert out.shape == (416, 416, 3)
    assert out.dtype == np.float32
    assert (out[:52] == GREY).all()
    assert (out[364:] == GREY).all()
    np.testing.assert_array_equal(out[52:364], np.float32(200) / np.float32(255))


def test_letterbox_portrait_bars_left_and_right() -> None:
    image = np.full((640, 480, 3), 30, np.uint8)  # h=640, w=480: 312 wide, dx = 52
    out = letterbox(image, 416)
    assert (out[:, :52] == GREY).all()
    assert (out[:, 364:] == GREY).all()
    np.testing.assert_array_equal(out[:, 52:364], np.float32(30) / np.float32(255))


def test_letterbox_uneven_bars_put_the_extra_pixel_at_the_bottom() -> None:
    # 300x200 -> scale 416/300, height int(277.33) = 277, dy = (416 - 277) // 2 = 69, 70 rows below.
    out = letterbox(np.full((200, 300, 3), 255, np.uint8), 416)
    content_rows = np.flatnonzero((out != GREY).any(axis=(1, 2)))
    assert content_rows[0] == 69
    assert content_rows[-1] == 69 + 277 - 1
    assert out.max() == 1.0


def test_letterbox_keeps_orientation_and_channels() -> None:
    # Left half red, right half blue, top-left pixel block green: a transpose or BGR swap would show.
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :320, 0] = 255
    image[:, 320:, 2] = 255
    out = letterbox(image, 416)
    row = out[208]
    assert row[10, 0] == 1.0 and row[10, 2] == 0.0
    assert row[400, 2] == 1.0 and row[400, 0] == 0.0


def test_letterbox_into_writes_only_its_slice() -> None:
    batch = np.full((3, 64, 64, 3), -1.0, np.float32)
    letterbox_into(np.full((50, 100, 3), 10, np.uint8), 64, batch[1])
    assert (batch[0] == -1).all() and (batch[2] == -1).all()
    assert (batch[1, :16] == GREY).all()  # 100x50 -> 64x32, dy = 16
    np.testing.assert_array_equal(batch[1, 16:48], np.float32(10) / np.float32(255))


def test_letterbox_same_size_image_is_copied_exactly() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(letterbox(image, 64), image.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize(
    ("image", "out"),
    [
        (np.zeros((10, 10), np.uint8), np.zeros((32, 32, 3), np.float32)),
        (np.zeros((10, 10, 4), np.uint8), np.zeros((32, 32, 3), np.float32)),
        (np.zeros((10, 10, 3), np.float32), np.zeros((32, 32, 3), np.float32)),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((32, 32, 3), np.float64)),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((16, 32, 3), np.float32)),
    ],
)
def test_letterbox_rejects_wrong_arrays(image: np.ndarray, out: np.ndarray) -> None:
    with pytest.raises(ValueError, match="letterbox"):
        letterbox_into(image, 32, out)


# ---------------------------------------------------------------- decode


def test_one_box_in_original_pixels_through_the_letterbox() -> None:
    # 640x480 image in a 416 input: scale 0.65, content 416x312 at dy = 52 (dx = 0).
    heads = _heads(1, 2)
    # Head 0 (stride 32, anchors 6,7,8); slot 1 = anchor 7 = 156x198 input px; cell row 6, col 5.
    _put(heads[0], row=6, col=5, anchor=1, num_classes=2, obj=10.0, cls=1)
    [det] = decode(heads, ANCHORS, 2, 416, [(640, 480)])
    assert len(det) == 1
    # Centre in input pixels = (cell + sigmoid(0)) * stride; size = anchor. Undo the letterbox by hand.
    cx, cy, bw, bh = (5 + 0.5) * 32, (6 + 0.5) * 32, 156.0, 198.0
    scale, dx, dy = 0.65, 0.0, 52.0
    expected = [
        (cx - bw / 2 - dx) / scale,
        (cy - bh / 2 - dy) / scale,
        (cx + bw / 2 - dx) / scale,
        (cy + bh / 2 - dy) / scale,
    ]
    np.testing.assert_allclose(det.boxes[0], expected, atol=1e-3)
    np.testing.assert_allclose(det.boxes[0], [150.769, 87.692, 390.769, 392.308], atol=1e-3)
    assert det.classes.tolist() == [1]
    assert det.scores[0] == pytest.approx(_sig(10.0) * _sig(20.0), rel=1e-6)
    assert det.boxes.dtype == np.float32
    assert det.scores.dtype == np.float32
    assert det.classes.dtype == np.int32


def test_offsets_and_log_sizes_move_the_box() -> None:
    # txy shifts the centre by sigmoid(t) of a cell, twh scales the anchor by exp(t). Square image: no bars.
    heads = _heads(1, 1)
    _put(heads[2], row=10, col=20, anchor=2, num_classes=1, obj=10.0, cls=0, txy=(2.0, -1.0), twh=(0.5, -0.25))
    [det] = decode(heads, ANCHORS, 1, 416, [(832, 832)])
    cx = (20 + _sig(2.0)) * 8 * 2
    cy = (10 + _sig(-1.0)) * 8 * 2
    bw = 33 * np.exp(0.5) * 2  # head 2 slot 2 = anchor 2 = 33x23
    bh = 23 * np.exp(-0.25) * 2
    np.testing.assert_allclose(det.boxes[0], [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], rtol=1e-5)


def test_letterbox_is_undone_with_a_rounded_shape_as_keras_yolo3() -> None:
    # 1000x333: letterbox truncates the height to int(138.53) = 138, yolo_correct_boxes rounds it to 139.
    heads = _heads(1, 1)
    _put(heads[0], row=6, col=6, anchor=0, num_classes=1, obj=10.0, cls=0)  # centred, anchor 6 = 116x90
    [det] = decode(heads, ANCHORS, 1, 416, [(1000, 333)])
    half_h = 45 / 139 * 333  # half the box height in image pixels, through the 139-pixel content
    np.testing.assert_allclose(det.boxes[0, [1, 3]], [166.5 - half_h, 166.5 + half_h], atol=1e-3)
    assert letterbox(np.zeros((333, 1000, 3), np.uint8), 416)[:, 0, 0].tolist().count(0.0) == 138


def test_boxes_are_clipped_to_the_image() -> None:
    heads = _heads(1, 1)
    # Top-left cell, anchor 8 (373x326) doubled: reaches far outside the image on the top and left.
    _put(heads[0], row=0, col=0, anchor=2, num_classes=1, obj=10.0, cls=0, twh=(0.7, 0.7))
    _put(heads[0], row=12, col=12, anchor=2, num_classes=1, obj=9.0, cls=0, twh=(0.7, 0.7))
    [det] = decode(heads, ANCHORS, 1, 416, [(640, 480)], iou_threshold=0.99)
    assert len(det) == 2
    assert det.boxes[0, 0] == 0.0 and det.boxes[0, 1] == 0.0
    assert det.boxes[1, 2] == 640.0 and det.boxes[1, 3] == 480.0
    assert (det.boxes[:, 2] > det.boxes[:, 0]).all()


def test_score_threshold_is_objectness_times_class_probability() -> None:
    heads = _heads(1, 3)
    _put(heads[1], row=3, col=3, anchor=0, num_classes=3, obj=0.0, cls=0)  # 0.5 * ~1 = 0.5
    _put(heads[1], row=20, col=20, anchor=0, num_classes=3, obj=-1.0, cls=2)  # 0.269
    [strict] = decode(heads, ANCHORS, 3, 416, [(416, 416)], score_threshold=0.3)
    assert strict.classes.tolist() == [0]
    assert strict.scores[0] == pytest.approx(0.5, abs=1e-6)
    [loose] = decode(heads, ANCHORS, 3, 416, [(416, 416)], score_threshold=0.25)
    assert loose.classes.tolist() == [0, 2]
    assert loose.scores[1] == pytest.approx(_sig(-1.0), rel=1e-5)
    # The threshold is inclusive (score >= threshold), as yolo_eval's mask.
    [edge] = decode(heads, ANCHORS, 3, 416, [(416, 416)], score_threshold=float(loose.scores[1]))
    assert edge.classes.tolist() == [0, 2]


def test_nms_is_per_class_and_orders_by_class_then_score() -> None:
    heads = _heads(1, 2)
    # Neighbouring cells with the 373x326 anchor: IoU ~0.9. Two of class 1, one of class 0 on top of them.
    _put(heads[0], row=6, col=6, anchor=2, num_classes=2, obj=1.0, cls=1)
    _put(heads[0], row=6, col=7, anchor=2, num_classes=2, obj=3.0, cls=1)
    _put(heads[0], row=7, col=6, anchor=2, num_classes=2, obj=0.5, cls=0)
    # A far-away small box of class 1 survives NMS.
    _put(heads[2], row=2, col=2, anchor=0, num_classes=2, obj=2.0, cls=1)
    [det] = decode(heads, ANCHORS, 2, 416, [(416, 416)])
    assert det.classes.tolist() == [0, 1, 1]
    np.testing.assert_allclose(det.scores, [_sig(0.5), _sig(3.0), _sig(2.0)], rtol=1e-5)
    # The kept class-1 box is the higher-scoring one, in column 7: left edge 7.5 * 32 - 373 / 2.
    assert det.boxes[1, 0] == pytest.approx(7.5 * 32 - 373 / 2, abs=1e-3)


def test_max_per_class_caps_each_class_keeping_the_best() -> None:
    heads = _heads(1, 2)
    logits = np.linspace(-0.5, 4.0, 30)
    for i, logit in enumerate(logits):  # 30 separate small boxes of class 0, 3 of class 1
        _put(heads[2], row=2 * (i // 10), col=4 * (i % 10), anchor=0, num_classes=2, obj=logit, cls=0)
    for i in range(3):
        _put(heads[2], row=40, col=10 * i, anchor=0, num_classes=2, obj=5.0, cls=1)
    [det] = decode(heads, ANCHORS, 2, 416, [(416, 416)], score_threshold=0.1)
    assert det.classes.tolist() == [0] * 20 + [1] * 3
    expected = np.sort(1 / (1 + np.exp(-logits)))[::-1][:20]
    np.testing.assert_allclose(det.scores[:20], expected, rtol=1e-5)
    [five] = decode(heads, ANCHORS, 2, 416, [(416, 416)], score_threshold=0.1, max_per_class=5)
    assert five.classes.tolist() == [0] * 5 + [1] * 3


def test_batch_maps_each_image_with_its_own_size() -> None:
    heads = _heads(3, 1)
    for b in range(2):
        _put(heads[0], b=b, row=6, col=6, anchor=0, num_classes=1, obj=10.0, cls=0)  # centre of the input
    dets = decode(heads, ANCHORS, 1, 416, [(640, 480), (480, 640), (100, 100)])
    assert [len(d) for d in dets] == [1, 1, 0]
    # Same prediction, centred: lands on each image's centre, 116x90 input px divided by its scale 0.65.
    np.testing.assert_allclose(
        dets[0].boxes[0], [320 - 58 / 0.65, 240 - 45 / 0.65, 320 + 58 / 0.65, 240 + 45 / 0.65], atol=1e-3
    )
    np.testing.assert_allclose(
        dets[1].boxes[0], [240 - 58 / 0.65, 320 - 45 / 0.65, 240 + 58 / 0.65, 320 + 45 / 0.65], atol=1e-3
    )
    assert dets[2].boxes.shape == (0, 4)
    assert dets[2].classes.dtype == np.int32


def test_tiny_heads_use_keras_yolo3_tiny_masks() -> None:
    heads = _heads(1, 1, size=320, strides=(32, 16))
    # Tiny head 1 uses anchors [1, 2, 3]: slot 0 is anchor 1 = 23x27 (not anchor 0 = 10x14).
    _put(heads[1], row=10, col=10, anchor=0, num_classes=1, obj=10.0, cls=0)
    # Head 0 uses [3, 4, 5]: slot 2 is anchor 5 = 344x319, centred at (176, 176), clipped right and bottom.
    _put(heads[0], row=5, col=5, anchor=2, num_classes=1, obj=9.0, cls=0)
    [det] = decode(heads, TINY, 1, 320, [(320, 320)], iou_threshold=0.99)
    np.testing.assert_allclose(det.boxes[0], [168 - 11.5, 168 - 13.5, 168 + 11.5, 168 + 13.5], atol=1e-4)
    np.testing.assert_allclose(det.boxes[1], [176 - 172, 176 - 159.5, 320, 320], atol=1e-4)


def test_extreme_logits_give_no_nan_and_no_warning() -> None:
    heads = _heads(1, 1)
    heads[0][...] = -1000.0
    _put(heads[0], row=1, col=1, anchor=0, num_classes=1, obj=1000.0, cls=0, twh=(1000.0, -1000.0))
    [det] = decode(heads, ANCHORS, 1, 416, [(416, 416)])  # pyproject turns RuntimeWarnings into errors
    assert len(det) == 1
    assert np.isfinite(det.boxes).all()
    assert det.scores[0] == 1.0


def test_wrong_channel_count_names_expected_and_got() -> None:
    heads = _heads(1, 2)
    with pytest.raises(ValueError, match=r"should have shape \(1, 13, 13, 18\).*got \(1, 13, 13, 21\)"):
        decode(heads, ANCHORS, 1, 416, [(416, 416)])
    with pytest.raises(ValueError, match=r"expected 3 output heads .* got 1"):
        decode(heads[:1], ANCHORS, 2, 416, [(416, 416)])
    with pytest.raises(ValueError, match="at least 9 anchors, got 6"):
        decode(heads, TINY, 2, 416, [(416, 416)])
    with pytest.raises(ValueError, match="should have shape"):
        decode(heads, ANCHORS, 2, 416, [(416, 416), (416, 416)])  # 2 sizes for a batch of 1
    with pytest.raises(ValueError, match="should have shape"):
        decode(heads, ANCHORS, 2, 320, [(416, 416)])  # grids of a 416 input


def test_detections_len() -> None:
    assert len(Detections.empty()) == 0


# ---------------------------------------------------------------- nms


def test_nms_suppresses_only_above_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], np.float32)  # IoU(0, 1) = 0.5
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, 20).tolist() == [0, 1, 2]  # 0.5 is not > 0.5: kept, as TF does
    assert nms(boxes, scores, 0.49, 20).tolist() == [0, 2]
    assert nms(boxes, scores, 0.49, 1).tolist() == [0]
    assert nms(boxes, scores, 0.49, 0).tolist() == []
    assert nms(boxes[::-1], scores[::-1], 0.49, 20).tolist() == [2, 0]


def test_nms_matches_tensorflow_on_random_boxes() -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    for trial in range(5):
        n = 200
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(5, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        max_out = 20 if trial % 2 else 200
        ours = nms(boxes, scores, 0.45, max_out)
        # TF wants (y1, x1, y2, x2); IoU does not care, but feed it what it expects.
        theirs = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, max_out, iou_threshold=0.45)
        assert ours.tolist() == theirs.numpy().tolist()


def test_float16_heads_decode_exactly_as_the_same_values_in_float32() -> None:
    rng = np.random.default_rng(5)
    # Dense, random logits: many candidates near the threshold, overlapping boxes for NMS, several images.
    heads16 = [rng.normal(0, 3, (4, g, g, 3 * (5 + 4))).astype(np.float16) for g in (13, 26, 52)]
    sizes = [(640, 480), (416, 416), (300, 700), (1280, 720)]
    got = decode(heads16, ANCHORS, 4, 416, sizes, score_threshold=0.6)
    want = decode([h.astype(np.float32) for h in heads16], ANCHORS, 4, 416, sizes, score_threshold=0.6)
    assert sum(len(d) for d in want) > 20
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.boxes, w.boxes)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.classes, w.classes)
        assert g.boxes.dtype == np.float32 and g.scores.dtype == np.float32
