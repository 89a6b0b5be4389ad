"""Inference engines, one plug-in module each, chosen by the pool's ``engine.kind``.

An engine imports its framework only when it is created, so ingest and sinks never load TensorFlow or torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common.config import EngineConfig
from detector.model import ModelSpec


class EngineError(RuntimeError):
    """The engine cannot start as configured; the message says which setting to change."""


class Engine(Protocol):
    @property
    def name(self) -> str:
        """Engine kind, e.g. ``tensorflow``."""
        ...

    @property
    def device(self) -> str:
        """Where it runs, e.g. ``cpu`` or ``gpu:0``."""
        ...

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw YOLO head outputs (NHWC, float32) for a letterboxed RGB batch (B, S, S, 3): uint8 0-255, or
        float32 already divided by 255."""
        ...


def create_engine(cfg: EngineConfig, spec: ModelSpec) -> Engine:
    if cfg.kind == "tensorflow":
        from detector.engines.tensorflow import TensorFlowEngine

        return TensorFlowEngine(cfg, spec)
    from detector.engines.torch import TorchEngine

    return TorchEngine(cfg, spec)
