"""What every engine and the pipeline share: the engine interface, its optional device decoding, its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from detector.yolo.postprocess import OutputLayout


class EngineError(RuntimeError):
    """The engine cannot start as configured; the message says which setting to change."""


@dataclass
class DeviceBatch:
    """Frames an engine decoded and letterboxed on its own device (see :class:`LoadsImages`), ready for ``predict``."""

    tensor: Any  # (N, 3, S, S) uint8 on the engine's device: one row per image that decoded, in order
    kept: list[int]  # for each row, the index of its image in what ``load`` was given
    failed: dict[int, str]  # index -> why that image could not be decoded

    def __len__(self) -> int:
        return len(self.kept)


Image = bytes | np.ndarray  # JPEG bytes, or an HxWx3 RGB uint8 array


class Engine(Protocol):
    """What every engine does: predict a letterboxed batch."""

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

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw YOLO head outputs (NHWC, float32 or float16; or what ``output_layout`` says) for a letterboxed RGB
        batch (B, S, S, 3): uint8 0-255, or float32 already divided by 255."""
        ...


@runtime_checkable
class LoadsImages(Protocol):
    """An optional capability: decoding and letterboxing JPEG frames on the engine's own device."""

    @property
    def loads_images(self) -> bool:
        """Whether it does here and now (e.g. torch on CUDA with torchvision); False: the pipeline decodes."""
        ...

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        """Decode and letterbox ``images`` on the engine's device."""
        ...

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        """As :meth:`Engine.predict`, and for what ``load`` returned."""
        ...


@runtime_checkable
class StagesBatches(Protocol):
    """An optional capability: copying a batch the host letterboxed to the engine's device ahead of its turn, on a
    stream of its own, so that the copy overlaps the inference of the batch before it."""

    @property
    def stages_batches(self) -> bool:
        """Whether it does here and now (torch on CUDA, decoding on the host)."""
        ...

    def stage(self, batch: np.ndarray) -> DeviceBatch:
        """``batch`` (B, S, S, 3) uint8 on the engine's device, every row kept."""
        ...


def stages_batches(engine: Engine) -> TypeGuard[StagesBatches]:
    """Whether ``engine`` takes host-letterboxed batches onto its device ahead of inference now."""
    return isinstance(engine, StagesBatches) and engine.stages_batches


def loads_images(engine: Engine) -> TypeGuard[LoadsImages]:
    """Whether ``engine`` decodes frames on its device now (so the pipeline hands it JPEG bytes)."""
    return isinstance(engine, LoadsImages) and engine.loads_images


def run_batch(engine: Engine, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
    """``engine.predict`` on a letterboxed array, or on what the engine's own ``load`` returned."""
    if isinstance(batch, DeviceBatch):
        if not (loads_images(engine) or stages_batches(engine)):
            raise EngineError(f"the {engine.name} engine takes no batch already on its device")
        taker: Any = engine  # an engine with either capability takes the device batches it made
        return list(taker.predict(batch))
    return engine.predict(batch)
