"""The torch engine's own image path (``load``: letterbox on its device, then ``predict``), run on the CPU.

On a GPU the same code decodes JPEGs with nvJPEG first; that half runs in the GPU benchmark, which checks its
detections against the CPU path's.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from common.config import ModelConfig
from detector.engines import EngineError
from detector.engines.torch import TorchEngineConfig
from detector.model import ModelSpec
from detector.yolo.postprocess import letterbox_into

if TYPE_CHECKING:
    from detector.engines.torch import TorchEngine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the torch extra)")

SIZE = 96


def make_engine(**cfg: Any) -> TorchEngine:
    from detector.engines.torch import TorchEngine

    spec = ModelSpec.from_config(ModelConfig(classes=["a", "b"], architecture="tiny", input_size=SIZE))
    return TorchEngine(TorchEngineConfig(gpu=None, precision="fp32", **cfg), spec)


def cpu_letterbox(image: np.ndarray) -> np.ndarray:
    out = np.empty((SIZE, SIZE, 3), np.uint8)
    letterbox_into(image, SIZE, out, "pil")
    return out


def test_load_letterboxes_like_the_cpu_path_and_predicts_the_same_heads() -> None:
    engine = make_engine()
    assert not engine.loads_images  # CPU: the pipeline decodes
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((SIZE, SIZE, 3), (60, SIZE, 3))]
    loaded = engine.load(images)
    assert loaded.kept == [0, 1] and loaded.failed == {}
    canvas = loaded.tensor.permute(0, 2, 3, 1).numpy()
    expected = np.stack([cpu_letterbox(im) for im in images])
    # No resize needed (a square at the input size, or a side that fits): the same bytes, grey bars included.
    np.testing.assert_array_equal(canvas, expected)
    for got, want in zip(engine.predict(loaded), engine.predict(expected), strict=True):
        np.testing.assert_array_equal(got, want)


def test_resized_frames_keep_tyoy_geometry_and_stay_close_to_pil_bicubic() -> None:
    engine = make_engine()
    rng = np.random.default_rng(6)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((320, 240)))
    images = [base, base[:200, :150].copy(), base]  # two sizes: two groups, one of two frames
    canvas = engine.load(images).tensor.permute(0, 2, 3, 1).numpy().astype(int)
    for got, image in zip(canvas, images, strict=True):
        want = cpu_letterbox(image).astype(int)
        grey = np.all(want == 128, axis=2) & np.all(got == 128, axis=2)
        # Same placement: the bars match where PIL put them, and the picture's rows/cols line up.
        assert (np.all(want == 128, axis=2) == np.all(got == 128, axis=2)).mean() > 0.99
        diff = np.abs(got - want)[~grey]
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99))
    np.testing.assert_array_equal(canvas[0], canvas[2])


def test_decode_on_the_gpu_is_refused_on_the_cpu_and_jpeg_bytes_need_it() -> None:
    with pytest.raises(EngineError, match=r"engine\.decode is gpu but the engine runs on the CPU"):
        make_engine(decode="gpu")
    engine = make_engine(decode="auto")
    with pytest.raises(EngineError, match="decodes JPEGs on the CPU"):
        engine.load([b"\xff\xd8"])


@pytest.mark.slow
def test_a_compiled_engine_gives_the_eager_heads_and_compiles_once_for_every_batch_size() -> None:
    import torch
    from torch._dynamo.utils import counters

    eager, compiled = make_engine(), make_engine(compile=True)
    torch._dynamo.reset()
    counters.clear()
    rng = np.random.default_rng(7)
    for n in (3, 1, 5):  # a batch of one runs as two rows, so it reuses the same compiled graph
        batch = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        for want, got in zip(eager.predict(batch), compiled.predict(batch), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1


def test_buckets_past_the_pools_largest_batch_are_not_captured() -> None:
    from detector.engines.torch import buckets_for

    assert buckets_for([64, 1, 8, 32, 2, 16, 4], 32) == [1, 2, 4, 8, 16, 32]
    assert buckets_for([1, 2, 4, 8, 16, 32, 64], 20) == [1, 2, 4, 8, 16, 32]  # 20 pads up to 32
    assert buckets_for([1, 8], 100) == [1, 8]  # larger batches run without a graph
    assert buckets_for([4, 1], None) == [1, 4]


def test_compile_auto_stays_eager_on_the_cpu() -> None:
    engine = make_engine()  # compile: auto
    assert engine._net is engine._model
