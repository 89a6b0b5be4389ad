"""Reading what a TrainYourOwnYOLO weights file holds, to name the problem before Keras fails obscurely.

TYOY saves ``trained_weights_final.h5`` from its training model with ``save_weights`` (legacy Keras 2 HDF5: the
layer list in the root's ``layer_names``); keras-yolo3's ``convert.py`` and ``model.save`` write full models
(the same under ``model_weights``). YOLOv3 has 75 convolutions, tiny YOLOv3 13; the output convolutions are the
only ones with a bias, and their filter count is anchors-per-head x (5 + classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detector.yolo.files import ModelFileError

CONV_LAYERS: dict[int, Literal["yolov3", "tiny"]] = {75: "yolov3", 13: "tiny"}
FIRST_FILTERS = {"yolov3": 32, "tiny": 16}  # the first convolution's filters at width 1.0


def scaled(filters: int, width: float) -> int:
    """A layer's filters at a width multiplier (1.0: keras-yolo3's own sizes; the project's small tiny models
    use less)."""
    return max(1, round(filters * width))


@dataclass(frozen=True)
class WeightsInfo:
    architecture: Literal["yolov3", "tiny"]
    output_filters: tuple[int, ...]
    full_model: bool
    width: float = 1.0

    @property
    def num_classes(self) -> int:
        return self.output_filters[0] // 3 - 5


def inspect_weights(path: Path) -> WeightsInfo:
    import h5py  # every engine that reads TrainYourOwnYOLO weights has it in its extra

    if not path.is_file():
        raise ModelFileError(path, "the weights file does not exist", "fix model.weights (or model.folder)")
    try:
        with h5py.File(path, "r") as f:
            full = "model_weights" in f
            root: Any = f["model_weights"] if full else f
            names = [_text(n) for n in root.attrs.get("layer_names", [])]
            kernels = 0
            first = 0
            filters: list[int] = []
            for name in names:
                weights = [_text(w) for w in root[name].attrs.get("weight_names", [])]
                kernel = next((w for w in weights if w.split("/")[-1].startswith("kernel")), None)
                if kernel is not None and "conv" in name:
                    kernels += 1
                    first = first or int(root[name][kernel].shape[-1])
                    bias = next((w for w in weights if w.split("/")[-1].startswith("bias")), None)
                    if bias is not None:
                        filters.append(int(root[name][bias].shape[0]))
    except OSError as exc:
        raise ModelFileError(path, f"not an HDF5 weights file ({exc})", "give the .h5 that training wrote") from None
    if kernels not in CONV_LAYERS or len(filters) != (3 if kernels == 75 else 2):
        raise ModelFileError(
            path,
            f"holds {kernels} convolutions and {len(filters)} output layers, neither YOLOv3 (75, 3) nor tiny YOLOv3 "
            "(13, 2)",
            "give the weights a TrainYourOwnYOLO / keras-yolo3 training wrote",
        )
    if len(set(filters)) != 1 or filters[0] % 3 or filters[0] // 3 <= 5:
        raise ModelFileError(path, f"has output layers of {filters} filters", "these are not YOLO heads")
    arch = CONV_LAYERS[kernels]
    width = first / FIRST_FILTERS[arch]
    if arch == "yolov3" and width != 1.0:
        raise ModelFileError(
            path, f"is YOLOv3 at width {width:g}", "only tiny YOLOv3 may be narrower than keras-yolo3's"
        )
    return WeightsInfo(arch, tuple(filters), full, width)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
