"""The onnx engine: an ONNX export on onnxruntime, on the CPU or, with onnxruntime-gpu, CUDA or TensorRT.

It runs YOLOv3 heads (an export of this project's own network, decoded with the model's anchors as the other
engines' are) and YOLOv5/v8/v11-style exports whose network decodes its boxes itself (one output; see
``OnnxEngineConfig.layout`` and ``postprocess.decode_boxes``). Frames reach it letterboxed on the CPU by the
pipeline, RGB, divided by 255 in float32 as TrainYourOwnYOLO did (and Ultralytics does), in NCHW or NHWC as the
model's input says; a model with a fixed batch size (Ultralytics' default export has batch 1) runs a batch in
chunks of that size. onnxruntime is imported here only: no other process of the stack loads it.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from common.config import OnnxEngineConfig
from detector.engines import DeviceBatch, EngineError, Image
from detector.model import ModelSpec
from detector.yolo.files import ModelFileError
from detector.yolo.postprocess import OutputLayout

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # in order of preference
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about graph rewrites say nothing to fix
    return options


def describe(path: Path) -> OnnxModel:
    """Read ``path`` (on the CPU, without optimising it) and check its input is one image batch."""
    if not path.is_file():
        raise ModelFileError(path, "ONNX file not found", "check model.onnx")
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


def resolve_layout(
    configured: str, outputs: Sequence[tuple[str, Shape]], num_classes: int
) -> tuple[OutputLayout, list[bool]]:
    """The layout of ``outputs`` (checked against ``configured``) and, for YOLOv3 heads, which are NCHW."""
    shapes = [s for _, s in outputs]
    channel_count = 3 * (5 + num_classes)  # a YOLOv3 head's: 3 anchors of x, y, w, h, objectness and classes
    nchw = [len(s) == 4 and s[1] == channel_count and s[2] == s[3] for s in shapes]
    nhwc = [len(s) == 4 and s[3] == channel_count and s[1] == s[2] for s in shapes]
    fits: dict[OutputLayout, bool] = {
        "yolov3": len(shapes) in (2, 3) and all(a or b for a, b in zip(nchw, nhwc, strict=True)),
        "v8": len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][1] == 4 + num_classes,
        "v5": len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][2] == 5 + num_classes,
    }
    layouts = [name for name, ok in fits.items() if ok and configured in ("auto", name)]
    if len(layouts) != 1:
        found = ", ".join(f"{name} {list(s)}" for name, s in outputs)
        expected = {
            "yolov3": f"2 or 3 YOLOv3 heads of {channel_count} channels",
            "v8": f"one [batch, {4 + num_classes}, boxes] output",
            "v5": f"one [batch, boxes, {5 + num_classes}] output",
        }
        wanted = "; ".join(f"{k}: {v}" for k, v in expected.items() if configured in ("auto", k))
        problem = "fits more than one layout" if layouts else f"does not fit engine.layout {configured}"
        raise EngineError(
            f"the model's outputs ({found}) {problem} with {num_classes} classes ({wanted}): check model.classes "
            "and set engine.layout"
        )
    return layouts[0], nchw


def choose_providers(cfg: OnnxEngineConfig, available: Sequence[str]) -> list[str]:
    """The providers to ask for: the configured ones (all installed), or GPU ones when there are, then CPU."""
    if cfg.providers is not None:
        missing = [p for p in cfg.providers if p not in available]
        if missing:
            raise EngineError(
                f"engine.providers asks for {', '.join(missing)}, which this onnxruntime does not have (it has "
                f"{', '.join(available)}): install onnxruntime-gpu for CUDA and TensorRT, or change engine.providers"
            )
        return list(cfg.providers)
    gpus = [p for p in GPU_PROVIDERS if p in available] if cfg.gpu is not None else []
    if isinstance(cfg.gpu, int) and not gpus:
        raise EngineError(
            f"engine.gpu is {cfg.gpu} but this onnxruntime has no GPU provider (it has {', '.join(available)}): "
            "install onnxruntime-gpu, or set engine.gpu to null for the CPU"
        )
    return [*gpus, "CPUExecutionProvider"]


class OnnxEngine:
    name = "onnx"
    loads_images = False  # frames are decoded and letterboxed on the CPU, by the pipeline

    def __init__(self, cfg: OnnxEngineConfig, spec: ModelSpec) -> None:
        if spec.onnx is None:
            raise EngineError("the onnx engine needs model.onnx")
        providers = choose_providers(cfg, ort.get_available_providers())
        index = cfg.gpu if isinstance(cfg.gpu, int) else 0
        options = [{"device_id": str(index)} if p in GPU_PROVIDERS else {} for p in providers]
        try:
            self._session = ort.InferenceSession(
                str(spec.onnx), session_options(cfg.threads), providers=providers, provider_options=options
            )
        except Exception as exc:  # onnxruntime's errors are pybind classes of their own
            raise EngineError(f"onnxruntime cannot start {spec.onnx} on {providers}: {exc}") from None
        used = self._session.get_providers()
        on_gpu = any(p in GPU_PROVIDERS for p in used)
        # onnxruntime falls back to the CPU when a GPU provider fails to start (missing CUDA libraries): an error
        # when a GPU was asked for by name, a warning under gpu: auto.
        if not on_gpu and any(p in GPU_PROVIDERS for p in providers):
            if isinstance(cfg.gpu, int) or cfg.providers is not None:
                raise EngineError(f"onnxruntime could not start {providers[0]} (see its log above); it offers {used}")
            log.warning("onnxruntime could not start %s: running on the CPU", ", ".join(providers[:-1]))
        self.device = f"gpu:{index}" if on_gpu else "cpu"
        self.model = read_session(self._session, spec.onnx)
        if self.model.input_size not in (None, spec.input_size):
            raise EngineError(f"the model takes {self.model.input_size} px images, not {spec.input_size}")
        self.output_layout, self._nchw = resolve_layout(cfg.layout, self.model.outputs, len(spec.classes))
        self._order = list(range(len(self.model.outputs)))
        if self.output_layout == "yolov3":
            heads = {2: "tiny", 3: "yolov3"}[len(self.model.outputs)]
            if heads != spec.architecture:
                raise EngineError(
                    f"the model has {len(self.model.outputs)} YOLOv3 heads ({heads}) but model.anchors or "
                    f"model.architecture say {spec.architecture}: give the anchors it was trained with"
                )
            grids = [s[2] if nchw else s[1] for (_, s), nchw in zip(self.model.outputs, self._nchw, strict=True)]
            if all(isinstance(g, int) for g in grids):  # the decoder reads the coarsest head (stride 32) first
                self._order = sorted(self._order, key=lambda i: int(grids[i] or 0))
        self._dtype = np.float16 if self.model.input_type == "tensor(float16)" else np.float32
        log.info(
            "onnx engine ready: %s (%s outputs, %d px) on %s with %s", spec.onnx.name, self.output_layout,
            spec.input_size, self.device, ", ".join(used),
        )  # fmt: skip

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        raise EngineError("the onnx engine takes letterboxed arrays; the pipeline decodes on the CPU")

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        """The model's outputs for a letterboxed RGB batch (B, S, S, 3), uint8 or float32 in [0, 1]; YOLOv3
        heads come back NHWC, as ``postprocess.decode`` reads them."""
        if isinstance(batch, DeviceBatch):
            raise EngineError("the onnx engine does not load images on its device")
        x = batch if batch.dtype != np.uint8 else np.divide(batch, np.float32(255), dtype=np.float32)
        if self.model.channels_first:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self._dtype)
        step = self.model.batch_size or len(x)
        chunks = [self._run(x[i : i + step], step) for i in range(0, len(x), step)]
        outputs = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*chunks, strict=True)]
        if self.output_layout == "yolov3":
            outputs = [outputs[i].transpose(0, 2, 3, 1) if self._nchw[i] else outputs[i] for i in self._order]
        return outputs

    def _run(self, x: np.ndarray, step: int) -> list[np.ndarray]:
        n = len(x)
        if n < step:  # a fixed batch size: pad the last chunk with blank rows, then drop their outputs
            x = np.concatenate([x, np.zeros((step - n, *x.shape[1:]), x.dtype)])
        return [o[:n] for o in self._session.run(None, {self.model.input_name: x})]
