"""A real detector process running an ONNX export (the onnx engine) on frames a real ingest publishes to a real
server, results through the JSONL sink: every frame gets one result, and known boxes come back where they are."""

from __future__ import annotations

import importlib.util
import textwrap
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.embedded import EmbeddedServer
from tests.e2e.test_stack import finish, results, service

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxruntime")),
        reason="needs the torch and onnx extras and the onnx package (dev), to export the model",
    ),
]

FRAMES = 6  # per camera


def test_a_detector_process_runs_an_onnx_export_on_what_ingest_publishes(tmp_path: Path) -> None:
    from tests.unit.test_onnx_engine import NAMES, bright_box, export, white_rectangle

    # Ultralytics' default export: a YOLOv8-layout output, batch 1, 128 px, class names in the metadata.
    export(bright_box("v8"), tmp_path / "bright.onnx", batch=1, names=NAMES)
    stills = tmp_path / "stills"
    stills.mkdir()
    boxes = [(32 + 16 * i, 32, 96 + 16 * i, 96) for i in range(FRAMES)]  # even corners: exact at ingest's half size
    for i, box in enumerate(boxes):
        cv2.imwrite(str(stills / f"{i:02d}.png"), white_rectangle(256, 128, box))
    config = tmp_path / "stack.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {tmp_path}}}}}
        streams: {{prefix: onnx, frames_maxlen: 1000}}
        ingest:
          cameras:
            - name: synth
              source: {{kind: synthetic, seed: 4, width: 320, height: 240, fps: 8}}
              max_side: 320
            - name: still
              source: {{kind: images, path: stills, pattern: "*.png"}}
              max_side: 128  # 256x128 sent as 128x64: the detector maps boxes back to the original size
              encoding: bgr8
        detector:
          pools:
            - name: main
              model: {{onnx: bright.onnx}}
              engine: {{kind: onnx, gpu: null, threads: 1}}
              max_batch: 4
              max_age_ms: null  # every frame must get a result, however slow the start
              shed_behind: null
              block_ms: 500
        sinks:
          - {{kind: jsonl, name: out, path: results.jsonl, block_ms: 500}}
        """)
    )
    with EmbeddedServer(tmp_path / "v.sock") as server:
        ingest = service("ingest", config, server.url, "--max-frames", str(FRAMES))
        detector = service("detector", config, server.url, "--until-idle", "6")
        # The sink stops at the expected count (a lost frame would hold it to --duration and fail below).
        sink = service("sink", config, server.url, "--max-frames", str(2 * FRAMES), "--duration", "240")
        finish(ingest, 120)
        detector_log = finish(detector, 300)
        finish(sink, 300)

    assert "onnx engine ready: bright.onnx (v8 outputs, 128 px) on cpu with CPUExecutionProvider" in detector_log
    got = results(tmp_path / "results.jsonl")
    per_frame = Counter((r["stream"], r["seq"]) for r in got)
    assert per_frame == {(s, i): 1 for s in ("synth", "still") for i in range(FRAMES)}
    for r in got:
        assert (r["engine"], r["device"], r["pool"]) == ("onnx", "cpu", "main")
        assert all(d["label"] in ("white", "ghost") for d in r["detections"])
    still = {r["seq"]: r for r in got if r["stream"] == "still"}
    for seq, box in enumerate(boxes):
        r = still[seq]
        assert (r["width"], r["height"]) == (256, 128)
        # The box of the white rectangle, as class 0 and as class 1 (its duplicate 2 px off suppressed by NMS).
        assert [(d["label"], round(d["score"], 3)) for d in r["detections"]] == [("white", 0.9), ("ghost", 0.6)]
        for d in r["detections"]:
            np.testing.assert_allclose(d["box"], box, atol=1e-3)
