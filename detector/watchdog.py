"""The watchdog: an inference that runs past its limit gets the engine restarted (a stuck GPU call never
returns, so the engine is rebuilt beside it and the stuck call is abandoned on its own thread)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from detector.engines import DeviceBatch, Engine, EngineError, Image, loads_images, run_batch, stages_batches
from detector.yolo.postprocess import OutputLayout

log = logging.getLogger(__name__)


class InferenceTimeoutError(RuntimeError):
    """One inference ran past the limit; the engine has been restarted."""


class Watchdog:
    """An engine that restarts itself when one ``predict`` outlives ``timeout_s``."""

    def __init__(self, factory: Callable[[], Engine], timeout_s: float) -> None:
        self._factory = factory
        self.timeout_s = timeout_s
        self.restarts = 0
        self._engine = factory()
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="inference")

    @property
    def name(self) -> str:
        return self._engine.name

    @property
    def device(self) -> str:
        return self._engine.device

    @property
    def output_layout(self) -> OutputLayout:
        return self._engine.output_layout

    @property
    def loads_images(self) -> bool:
        """The watched engine's capability, passed through (see ``detector.engines.LoadsImages``)."""
        return loads_images(self._engine)

    def memory_bytes(self) -> int | None:
        """GPU memory the engine holds, when it runs on a GPU and can tell (an optional engine method)."""
        measure = getattr(self._engine, "memory_bytes", None)
        return measure() if measure is not None else None

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        # Not on the watched thread: a load is a decode and a copy, and runs on the feeder, beside inference.
        engine = self._engine
        if not loads_images(engine):
            raise EngineError(f"the {engine.name} engine does not decode images on its device")
        return engine.load(images)

    @property
    def stages_batches(self) -> bool:
        """The watched engine's capability, passed through (see ``detector.engines.StagesBatches``)."""
        return stages_batches(self._engine)

    def stage(self, batch: np.ndarray) -> DeviceBatch:
        # On the feeder, as a load is: a copy to the device beside inference.
        engine = self._engine
        if not stages_batches(engine):
            raise EngineError(f"the {engine.name} engine takes no batch onto its device ahead of inference")
        return engine.stage(batch)

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        future = self._runner.submit(run_batch, self._engine, batch)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self._restart()
            raise InferenceTimeoutError(
                f"inference of a batch of {len(batch)} ran past {self.timeout_s:g} s (engine.inference_timeout_s)"
            ) from None

    def _restart(self) -> None:
        self.restarts += 1
        log.error("inference stuck for %.0f s: restarting the engine (restart %d)", self.timeout_s, self.restarts)
        self._runner.shutdown(wait=False, cancel_futures=True)  # the stuck call keeps its thread; never joined
        self._engine = self._factory()
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="inference")

    def close(self) -> None:
        self._runner.shutdown(wait=False, cancel_futures=True)
