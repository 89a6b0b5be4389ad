"""Reading a TrainYourOwnYOLO model's text files (anchors, classes) with errors that say how to fix them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Architecture = Literal["yolov3", "tiny"]

# keras-yolo3's model_data/yolo_anchors.txt and tiny_yolo_anchors.txt (w, h in input pixels).
DEFAULT_ANCHORS: dict[str, npt.NDArray[np.float32]] = {
    "yolov3": np.array(
        [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]],
        dtype=np.float32,
    ),
    "tiny": np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=np.float32),
}
_ARCH_BY_COUNT: dict[int, Architecture] = {9: "yolov3", 6: "tiny"}


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file, the line, the problem and the fix."""

    def __init__(self, path: Path, problem: str, fix: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}; {fix}")


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        # utf-8-sig: files saved by Windows editors start with a BOM that would glue onto the first value.
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as exc:
        raise ModelFileError(path, f"{what} file not found", "check the path in the configuration") from exc
    except UnicodeDecodeError as exc:
        raise ModelFileError(path, f"{what} file is not UTF-8 text", "save it as plain UTF-8 text") from exc
    except OSError as exc:
        raise ModelFileError(path, f"cannot read {what} file ({exc.strerror})", "check the path") from exc


def read_anchors(path: Path) -> npt.NDArray[np.float32]:
    """Read a keras-yolo3 anchors file: (N, 2) float32 (w, h) pairs, N = 9 (YOLOv3) or 6 (tiny).

    Only the first non-empty line counts, as keras-yolo3 reads one line: "w,h, w,h, ...".
    """
    path = Path(path)
    fix_count = "write 9 'w,h' pairs for YOLOv3 or 6 for tiny YOLOv3, comma-separated on one line"
    first = next(((n, t) for n, t in enumerate(_read_lines(path, "anchors"), start=1) if t.strip()), None)
    if first is None:
        raise ModelFileError(path, "anchors file is empty", fix_count)
    number, text = first
    tokens = [t.strip() for t in text.split(",")]
    if tokens and not tokens[-1]:
        tokens.pop()  # tolerate a trailing comma
    values: list[float] = []
    for position, token in enumerate(tokens, start=1):
        try:
            value = float(token)
        except ValueError:
            raise ModelFileError(
                path, f"value {position} ({token!r}) is not a number", fix_count, line=number
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ModelFileError(
                path, f"value {position} ({token}) must be a positive size in pixels", fix_count, line=number
            )
        values.append(value)
    if len(values) % 2:
        raise ModelFileError(path, f"{len(values)} values do not make whole w,h pairs", fix_count, line=number)
    pairs = len(values) // 2
    if pairs not in _ARCH_BY_COUNT:
        problem = f"found {pairs} anchor pairs, expected 9 (YOLOv3) or 6 (tiny YOLOv3)"
        raise ModelFileError(path, problem, fix_count, line=number)
    return np.asarray(values, dtype=np.float32).reshape(pairs, 2)


def read_classes(path: Path) -> list[str]:
    """Read a classes file: one name a line, in class-index order; blank lines are skipped."""
    path = Path(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(_read_lines(path, "classes"), start=1):
        name = text.strip()
        if not name:
            continue
        if name in seen:
            raise ModelFileError(
                path,
                f"class {name!r} appears twice (also on line {seen[name]})",
                "list each class once, in the order the model was trained with",
                line=number,
            )
        seen[name] = number
        names.append(name)
    if not names:
        raise ModelFileError(path, "classes file lists no class", "write one class name a line, as used for training")
    return names


def architecture_for(anchors: np.ndarray) -> Architecture:
    """YOLOv3 for 9 anchors, tiny YOLOv3 for 6: the only thing in a TYOY model that tells them apart."""
    shape = tuple(np.shape(anchors))
    if len(shape) == 2 and shape[1] == 2 and shape[0] in _ARCH_BY_COUNT:
        return _ARCH_BY_COUNT[shape[0]]
    raise ValueError(f"anchors must be 9 (YOLOv3) or 6 (tiny YOLOv3) (w, h) pairs, got an array of shape {shape}")
