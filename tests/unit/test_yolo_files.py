"""Reading TrainYourOwnYOLO's anchors and classes files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.yolo.files import (
    DEFAULT_ANCHORS,
    ModelFileError,
    architecture_for,
    read_anchors,
    read_classes,
)

# keras-yolo3's model_data/yolo_anchors.txt, byte for byte (double spaces, newline at the end).
YOLO_ANCHORS_TXT = "10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  156,198,  373,326\n"
TINY_ANCHORS_TXT = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_keras_yolo3_default_anchors(tmp_path: Path) -> None:
    anchors = read_anchors(_write(tmp_path, "yolo_anchors.txt", YOLO_ANCHORS_TXT))
    assert anchors.dtype == np.float32
    assert anchors.shape == (9, 2)
    np.testing.assert_array_equal(anchors, DEFAULT_ANCHORS["yolov3"])
    assert architecture_for(anchors) == "yolov3"


def test_reads_tiny_anchors(tmp_path: Path) -> None:
    anchors = read_anchors(_write(tmp_path, "yolo-tiny_anchors.txt", TINY_ANCHORS_TXT))
    np.testing.assert_array_equal(anchors, DEFAULT_ANCHORS["tiny"])
    assert architecture_for(anchors) == "tiny"


def test_default_anchor_values() -> None:
    assert DEFAULT_ANCHORS["yolov3"].shape == (9, 2)
    assert DEFAULT_ANCHORS["tiny"].shape == (6, 2)
    assert DEFAULT_ANCHORS["yolov3"][8].tolist() == [373, 326]
    assert DEFAULT_ANCHORS["tiny"][0].tolist() == [10, 14]


def test_only_first_non_empty_line_counts(tmp_path: Path) -> None:
    text = "\n  \n" + TINY_ANCHORS_TXT + "this line is ignored, 1, 2, 3\n"
    anchors = read_anchors(_write(tmp_path, "a.txt", text))
    np.testing.assert_array_equal(anchors, DEFAULT_ANCHORS["tiny"])


def test_trailing_comma_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TINY_ANCHORS_TXT.strip().encode() + b",\n")
    np.testing.assert_array_equal(read_anchors(path), DEFAULT_ANCHORS["tiny"])


def test_seven_anchors_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad_anchors.txt", "\n10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90\n")
    with pytest.raises(ModelFileError) as info:
        read_anchors(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 2" in message
    assert "found 7 anchor pairs" in message
    assert "9" in message and "6" in message
    assert info.value.path == path
    assert info.value.line == 2
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("10,13, 16,x0, 33,23, 30,61, 62,45, 59,119\n", r"value 4 \('x0'\) is not a number"),
        ("10,13, 16,30, 33,23, 30,61, 62,45, 59\n", "11 values do not make whole w,h pairs"),
        ("10,13, 16,-30, 33,23, 30,61, 62,45, 59,119\n", "must be a positive size"),
        ("\n\n", "anchors file is empty"),
    ],
)
def test_malformed_anchors(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, "a.txt", text)
    with pytest.raises(ModelFileError, match=needle) as info:
        read_anchors(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "yolo_anchors.txt"
    with pytest.raises(ModelFileError, match="not found") as info:
        read_anchors(path)
    assert str(path) in str(info.value)


def test_reads_classes_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "data_classes.txt", "Cat_Face\n  dog \r\nperson\n\n\n")
    assert read_classes(path) == ["Cat_Face", "dog", "person"]


def test_empty_classes_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "data_classes.txt", "\n   \n")
    with pytest.raises(ModelFileError, match="lists no class") as info:
        read_classes(path)
    assert str(path) in str(info.value)


def test_duplicate_class_names_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "data_classes.txt", "cat\ndog\ncat\n")
    with pytest.raises(ModelFileError) as info:
        read_classes(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "line 1" in message
    assert "'cat'" in message


def test_architecture_for_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        architecture_for(np.zeros((7, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        architecture_for(np.zeros(18, np.float32))
