"""What a detector pool runs: the resolved model description (architecture, anchors, classes, input size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from common.config import ModelConfig
from detector.yolo.files import DEFAULT_ANCHORS, ModelFileError, architecture_for, read_anchors, read_classes

Architecture = Literal["yolov3", "tiny"]


@dataclass(frozen=True)
class ModelSpec:
    architecture: Architecture
    anchors: np.ndarray
    classes: tuple[str, ...]
    input_size: int
    weights: Path | None
    seed: int

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelSpec:
        """Read the anchors and classes files; raises ModelFileError naming the file and the problem."""
        classes = tuple(read_classes(cfg.classes) if isinstance(cfg.classes, Path) else cfg.classes)
        if not classes:
            raise ValueError("model.classes is empty: list at least one class name")
        if cfg.anchors is not None:
            anchors = read_anchors(cfg.anchors)
            arch = architecture_for(anchors)
            if cfg.architecture not in ("auto", arch):
                raise ModelFileError(
                    cfg.anchors,
                    f"{len(anchors)} anchors mean {arch}, but model.architecture is {cfg.architecture}",
                    "fix one of the two",
                )
        else:
            arch = "yolov3" if cfg.architecture == "auto" else cfg.architecture
            anchors = DEFAULT_ANCHORS[arch]
        if cfg.weights is not None and not cfg.weights.is_file():
            raise ModelFileError(cfg.weights, "the weights file does not exist", "fix model.weights")
        return cls(arch, anchors, classes, cfg.input_size, cfg.weights, cfg.seed)
