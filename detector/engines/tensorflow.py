"""The TensorFlow engine: the keras-yolo3 body in Keras 3 on TensorFlow, pinned to a GPU and a memory share.

GPU settings must reach TensorFlow before it initialises a GPU, so they are applied right after the import and
before the model is built. TensorFlow refuses memory growth on a GPU that has a memory limit (a logical device);
the ``TF_FORCE_GPU_ALLOW_GROWTH`` variable asks its allocator for growth instead, and the two combine: memory is
taken as needed, up to the limit. This engine's GPU behaviour has not been run on a GPU here (TensorFlow is not
installed on the GPU machines this project is tested on): the calls it makes are unit-tested on the CPU.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from common.plugins import ENGINES
from common.settings import EngineSettings
from detector.engines.base import EngineError
from detector.yolo.postprocess import OutputLayout

if TYPE_CHECKING:
    from detector.model import ModelSpec

log = logging.getLogger(__name__)


class TensorFlowEngineConfig(EngineSettings):
    """Keras 3 on TensorFlow; GPU settings are applied before TensorFlow touches a GPU."""

    kind: Literal["tensorflow"] = "tensorflow"
    needs: ClassVar[tuple[str, ...]] = ("tensorflow", "keras", "h5py")
    gpu: int | Literal["auto"] | None = Field(
        "auto", description="GPU index to pin to; None: CPU only; auto: TensorFlow's choice (the first GPU)."
    )
    memory_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of the GPU's memory this process may use (a TensorFlow memory limit)."
    )
    allow_growth: bool = Field(True, description="Take GPU memory as needed instead of the whole share at start.")
    hush: bool = Field(True, description="Silence TensorFlow's and absl's start-up logging.")


@dataclass(frozen=True)
class GpuPlan:
    """What to ask of TensorFlow: which GPU it may see, a memory limit, and how to grow."""

    visible: int | None
    """Index among TensorFlow's GPUs to keep visible; None: hide every GPU (CPU only)."""
    memory_limit_mb: int | None
    growth_env: bool
    """Set TF_FORCE_GPU_ALLOW_GROWTH (growth under a memory limit)."""
    set_growth: bool
    """Call set_memory_growth (growth without a limit)."""

    @property
    def device(self) -> str:
        return "cpu" if self.visible is None else f"gpu:{self.visible}"


def plan_gpu(cfg: TensorFlowEngineConfig, gpu_count: int, total_mb: int | None) -> GpuPlan:
    """Turn the engine settings into TensorFlow calls; ``total_mb`` is the chosen GPU's memory."""
    if cfg.gpu is None or gpu_count == 0:
        if isinstance(cfg.gpu, int):
            raise EngineError(f"engine.gpu is {cfg.gpu} but TensorFlow sees no GPU: set engine.gpu to null for CPU")
        return GpuPlan(None, None, False, False)
    index = 0 if cfg.gpu == "auto" else cfg.gpu
    if index >= gpu_count:
        raise EngineError(f"engine.gpu is {index} but TensorFlow sees {gpu_count} GPUs (0 to {gpu_count - 1})")
    if cfg.memory_fraction >= 1.0:
        return GpuPlan(index, None, False, cfg.allow_growth)
    if total_mb is None:
        raise EngineError(
            "engine.memory_fraction needs the GPU's total memory and nvidia-smi could not tell it: "
            "install the NVIDIA driver tools, or set memory_fraction to 1"
        )
    return GpuPlan(index, max(1, int(total_mb * cfg.memory_fraction)), cfg.allow_growth, False)


def apply_gpu(plan: GpuPlan, tf: Any) -> None:
    """Make the calls the plan asks for (``tf`` is the tensorflow module, or a recorder in tests)."""
    gpus = tf.config.list_physical_devices("GPU")
    if plan.visible is None:
        tf.config.set_visible_devices([], "GPU")
        return
    gpu = gpus[plan.visible]
    tf.config.set_visible_devices([gpu], "GPU")
    if plan.memory_limit_mb is not None:
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=plan.memory_limit_mb)]
        )
    elif plan.set_growth:
        tf.config.experimental.set_memory_growth(gpu, True)


def gpu_total_mb(tf_index: int, environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Total memory of TensorFlow's GPU ``tf_index``, from nvidia-smi (which counts GPUs physically, so map
    through CUDA_VISIBLE_DEVICES)."""
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = visible[tf_index] if tf_index < len(visible) else str(tf_index)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={physical}"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return int(out.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


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
    output_layout: OutputLayout = "yolov3"

    def __init__(self, cfg: TensorFlowEngineConfig, spec: ModelSpec, max_batch: int | None = None) -> None:
        # Growth under a memory limit is an allocator setting read when the GPU initialises: set it first.
        if cfg.allow_growth and cfg.memory_fraction < 1.0 and cfg.gpu is not None:
            os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        with _quiet_native_stderr(cfg.hush):
            import keras
            import tensorflow as tf

        from detector.yolo.keras_model import build_body

        if cfg.hush:
            tf.get_logger().setLevel(logging.ERROR)
            logging.getLogger("absl").setLevel(logging.ERROR)
        count = len(tf.config.list_physical_devices("GPU"))
        index = 0 if cfg.gpu in (None, "auto") else int(cfg.gpu)
        total = gpu_total_mb(index) if count and cfg.gpu is not None and cfg.memory_fraction < 1.0 else None
        plan = plan_gpu(cfg, count, total)
        apply_gpu(plan, tf)
        self.device = plan.device
        keras.utils.set_random_seed(spec.seed)  # random weights are reproducible when no weights file is given
        self.model = build_body(spec.architecture, len(spec.classes), spec.input_size, spec.width)
        if spec.weights is not None:
            self.model.load_weights(str(spec.weights))  # by layer order: TYOY's files load unchanged
        # One traced graph per input type for any batch size: the batch dimension stays symbolic. uint8 goes
        # through a table of numpy's float32 v / 255: TensorFlow would turn "/ 255" into "* (1/255)", 1 ulp off
        # TYOY's values for half the bytes.
        shape = (None, spec.input_size, spec.input_size, 3)
        scale = tf.constant(np.arange(256, dtype=np.float32) / np.float32(255))
        self._infer = {
            np.dtype(np.float32): tf.function(
                lambda x: self.model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)]
            ),
            np.dtype(np.uint8): tf.function(
                lambda x: self.model(tf.gather(scale, tf.cast(x, tf.int32)), training=False),
                input_signature=[tf.TensorSpec(shape, tf.uint8)],
            ),
        }
        self._tf = tf
        log.info(
            "tensorflow engine ready: %s %d px on %s%s",
            spec.architecture,
            spec.input_size,
            self.device,
            f" (limit {plan.memory_limit_mb} MB)" if plan.memory_limit_mb else "",
        )

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self._infer[batch.dtype](self._tf.constant(batch))
        return [o.numpy() for o in outputs]


ENGINES.register(TensorFlowEngineConfig, TensorFlowEngine)
