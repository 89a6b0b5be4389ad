"""The TensorFlow engine's GPU settings: which calls it makes, checked on the CPU with a recorder in place of
TensorFlow (no GPU machine here has TensorFlow; see the README)."""

from __future__ import annotations

from typing import Any

import pytest

from detector.engines import EngineError
from detector.engines.tensorflow import GpuPlan, TensorFlowEngineConfig, apply_gpu, gpu_total_mb, plan_gpu


class Recorder:
    """Stands in for the tensorflow module: records the tf.config calls."""

    def __init__(self, gpus: int) -> None:
        self.calls: list[tuple[Any, ...]] = []
        recorder = self

        class Experimental:
            @staticmethod
            def set_memory_growth(device: str, on: bool) -> None:
                recorder.calls.append(("set_memory_growth", device, on))

        class Config:
            experimental = Experimental

            @staticmethod
            def list_physical_devices(kind: str) -> list[str]:
                return [f"GPU:{i}" for i in range(gpus)]

            @staticmethod
            def set_visible_devices(devices: list[str], kind: str) -> None:
                recorder.calls.append(("set_visible_devices", devices, kind))

            @staticmethod
            def set_logical_device_configuration(device: str, configs: list[Any]) -> None:
                recorder.calls.append(("set_logical_device_configuration", device, configs))

            @staticmethod
            def LogicalDeviceConfiguration(memory_limit: int) -> str:  # noqa: N802 - TensorFlow's name
                return f"limit={memory_limit}"

        self.config = Config


def engine(**kw: Any) -> TensorFlowEngineConfig:
    return TensorFlowEngineConfig(**kw)


def test_no_gpu_means_every_gpu_hidden() -> None:
    plan = plan_gpu(engine(gpu=None), gpu_count=2, total_mb=None)
    assert plan == GpuPlan(None, None, False, False) and plan.device == "cpu"
    tf = Recorder(2)
    apply_gpu(plan, tf)
    assert tf.calls == [("set_visible_devices", [], "GPU")]


def test_auto_on_a_machine_without_gpus_runs_on_the_cpu() -> None:
    assert plan_gpu(engine(), gpu_count=0, total_mb=None).device == "cpu"


def test_pinned_with_growth_and_no_limit() -> None:
    plan = plan_gpu(engine(gpu=1, allow_growth=True), gpu_count=2, total_mb=None)
    tf = Recorder(2)
    apply_gpu(plan, tf)
    assert plan.device == "gpu:1"
    assert tf.calls == [("set_visible_devices", ["GPU:1"], "GPU"), ("set_memory_growth", "GPU:1", True)]


def test_a_memory_fraction_is_a_logical_device_limit_and_growth_goes_through_the_environment() -> None:
    plan = plan_gpu(engine(gpu=0, memory_fraction=0.25, allow_growth=True), gpu_count=1, total_mb=24_000)
    assert plan == GpuPlan(0, 6000, True, False)  # TensorFlow refuses set_memory_growth with a limit
    tf = Recorder(1)
    apply_gpu(plan, tf)
    assert tf.calls == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_logical_device_configuration", "GPU:0", ["limit=6000"]),
    ]


def test_without_growth_the_share_is_reserved_up_front() -> None:
    plan = plan_gpu(engine(gpu=0, memory_fraction=0.5, allow_growth=False), gpu_count=1, total_mb=10_000)
    assert plan == GpuPlan(0, 5000, False, False)
    assert plan_gpu(engine(gpu=0, allow_growth=False), gpu_count=1, total_mb=None) == GpuPlan(0, None, False, False)


def test_impossible_settings_say_which_setting_to_change() -> None:
    with pytest.raises(EngineError, match=r"engine\.gpu is 3 but TensorFlow sees 2 GPUs"):
        plan_gpu(engine(gpu=3), gpu_count=2, total_mb=None)
    with pytest.raises(EngineError, match=r"engine\.gpu is 0 but TensorFlow sees no GPU"):
        plan_gpu(engine(gpu=0), gpu_count=0, total_mb=None)
    with pytest.raises(EngineError, match="memory_fraction needs the GPU's total memory"):
        plan_gpu(engine(gpu=0, memory_fraction=0.5), gpu_count=1, total_mb=None)


def test_total_memory_is_asked_of_nvidia_smi_through_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class Done:
        stdout = "81559\n"

    def fake_run(cmd: list[str], **_: Any) -> Done:
        seen.append(cmd)
        return Done()

    monkeypatch.setattr("subprocess.run", fake_run)
    assert gpu_total_mb(1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == 81559
    assert seen[-1][-1] == "--id=5"
    assert gpu_total_mb(0, {}) == 81559 and seen[-1][-1] == "--id=0"


def test_the_engine_runs_on_the_cpu_when_told_to() -> None:
    from common.config import ModelConfig
    from detector.engines import create_engine
    from detector.model import ModelSpec

    spec = ModelSpec.from_config(ModelConfig(classes=["a"], architecture="tiny", input_size=64))
    tf_engine = create_engine(engine(gpu=None), spec)
    assert tf_engine.device == "cpu"
