"""Inference engines, one plug-in module each, chosen by the pool's ``engine.kind``.

An engine imports its framework only when it is created, so ingest and sinks never load TensorFlow or torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from common.config import EngineConfig
from detector.model import ModelSpec
from detector.yolo.postprocess import OutputLayout


class EngineError(RuntimeError):
    """The engine cannot start as configured; the message says which setting to change."""


@dataclass
class DeviceBatch:
    """Frames an engine decoded and letterboxed on its own device (see ``Engine.load``), ready for ``predict``."""

    tensor: Any  # (N, 3, S, S) uint8 on the engine's device: one row per image that decoded, in order
    kept: list[int]  # for each row, the index of its image in what ``load`` was given
    failed: dict[int, str]  # index -> why that image could not be decoded

    def __len__(self) -> int:
        return len(self.kept)


Image = bytes | np.ndarray  # JPEG bytes, or an HxWx3 RGB uint8 array


class Engine(Protocol):
    @property
    def name(self) -> str:
        """Engine kind, e.g. ``tensorflow``."""
        ...

    @property
    def device(self) -> str:
        """Where it runs, e.g. ``cpu`` or ``gpu:0``."""
        ...

    @property
    def output_layout(self) -> OutputLayout:
        """What ``predict`` returns: YOLOv3 heads, or one tensor of boxes (see ``postprocess.OutputLayout``)."""
        ...

    @property
    def loads_images(self) -> bool:
        """True when the pipeline should hand frames to ``load`` undecoded (decode + letterbox on the device)."""
        ...

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        """Decode and letterbox ``images`` on the engine's device; only for engines whose ``loads_images``."""
        ...

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        """Raw YOLO head outputs (NHWC, float32 or float16; or what ``output_layout`` says) for a letterboxed RGB
        batch (B, S, S, 3): uint8 0-255, or float32 already divided by 255; or for what ``load`` returned."""
        ...


NEEDS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "keras", "h5py"),
    "torch": ("torch", "h5py"),
    "onnx": ("onnxruntime",),
}
"""The modules each engine imports beyond the base install: what its extra of the same name installs."""


def extra_hint(kind: str) -> str:
    """What to install for engine ``kind``."""
    return f"the {kind} engine needs the {kind} extra: pip install 'streamyolo[{kind}]'"


def missing_extra(kind: str) -> str | None:
    """Why engine ``kind`` cannot run here (modules of its extra that are not installed), or None."""
    absent = [m for m in NEEDS[kind] if not _installed(m)]
    return f"{extra_hint(kind)} (missing: {', '.join(absent)})" if absent else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a broken half-installed package
        return False


def create_engine(cfg: EngineConfig, spec: ModelSpec, max_batch: int | None = None) -> Engine:
    """The engine ``cfg`` names; ``max_batch``: the largest batch it will be given (an engine may size for it)."""
    if cfg.kind == "tensorflow":
        from detector.engines.tensorflow import TensorFlowEngine

        return TensorFlowEngine(cfg, spec)
    if cfg.kind == "onnx":
        from detector.engines.onnx import OnnxEngine

        return OnnxEngine(cfg, spec)
    from detector.engines.torch import TorchEngine

    return TorchEngine(cfg, spec, max_batch)
