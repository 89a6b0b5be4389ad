"""Inference engines, one plug-in module each, chosen by the pool's ``engine.kind``.

An engine imports its framework only when it is created, so ingest and sinks never load TensorFlow or torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common.config import EngineConfig
from detector.model import ModelSpec


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
        """Raw YOLO head outputs for a float32 (B, S, S, 3) batch in [0, 1], RGB."""
        ...


def create_engine(cfg: EngineConfig, spec: ModelSpec) -> Engine:
    if cfg.kind == "tensorflow":
        from detector.engines.tensorflow import TensorFlowEngine

        return TensorFlowEngine(cfg, spec)
    raise ValueError(f"unknown engine kind {cfg.kind!r}")
