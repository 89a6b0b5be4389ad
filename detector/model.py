"""What a detector pool runs: the resolved model (architecture, anchors, classes, input size, weights file).

Every mismatch between the files (class count against the output layers, anchors against the architecture, a
missing file) is found here, before any framework loads, and named with the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from common.config import ModelConfig
from detector.yolo.files import DEFAULT_ANCHORS, ModelFileError, architecture_for, read_anchors, read_classes
from detector.yolo.weights import inspect_weights

Architecture = Literal["yolov3", "tiny"]


@dataclass(frozen=True)
class ModelSpec:
    architecture: Architecture
    anchors: np.ndarray
    classes: tuple[str, ...]
    input_size: int
    weights: Path | None
    seed: int
    resize: Literal["pil", "opencv"] = "pil"
    width: float = 1.0  # tiny's width multiplier, read from the weights file

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelSpec:
        """Resolve and cross-check the files; raises ModelFileError naming the file and the problem."""
        weights, anchors_path, classes_src = _locate(cfg)
        classes = tuple(read_classes(classes_src) if isinstance(classes_src, Path) else classes_src)
        if not classes:
            raise ValueError("model.classes is empty: list at least one class name")
        if anchors_path is not None:
            anchors = read_anchors(anchors_path)
            arch = architecture_for(anchors)
            if cfg.architecture not in ("auto", arch):
                raise ModelFileError(
                    anchors_path,
                    f"{len(anchors)} anchors mean {arch}, but model.architecture is {cfg.architecture}",
                    "fix one of the two",
                )
            arch_source = f"the anchors file {anchors_path} ({len(anchors)} anchors)"
        else:
            arch = "yolov3" if cfg.architecture == "auto" else cfg.architecture
            anchors = DEFAULT_ANCHORS[arch]
            arch_source = f"model.architecture ({cfg.architecture})"
        width = 1.0
        if weights is not None:
            info = inspect_weights(weights)
            width = info.width
            if info.architecture != arch:
                raise ModelFileError(
                    weights,
                    f"holds {info.architecture} weights but {arch_source} means {arch}",
                    "use the anchors file the model was trained with",
                )
            if info.num_classes != len(classes):
                raise ModelFileError(
                    weights,
                    f"was trained for {info.num_classes} classes (output layers of {info.output_filters[0]} filters) "
                    f"but the class list has {len(classes)}",
                    "use the classes file the model was trained with",
                )
        return cls(arch, anchors, classes, cfg.input_size, weights, cfg.seed, cfg.resize, width)


def _locate(cfg: ModelConfig) -> tuple[Path | None, Path | None, Path | list[str]]:
    """(weights, anchors, classes): explicit settings first, else what TYOY leaves in the model folder."""
    folder = cfg.folder
    if folder is not None and not folder.is_dir():
        raise ModelFileError(folder, "the model folder does not exist", "fix model.folder")
    weights = cfg.weights
    anchors = cfg.anchors
    classes: Path | list[str] | None = cfg.classes
    if folder is not None:
        weights = weights or _find(folder, ["trained_weights_final.h5"], "*.h5", "weights")
        anchors = anchors or _find(folder, ["yolo_anchors.txt", "yolo-tiny_anchors.txt"], "*anchors*.txt", "anchors")
        classes = classes or _find(folder, ["data_classes.txt"], "*classes*.txt", "classes")
    assert classes is not None  # the config refuses a model with neither a folder nor classes
    return weights, anchors, classes


def _find(folder: Path, names: list[str], pattern: str, what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob(pattern))
    if len(found) == 1:
        return found[0]
    problem = f"no {what} file ({' or '.join(names)}, or one {pattern})" if not found else (
        f"several {what} files ({', '.join(p.name for p in found)})"
    )  # fmt: skip
    raise ModelFileError(folder, problem, f"name the {what} file with model.{what}")
