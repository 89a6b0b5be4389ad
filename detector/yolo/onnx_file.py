"""An ONNX export as a model file: its one image input, its outputs and its metadata (class names), read on the CPU
without optimising it. onnxruntime is imported only when a file is read: nothing else of the stack loads it.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.yolo.files import ModelFileError

Shape = tuple[int | str | None, ...]  # onnxruntime's: a dimension is a size, or a name (or None) when dynamic


@dataclass(frozen=True)
class OnnxModel:
    """What the pipeline needs to know of an ONNX file: its one image input, its outputs and its metadata."""

    path: Path
    input_name: str
    input_shape: Shape
    input_type: str  # onnxruntime's: tensor(float) or tensor(float16)
    outputs: tuple[tuple[str, Shape], ...]
    metadata: dict[str, str]

    @property
    def channels_first(self) -> bool:
        return self.input_shape[1] == 3

    @property
    def input_size(self) -> int | None:
        """The input's side when the file fixes it; None when it is dynamic."""
        side = self.input_shape[2] if self.channels_first else self.input_shape[1]
        return side if isinstance(side, int) else None

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size the model was exported with; None when the batch is dynamic."""
        first = self.input_shape[0]
        return first if isinstance(first, int) else None

    @property
    def class_names(self) -> list[str] | None:
        """The ``names`` metadata as Ultralytics writes it ("{0: 'person', 1: 'bicycle'}"), or a JSON list."""
        text = self.metadata.get("names")
        if text is None:
            return None
        try:
            value = ast.literal_eval(text)  # literals only: metadata is data, never code
        except (ValueError, SyntaxError):
            try:
                value = json.loads(text)
            except ValueError:
                value = None
        if isinstance(value, dict) and sorted(value) == list(range(len(value))):
            return [str(value[i]) for i in range(len(value))]
        if isinstance(value, list | tuple) and value:
            return [str(v) for v in value]
        raise ModelFileError(
            self.path,
            f"its metadata 'names' ({text[:60]!r}) is neither {{0: 'name', ...}} nor a list of names",
            "set model.classes to a file or a list of names",
        )


def session_options(threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about graph rewrites say nothing to fix
    return options


def describe(path: Path) -> OnnxModel:
    """Read ``path`` (on the CPU, without optimising it) and check its input is one image batch."""
    if not path.is_file():
        raise ModelFileError(path, "ONNX file not found", "check model.onnx")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFileError(path, f"reading it needs onnxruntime ({exc})", "install the onnx extra") from None
    options = session_options(1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # reading, not running
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are pybind classes of their own
        raise ModelFileError(path, f"onnxruntime cannot load it ({exc})", "export the model again") from None
    return read_session(session, path)


def read_session(session: Any, path: Path) -> OnnxModel:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelFileError(
            path, f"has {len(inputs)} inputs ({[i.name for i in inputs]})", "export it with the image input only"
        )
    inp = inputs[0]
    shape: Shape = tuple(inp.shape)
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise ModelFileError(path, f"its input {inp.name} is {list(shape)}", "export it with an image input")
    if inp.type not in ("tensor(float)", "tensor(float16)"):
        raise ModelFileError(path, f"its input {inp.name} is a {inp.type}", "export it with a float32 input")
    model = OnnxModel(
        path,
        inp.name,
        shape,
        inp.type,
        tuple((o.name, tuple(o.shape)) for o in session.get_outputs()),
        dict(session.get_modelmeta().custom_metadata_map),
    )
    height, width = shape[2:] if model.channels_first else shape[1:3]
    if isinstance(height, int) and isinstance(width, int) and (height != width or height % 32):
        raise ModelFileError(
            path, f"its input is {width}x{height}", "export it with a square input whose side is a multiple of 32"
        )
    return model
