"""The TensorFlow engine: the keras-yolo3 body in Keras 3 on TensorFlow, on the CPU for now."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from common.config import TensorFlowEngineConfig
from detector.model import ModelSpec

log = logging.getLogger(__name__)


@contextmanager
def _quiet_native_stderr(hush: bool) -> Iterator[None]:
    """Silence what TensorFlow's C++ side prints while it loads (absl logs there before any level applies)."""
    if not hush:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TensorFlowEngine:
    name = "tensorflow"

    def __init__(self, cfg: TensorFlowEngineConfig, spec: ModelSpec) -> None:
        with _quiet_native_stderr(cfg.hush):
            import keras
            import tensorflow as tf

        from detector.yolo.keras_model import build_body

        if cfg.hush:
            tf.get_logger().setLevel(logging.ERROR)
            logging.getLogger("absl").setLevel(logging.ERROR)
        keras.utils.set_random_seed(spec.seed)  # random weights are reproducible when no weights file is given
        self.model = build_body(spec.architecture, len(spec.classes), spec.input_size)
        if spec.weights is not None:
            self.model.load_weights(str(spec.weights))
        self.device = "gpu:0" if tf.config.list_logical_devices("GPU") else "cpu"
        # One traced graph for any batch size: the batch dimension stays symbolic.
        self._infer = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, spec.input_size, spec.input_size, 3), tf.float32)],
        )
        self._tf = tf
        log.info("tensorflow engine ready: %s %d px on %s", spec.architecture, spec.input_size, self.device)

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self._infer(self._tf.constant(batch))
        return [o.numpy() for o in outputs]
