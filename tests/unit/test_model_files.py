"""Resolving a TrainYourOwnYOLO model folder, and the errors that name the file to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ModelConfig
from detector.model import ModelSpec
from detector.yolo.files import ModelFileError


def folder(tmp_path: Path, anchors: str = "yolo-tiny_anchors.txt", pairs: int = 6) -> Path:
    (tmp_path / anchors).write_text(", ".join(f"{10 + i},{12 + i}" for i in range(pairs)) + "\n")
    (tmp_path / "data_classes.txt").write_text("cat\ndog\n")
    return tmp_path


def test_a_folder_without_weights_is_named_with_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"no weights file \(trained_weights_final.h5, or one \*.h5\)"):
        ModelSpec.from_config(ModelConfig(folder=folder(tmp_path)))


def test_explicit_files_override_the_folder_and_random_weights_need_no_file(tmp_path: Path) -> None:
    d = folder(tmp_path)
    spec = ModelSpec.from_config(ModelConfig(anchors=d / "yolo-tiny_anchors.txt", classes=d / "data_classes.txt"))
    assert (spec.architecture, spec.classes, spec.weights) == ("tiny", ("cat", "dog"), None)
    assert spec.anchors.shape == (6, 2)


def test_several_candidate_files_are_refused_rather_than_guessed(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "a.h5").write_bytes(b"")
    (d / "b.h5").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"several weights files \(a.h5, b.h5\); name the weights file"):
        ModelSpec.from_config(ModelConfig(folder=d))


def test_anchors_and_architecture_must_agree(tmp_path: Path) -> None:
    d = folder(tmp_path, "yolo_anchors.txt", 9)
    with pytest.raises(ModelFileError, match=r"9 anchors mean yolov3, but model\.architecture is tiny"):
        ModelSpec.from_config(ModelConfig(anchors=d / "yolo_anchors.txt", classes=["a"], architecture="tiny"))


def test_a_file_that_is_not_hdf5_is_named(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "trained_weights_final.h5").write_text("not hdf5")
    with pytest.raises(ModelFileError, match=r"trained_weights_final.h5: not an HDF5 weights file"):
        ModelSpec.from_config(ModelConfig(folder=d))


def test_a_missing_folder_or_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="the model folder does not exist"):
        ModelSpec.from_config(ModelConfig(folder=tmp_path / "nope"))
    with pytest.raises(ModelFileError, match=r"w.h5: the weights file does not exist"):
        ModelSpec.from_config(ModelConfig(weights=tmp_path / "w.h5", classes=["a"]))
