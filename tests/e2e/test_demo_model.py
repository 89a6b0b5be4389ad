"""The bundled demo model through the whole stack: three synthetic cameras, ingest -> two detector replicas ->
the JSONL sink, scored against the cameras' own ground truth."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from common.embedded import EmbeddedServer
from detector.training.evaluate import Labelled, mark_occluded, precision_recall
from tests.conftest import ROOT
from tests.e2e.test_stack import finish, results, service

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

FRAMES = 40  # per camera
CAMERAS = ("north", "south", "gate")
MODEL = ROOT / "detector" / "models" / "shapes"


def test_three_streams_two_replicas_find_the_shapes_and_never_report_null(tmp_path: Path) -> None:
    cams = "\n".join(
        f"    - {{name: {name}, source: {{kind: synthetic, seed: {31 + i}, width: 320, height: 240, fps: 10, "
        f"shapes: {3 + i % 2}, distractors: {1 + i % 2}, realtime: false, truth_path: truth_{name}.jsonl}}}}"
        for i, name in enumerate(CAMERAS)
    )
    config = tmp_path / "stack.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {tmp_path}}}}}
        streams: {{prefix: demo, frames_maxlen: 1000}}
        ingest:
          cameras:
        """)
        + cams
        + textwrap.dedent(f"""
        detector:
          pools:
            - name: main
              model: {{folder: {MODEL}, input_size: 256}}
              max_batch: 8
              max_age_ms: null
              shed_behind: null
              block_ms: 500
              ignore_labels: ["NULL"]
        sinks:
          - {{kind: jsonl, name: out, path: results.jsonl, block_ms: 500}}
        """)
    )
    total = FRAMES * len(CAMERAS)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        detectors = [service("detector", config, server.url, "--replica", r, "--until-idle", "8") for r in ("a", "b")]
        sink = service("sink", config, server.url, "--max-frames", str(total), "--duration", "300")
        finish(service("ingest", config, server.url, "--max-frames", str(FRAMES)), 120)
        logs = [finish(d, 300) for d in detectors]
        finish(sink, 300)

    got = results(tmp_path / "results.jsonl")
    assert Counter((r["stream"], r["seq"]) for r in got) == {(c, i): 1 for c in CAMERAS for i in range(FRAMES)}
    assert {r["replica"] for r in got} == {"a", "b"}, "both replicas took a share"
    truth = {}
    for name in CAMERAS:
        for line in (tmp_path / f"truth_{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            drawn = [Labelled(o["label"], tuple(o["box"])) for o in row["objects"]]
            # NULL shapes hide what is under them, then leave the truth: the pool ignores that label.
            truth[(row["stream"], row["seq"])] = [t for t in mark_occluded(drawn, 320, 240) if t.label != "NULL"]
    pairs = []
    for r in got:
        dets = [Labelled(d["label"], tuple(d["box"]), d["score"]) for d in r["detections"]]
        assert all(d.label != "NULL" for d in dets)
        pairs.append((dets, truth[(r["stream"], r["seq"])]))
    precision, recall = precision_recall(pairs)
    print(f"demo model end to end: precision {precision:.3f}, recall {recall:.3f} over {len(got)} frames")
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert all("engine restarts 0" in log for log in logs)
