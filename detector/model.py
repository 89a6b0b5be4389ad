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
from detector.yolo.onnx_file import describe
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
    onnx: Path | None = None  # an ONNX export, for the onnx engine (it holds the weights)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelSpec:
        """Resolve and cross-check the files; raises ModelFileError naming the file and the problem."""
        if cfg.onnx is not None:
            return cls._from_onnx(cfg, cfg.onnx)
        weights, anchors_path, classes_src = _locate(cfg)
        classes = _class_names(classes_src)
        arch, anchors, arch_source = _anchors(cfg, anchors_path, "yolov3")
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

    @classmethod
    def _from_onnx(cls, cfg: ModelConfig, path: Path) -> ModelSpec:
        """An ONNX export: classes from model.classes, else its metadata; its input size when the file fixes it."""
        model = describe(path)  # onnxruntime is imported only there, only for ONNX models
        if cfg.classes is not None:
            classes = _class_names(cfg.classes)
        else:
            names = model.class_names
            if names is None:
                raise ModelFileError(
                    path, "has no class names in its metadata ('names')", "set model.classes to a file or a list"
                )
            classes = tuple(names)
        size = model.input_size or cfg.input_size
        if model.input_size is not None and "input_size" in cfg.model_fields_set and cfg.input_size != size:
            raise ModelFileError(
                path, f"takes {size} px images, model.input_size is {cfg.input_size}", "remove model.input_size"
            )
        # Anchors only matter to an export of YOLOv3 heads: two heads mean tiny YOLOv3.
        arch, anchors, _ = _anchors(cfg, cfg.anchors, "tiny" if len(model.outputs) == 2 else "yolov3")
        return cls(arch, anchors, classes, size, None, cfg.seed, cfg.resize, onnx=path)


def _class_names(source: Path | list[str]) -> tuple[str, ...]:
    classes = tuple(read_classes(source) if isinstance(source, Path) else source)
    if not classes:
        raise ValueError("model.classes is empty: list at least one class name")
    return classes


def _anchors(cfg: ModelConfig, path: Path | None, auto: Architecture) -> tuple[Architecture, np.ndarray, str]:
    """(architecture, anchors, where the architecture came from): the anchors file's count decides, else
    model.architecture, ``auto`` standing for what the model's files imply."""
    if path is not None:
        anchors = read_anchors(path)
        arch = architecture_for(anchors)
        if cfg.architecture not in ("auto", arch):
            problem = f"{len(anchors)} anchors mean {arch}, but model.architecture is {cfg.architecture}"
            raise ModelFileError(path, problem, "fix one of the two")
        return arch, anchors, f"the anchors file {path} ({len(anchors)} anchors)"
    arch = auto if cfg.architecture == "auto" else cfg.architecture
    return arch, DEFAULT_ANCHORS[arch], f"model.architecture ({cfg.architecture})"


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
