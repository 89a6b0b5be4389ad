"""The onnx engine: an ONNX export on onnxruntime, on the CPU or, with onnxruntime-gpu, CUDA or TensorRT.

It runs YOLOv3 heads (an export of this project's own network, decoded with the model's anchors as the other
engines' are) and YOLOv5/v8/v11-style exports whose network decodes its boxes itself (one output; see
``OnnxEngineConfig.layout`` and ``postprocess.decode_boxes``). Frames reach it letterboxed on the CPU by the
pipeline, RGB, divided by 255 in float32 as TrainYourOwnYOLO did (and Ultralytics does), in NCHW or NHWC as the
model's input says; a model with a fixed batch size (Ultralytics' default export has batch 1) runs a batch in
chunks of that size. onnxruntime is imported here only: no other process of the stack loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from common.plugins import ENGINES
from common.settings import EngineSettings
from detector.engines.base import EngineError
from detector.yolo.onnx_file import Shape, read_session, session_options
from detector.yolo.postprocess import OutputLayout

if TYPE_CHECKING:
    from detector.model import ModelSpec

log = logging.getLogger(__name__)


class OnnxEngineConfig(EngineSettings):
    """An ONNX export (model.onnx) on onnxruntime: CPU, or CUDA / TensorRT with onnxruntime-gpu."""

    kind: Literal["onnx"] = "onnx"
    needs: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    gpu: Annotated[int, Field(ge=0, le=255)] | Literal["auto"] | None = Field(
        "auto",
        description="CUDA device index; None: CPU; auto: the first GPU when onnxruntime has a GPU provider "
        "(onnxruntime-gpu), else the CPU.",
    )
    providers: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="onnxruntime execution providers in order of preference, e.g. [CUDAExecutionProvider, "
        "CPUExecutionProvider]; None: TensorRT, then CUDA (those installed, unless gpu is null), then the CPU.",
    )
    layout: Literal["auto", "yolov3", "v8", "v5"] = Field(
        "auto",
        description="The model's outputs. yolov3: 2 or 3 YOLOv3 heads (NCHW or NHWC); v8 (YOLOv8/v11): one "
        "[batch, 4 + classes, boxes] of cx, cy, w, h in input pixels and class scores; v5: one "
        "[batch, boxes, 5 + classes] of cx, cy, w, h, objectness and class scores; auto: from the output shapes.",
    )
    threads: int = Field(
        0, ge=0, le=256, description="Intra-op threads on the CPU; 0: onnxruntime's default (one per core)."
    )

    @model_validator(mode="after")
    def _gpu_providers_need_a_gpu(self) -> Self:
        gpu_providers = [p for p in self.providers or [] if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
        if self.gpu is None and gpu_providers:
            raise ValueError(f"engine.providers names {', '.join(gpu_providers)} but engine.gpu is null (the CPU)")
        return self


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # in order of preference


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

    def __init__(self, cfg: OnnxEngineConfig, spec: ModelSpec, max_batch: int | None = None) -> None:
        import onnxruntime as ort

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

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for a letterboxed RGB batch (B, S, S, 3), uint8 or float32 in [0, 1]; YOLOv3
        heads come back NHWC, as ``postprocess.decode`` reads them."""
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


ENGINES.register(OnnxEngineConfig, OnnxEngine)
