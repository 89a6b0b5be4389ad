"""The onnx engine on models the tests export themselves: our own tiny YOLOv3 (heads against the torch engine's),
and stand-ins for YOLOv8 and YOLOv5 exports whose boxes are known (through the letterbox, NMS, class names from
the metadata). CPU (onnxruntime's CPUExecutionProvider)."""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import pytest

from common.config import ConfigError, ModelConfig, PoolConfig, parse_config
from common.redis_io import Entry
from common.wire import Frame, Result, encode
from detector.engines import EngineError, create_engine
from detector.engines.onnx import OnnxEngineConfig
from detector.engines.torch import TorchEngineConfig
from detector.model import ModelSpec
from detector.pipeline import Pipeline
from detector.yolo.files import ModelFileError

if TYPE_CHECKING:
    from torch import nn

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxruntime")),
    reason="needs the torch and onnx extras and the onnx package (dev)",
)

CLASSES = ["circle", "square", "triangle"]
NAMES = "{0: 'white', 1: 'ghost'}"  # as Ultralytics writes its metadata
SIZE = 128


def export(
    module: nn.Module,
    path: Path,
    size: int = SIZE,
    *,
    batch: int | None = None,
    dynamic_size: bool = False,
    float16: bool = False,
    names: str | None = None,
) -> Path:
    """``module`` as an ONNX file with one input ``images`` (batch ``None``: dynamic), and ``names`` metadata."""
    import onnx
    import torch

    example = torch.rand(batch or 2, 3, size, size, dtype=torch.float16 if float16 else torch.float32)
    axes = {**({0: "batch"} if batch is None else {}), **({2: "height", 3: "width"} if dynamic_size else {})}
    with warnings.catch_warnings():
        # torch 2.13 deprecates the TorchScript exporter, but it needs no onnxscript (the dynamo exporter does).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (example,), str(path), dynamo=False, input_names=["images"],
            dynamic_axes={"images": axes} if axes else None, opset_version=17,
        )  # fmt: skip
    if names is not None:
        model = onnx.load(str(path))
        entry = model.metadata_props.add()
        entry.key, entry.value = "names", names
        onnx.save(model, str(path))
    return path


def bright_box(layout: Literal["v8", "v5"]) -> nn.Module:
    """A stand-in for a YOLOv8 or YOLOv5 export whose boxes are known: per image, the bounding box of its white
    pixels (input pixels) as class 0 (score 0.9); the same box 2 px off as class 0 at 0.8 (a duplicate NMS must
    drop); the same box as class 1 at 0.6 (another class: kept); a box far off as class 0 at 0.05 (under the
    threshold). v5: objectness 0.9 times class scores of 1, 0.9, 0.7 and 0.05. No white pixel: no scores."""
    import torch
    from torch import nn

    class BrightBox(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offsets = torch.tensor([[0, 2, 0, 64], [0, 2, 0, 64], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
            if layout == "v8":
                self.scores = torch.tensor([[0.9, 0.8, 0.0, 0.05], [0.0, 0.0, 0.6, 0.0]])
            else:
                self.scores = torch.tensor([[0.9] * 4, [1.0, 0.9, 0.0, 0.05], [0.0, 0.0, 0.7, 0.0]])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float()  # a float16 export takes float16 images
            white = (x.amin(dim=1) > 0.9).float()  # (B, S, S)
            cols, rows = white.amax(dim=1), white.amax(dim=2)  # (B, S): has the column / row a white pixel
            idx = torch.arange(x.shape[-1], dtype=torch.float32)
            far, zero = torch.tensor(float(x.shape[-1])), torch.tensor(0.0)
            x0, x1 = torch.where(cols > 0, idx, far).amin(1), torch.where(cols > 0, idx + 1, zero).amax(1)
            y0, y1 = torch.where(rows > 0, idx, far).amin(1), torch.where(rows > 0, idx + 1, zero).amax(1)
            box = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=1)  # (B, 4) cx, cy, w, h
            out = torch.cat([box[:, :, None] + self.offsets, self.scores * cols.amax(1)[:, None, None]], dim=1)
            return out if layout == "v8" else out.transpose(1, 2)  # v8 (B, 4 + C, N); v5 (B, N, 5 + C)

    return BrightBox()


def tiny_yolov3(tmp: Path, *, nhwc_reversed: bool = False) -> Path:
    """Our own tiny YOLOv3 (the torch engine's network, random weights of seed 0) exported; optionally with its
    heads NHWC and finest first, as other exporters may write them."""
    import torch

    from detector.yolo.torch_model import build_torch_body

    body = build_torch_body("tiny", len(CLASSES), None, seed=0)

    class Reordered(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(h.permute(0, 2, 3, 1) for h in reversed(self.body(x)))

    return export(Reordered() if nhwc_reversed else body, tmp / "tiny.onnx")


def frame_entry(seq: int, rgb: np.ndarray, original: tuple[int, int] | None = None) -> Entry:
    height, width = rgb.shape[:2]
    frame = Frame(
        stream="cam", seq=seq, capture_ts=time.time(), width=(original or (width, height))[0],
        height=(original or (width, height))[1], encoding="bgr8", image_width=width, image_height=height,
        data=cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).tobytes(),
    )  # fmt: skip
    return Entry("k", f"1-{seq}", encode(frame))


def white_rectangle(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def run_pipeline(model: ModelConfig, engine: Any, entries: list[Entry], **pool: Any) -> list[Result]:
    cfg = PoolConfig(name="p", model=model, engine=engine, max_age_ms=None, **pool)
    spec = ModelSpec.from_config(model)
    out = Pipeline(spec, create_engine(cfg.engine, spec), cfg, "r1").process(entries)
    assert not out.failed, out.failed
    return [result for _, result in out.published]


# ---------------------------------------------------------------------------------------------------- YOLOv3 heads
@pytest.mark.parametrize("nhwc_reversed", [False, True], ids=["nchw", "nhwc-finest-first"])
def test_an_export_of_our_tiny_yolov3_gives_the_torch_engines_heads_and_detections(
    tmp_path: Path, nhwc_reversed: bool
) -> None:
    onnx_model = ModelConfig(onnx=tiny_yolov3(tmp_path, nhwc_reversed=nhwc_reversed), classes=CLASSES)
    spec = ModelSpec.from_config(onnx_model)
    # Two heads mean tiny YOLOv3 (its default anchors); the size is the file's, not model.input_size's 416.
    assert (spec.architecture, spec.input_size, len(spec.anchors)) == ("tiny", SIZE, 6)
    torch_model = ModelConfig(classes=CLASSES, architecture="tiny", input_size=SIZE, seed=0)
    onnx_engine = create_engine(OnnxEngineConfig(gpu=None), spec)
    torch_engine = create_engine(TorchEngineConfig(gpu=None, precision="fp32"), ModelSpec.from_config(torch_model))
    assert (onnx_engine.name, onnx_engine.device, onnx_engine.output_layout) == ("onnx", "cpu", "yolov3")
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got, want = onnx_engine.predict(batch), torch_engine.predict(batch)
    assert [h.shape for h in got] == [h.shape for h in want] == [(3, 4, 4, 24), (3, 8, 8, 24)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)

    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((96, 160, 3), (SIZE, SIZE, 3))]
    entries = [frame_entry(i, image) for i, image in enumerate(images)]
    # Random weights score every anchor near 0.001 (a trained detector's background): threshold 0 keeps them all.
    cuts = {"score_threshold": 0.0, "max_per_class": 5}
    from_onnx = run_pipeline(onnx_model, OnnxEngineConfig(gpu=None), entries, **cuts)
    from_torch = run_pipeline(torch_model, TorchEngineConfig(gpu=None, precision="fp32"), entries, **cuts)
    assert [r.engine for r in from_onnx] == ["onnx", "onnx"]
    for a, b in zip(from_onnx, from_torch, strict=True):
        assert len(a.detections) == len(b.detections) == 5 * len(CLASSES)
        for da, db in zip(a.detections, b.detections, strict=True):
            assert (da.label, da.class_id) == (db.label, db.class_id)
            assert da.score == pytest.approx(db.score, abs=1e-6)
            np.testing.assert_allclose(da.box, db.box, atol=1e-3)


# ---------------------------------------------------------------------------------------------------- v8 and v5
@pytest.mark.parametrize(
    ("layout", "options", "scores"),
    [
        # Ultralytics' default export: batch fixed at 1, names in its dict form.
        ("v8", {"batch": 1, "names": NAMES}, [0.9, 0.6]),
        # Any batch and size, float16 input, names as a JSON list; scores are objectness × class score.
        ("v5", {"dynamic_size": True, "float16": True, "names": '["white", "ghost"]'}, [0.9, 0.63]),
    ],
)
def test_v8_and_v5_boxes_come_back_in_original_pixels_named_from_the_metadata_after_nms(
    tmp_path: Path, layout: Literal["v8", "v5"], options: dict[str, Any], scores: list[float]
) -> None:
    model = ModelConfig(onnx=export(bright_box(layout), tmp_path / f"{layout}.onnx", **options), input_size=SIZE)
    spec = ModelSpec.from_config(model)
    assert spec.classes == ("white", "ghost") and spec.input_size == SIZE
    engine = create_engine(OnnxEngineConfig(gpu=None), spec)
    assert engine.output_layout == layout
    # 128x64: no resize, 32 px bars above and below; 256x128: halved by the letterbox's bicubic resize, so edges
    # may move by a pixel of the letterbox, two of the original.
    small, large = (40, 10, 80, 50), (64, 32, 160, 96)
    entries = [
        frame_entry(0, white_rectangle(128, 64, small)),
        frame_entry(1, white_rectangle(256, 128, large)),
        frame_entry(2, np.zeros((64, 64, 3), np.uint8)),  # nothing white: nothing found
    ]
    results = run_pipeline(model, OnnxEngineConfig(gpu=None), entries)
    for result, box, tolerance in zip(results[:2], (small, large), (0, 2), strict=True):
        # The duplicate (IoU 0.8 with the first) is suppressed; the same box of another class is kept.
        assert [(d.label, d.class_id) for d in result.detections] == [("white", 0), ("ghost", 1)]
        assert [d.score for d in result.detections] == pytest.approx(scores, abs=1e-3)
        for d in result.detections:
            np.testing.assert_allclose(d.box, box, atol=tolerance + 1e-3)
    assert results[2].detections == []
    assert [r.engine for r in results] == ["onnx"] * 3


def test_model_classes_win_over_the_metadata_and_a_fixed_batch_runs_any_batch_in_chunks(tmp_path: Path) -> None:
    path = export(bright_box("v8"), tmp_path / "v8.onnx", batch=1, names=NAMES)
    spec = ModelSpec.from_config(ModelConfig(onnx=path, classes=["person", "dog"]))
    assert spec.classes == ("person", "dog")
    engine = create_engine(OnnxEngineConfig(gpu=None, threads=1), spec)
    batch = np.stack([white_rectangle(SIZE, SIZE, (8 * i, 8, 8 * i + 16, 40)) for i in range(3)])
    (out,) = engine.predict(batch)
    assert out.shape == (3, 6, 4)
    np.testing.assert_array_equal(out[:, :4, 0], [[8 * i + 8, 24, 16, 32] for i in range(3)])  # cx, cy, w, h


# ---------------------------------------------------------------------------------------------------- errors
def config_errors(pool: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(f"detector:\n  pools:\n    - {pool}\n", source="stack.yaml", environ={})
    return info.value.problems


def test_the_onnx_engine_and_model_onnx_need_each_other_and_the_weights_stay_in_the_file() -> None:
    (problem,) = config_errors("{name: p, model: {classes: [a]}, engine: {kind: onnx}}")
    assert problem.startswith("stack.yaml:3: detector.pools[0]:") and "engine.kind onnx needs model.onnx" in problem
    (problem,) = config_errors("{name: p, model: {onnx: m.onnx}, engine: {kind: torch}}")
    assert "model.onnx needs engine.kind: onnx (the torch engine" in problem
    (problem,) = config_errors("{name: p, model: {onnx: m.onnx}}")  # the default engine is tensorflow
    assert "model.onnx needs engine.kind: onnx (the tensorflow engine" in problem
    (problem,) = config_errors("{name: p, model: {onnx: m.onnx, weights: w.h5}, engine: {kind: onnx}}")
    assert "model.onnx holds the weights: remove model.folder and model.weights" in problem
    (problem,) = config_errors("{name: p, model: {}}")  # without onnx, the old rule stands
    assert "give a model folder, or the classes" in problem
    (problem,) = config_errors(
        "{name: p, model: {onnx: m.onnx}, engine: {kind: onnx, gpu: null, providers: [CUDAExecutionProvider]}}"
    )
    assert "engine.providers names CUDAExecutionProvider but engine.gpu is null" in problem
    (problem,) = config_errors("{name: p, model: {onnx: m.onnx}, engine: {kind: onnx, layout: v7}}")
    assert "detector.pools[0].engine.onnx.layout" in problem


def test_missing_or_unreadable_class_names_and_wrong_sizes_are_named_with_the_file(tmp_path: Path) -> None:
    bare = export(bright_box("v8"), tmp_path / "bare.onnx")
    with pytest.raises(ModelFileError, match=r"bare\.onnx: has no class names in its metadata \('names'\); set model"):
        ModelSpec.from_config(ModelConfig(onnx=bare))
    odd = export(bright_box("v8"), tmp_path / "odd.onnx", names="person, dog")
    with pytest.raises(ModelFileError, match="metadata 'names' \\('person, dog'\\) is neither"):
        ModelSpec.from_config(ModelConfig(onnx=odd))
    with pytest.raises(ModelFileError, match=r"takes 128 px images, model\.input_size is 160"):
        ModelSpec.from_config(ModelConfig(onnx=bare, classes=["a", "b"], input_size=160))
    with pytest.raises(ModelFileError, match="its input is 100x100; export it with a square input whose side is a"):
        ModelSpec.from_config(ModelConfig(onnx=export(bright_box("v8"), tmp_path / "100.onnx", 100), classes=["a"]))
    with pytest.raises(ModelFileError, match="ONNX file not found"):
        ModelSpec.from_config(ModelConfig(onnx=tmp_path / "nothing.onnx", classes=["a"]))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it"):
        ModelSpec.from_config(ModelConfig(onnx=tmp_path / "junk.onnx", classes=["a"]))


def test_without_onnxruntime_an_onnx_model_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export(bright_box("v8"), tmp_path / "v8.onnx", names=NAMES)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    monkeypatch.delitem(sys.modules, "detector.engines.onnx", raising=False)
    with pytest.raises(ModelFileError, match=r"v8\.onnx: reading it needs onnxruntime .*; install the onnx extra"):
        ModelSpec.from_config(ModelConfig(onnx=path))


def test_a_layout_or_class_count_the_outputs_do_not_fit_is_refused_at_start(tmp_path: Path) -> None:
    spec = ModelSpec.from_config(ModelConfig(onnx=export(bright_box("v8"), tmp_path / "v8.onnx", names=NAMES)))
    with pytest.raises(EngineError, match=r"outputs \(.* \[.*, 6, 4\]\) does not fit engine.layout v5 with 2 classes"):
        create_engine(OnnxEngineConfig(gpu=None, layout="v5"), spec)
    three = ModelSpec.from_config(ModelConfig(onnx=spec.onnx, classes=CLASSES))
    wanted = r"does not fit engine\.layout auto with 3 classes .*v8: one \[batch, 7, boxes\]"
    with pytest.raises(EngineError, match=wanted):
        create_engine(OnnxEngineConfig(gpu=None), three)
    heads = ModelSpec.from_config(ModelConfig(onnx=tiny_yolov3(tmp_path), classes=CLASSES, architecture="yolov3"))
    with pytest.raises(EngineError, match=r"has 2 YOLOv3 heads \(tiny\) but model.anchors or model.architecture say"):
        create_engine(OnnxEngineConfig(gpu=None), heads)


def test_a_gpu_or_provider_this_onnxruntime_lacks_is_an_error_and_auto_falls_back_to_the_cpu(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the CPU-only behaviour cannot be seen here")
    spec = ModelSpec.from_config(ModelConfig(onnx=export(bright_box("v8"), tmp_path / "v8.onnx", names=NAMES)))
    with pytest.raises(EngineError, match=r"engine\.gpu is 0 but this onnxruntime has no GPU provider"):
        create_engine(OnnxEngineConfig(gpu=0), spec)
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(EngineError, match="asks for CUDAExecutionProvider, which this onnxruntime does not have"):
        create_engine(OnnxEngineConfig(providers=wanted), spec)
    assert create_engine(OnnxEngineConfig(), spec).device == "cpu"  # gpu: auto
