"""The synthetic camera: a :class:`common.scenes.Scene` streamed frame by frame (tests, demos, benchmarks)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from common.plugins import SOURCES
from common.scenes import Scene, Truth
from common.settings import ConfigPath, SourceSettings


class SyntheticSourceConfig(SourceSettings):
    kind: Literal["synthetic"] = "synthetic"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Same seed, same frames.")
    width: int = Field(640, ge=32, le=8192, description="Frame width in pixels.")
    height: int = Field(480, ge=32, le=8192, description="Frame height in pixels.")
    fps: float = Field(10.0, gt=0, le=1000, description="Frame rate of the simulated camera.")
    shapes: int = Field(3, ge=0, le=32, description="Number of moving shapes.")
    distractors: int = Field(
        0, ge=0, le=32, description="Moving plus signs, labelled NULL in the truth (a class to ignore)."
    )
    realtime: bool = Field(True, description="Pace frames at fps; false produces them as fast as possible.")
    truth_path: ConfigPath | None = Field(
        None, description="Append the ground truth (labels and boxes) of every published frame here, as JSONL."
    )


class SyntheticSource:
    """Moving labelled shapes, fully determined by the seed and the frame index (so tests can score)."""

    live = False
    total: int | None = None  # endless

    def __init__(self, cfg: SyntheticSourceConfig, decoder_threads: int = 1) -> None:
        self.cfg = cfg
        self.fps: float | None = cfg.fps
        self.index = -1
        self.scene = Scene(cfg.seed, cfg.width, cfg.height, cfg.shapes, cfg.distractors)

    def truth(self, index: int) -> list[Truth]:
        """The shapes of frame ``index``."""
        return self.scene.truth(index)

    def render(self, index: int) -> np.ndarray:
        return self.scene.render(index)

    def grab(self) -> float | None:
        self.index += 1
        return self.index / self.cfg.fps

    def retrieve(self) -> np.ndarray:
        return self.render(self.index)

    def origin(self) -> tuple[str, int | None] | None:
        return None

    def close(self) -> None:
        pass


SOURCES.register(SyntheticSourceConfig, SyntheticSource)
