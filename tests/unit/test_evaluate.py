"""Scoring: VOC AP@0.5, precision/recall, and occluded truth as "difficult"."""

from __future__ import annotations

import pytest

from detector.training.evaluate import (
    Labelled,
    average_precision,
    mark_occluded,
    mean_average_precision,
    precision_recall,
)

A = Labelled("a", (0, 0, 10, 10))
B = Labelled("a", (20, 0, 30, 10))


def det(box: tuple[float, float, float, float], score: float, label: str = "a") -> Labelled:
    return Labelled(label, box, score)


def test_perfect_detections_score_one_and_a_miss_halves_recall() -> None:
    assert average_precision([([det(A.box, 0.9), det(B.box, 0.8)], [A, B])], "a") == pytest.approx(1.0)
    assert average_precision([([det(A.box, 0.9)], [A, B])], "a") == pytest.approx(0.5)
    assert precision_recall([([det(A.box, 0.9)], [A, B])]) == (1.0, 0.5)


def test_a_confident_false_positive_costs_precision_where_it_ranks() -> None:
    wrong = det((50, 50, 60, 60), 0.95)
    # Ranked first, the false positive leaves precision 1/2 at the first hit and 2/3 at the second; VOC's
    # envelope takes the best precision at any higher recall, so both halves of recall count at 2/3.
    ap = average_precision([([wrong, det(A.box, 0.9), det(B.box, 0.8)], [A, B])], "a")
    assert ap == pytest.approx(2 / 3)
    ranked_second = det(wrong.box, 0.85)  # after the first hit: only the second half of recall pays for it
    assert average_precision([([det(A.box, 0.9), ranked_second, det(B.box, 0.8)], [A, B])], "a") == pytest.approx(
        0.5 * 1.0 + 0.5 * (2 / 3)
    )
    assert precision_recall([([wrong, det(A.box, 0.9), det(B.box, 0.8)], [A, B])]) == pytest.approx((2 / 3, 1.0))


def test_a_duplicate_and_a_wrong_label_are_false_positives() -> None:
    dets = [det(A.box, 0.9), det(A.box, 0.8), det(B.box, 0.7, "b")]
    assert precision_recall([(dets, [A])]) == pytest.approx((1 / 3, 1.0))
    aps = mean_average_precision([(dets, [A, Labelled("b", (90, 90, 99, 99))])], ["a", "b"])
    assert aps["a"] == pytest.approx(1.0) and aps["b"] == 0.0 and aps["mAP"] == pytest.approx(0.5)


def test_boxes_hidden_under_later_ones_are_difficult_and_count_neither_way() -> None:
    hidden = Labelled("a", (0, 0, 10, 10))
    cover = Labelled("b", (0, 0, 10, 8))  # drawn later: 80 % of the first box is under it
    half = Labelled("a", (20, 0, 30, 10))
    marked = mark_occluded([hidden, cover, half], 40, 20)
    assert [t.difficult for t in marked] == [True, False, False]
    # Finding the hidden box is not a false positive; missing it is not a miss.
    assert precision_recall([([det(hidden.box, 0.9)], marked)]) == (0.0, 0.0)  # no verdicts, two misses
    assert precision_recall([([det(hidden.box, 0.9), det(half.box, 0.8)], [marked[0], marked[2]])]) == (1.0, 1.0)
