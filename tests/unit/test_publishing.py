"""The detector's publishing stage: batches finished in order on their own thread, beside the next inference."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from common.keys import Keys
from common.redis_io import Entry, GroupReader, Tally
from common.wire import Frame, Result, decode, encode
from detector.publishing import Publisher, Publishing
from tests.unit.test_pipeline import jpeg_entry, make


class RecordingReader:
    """Stands in for GroupReader: records what is published; ``gate`` (when set) holds each publish until opened."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked: list[str] = []
        self.dead: list[tuple[str, str]] = []
        self.gate: threading.Event | None = None
        self.publishing = threading.Event()  # set while a publish is in progress
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.group = "detector:p"
        self.tallies: list[Tally] = []

    def publish_and_ack(
        self,
        items: list[tuple[str, bytes, int]],
        entries: list[Entry],
        mark: None = None,
        tallies: Sequence[Tally] = (),
    ) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise ConnectionError("the server went away")
        self.publishing.set()
        if self.gate is not None:
            assert self.gate.wait(5), "the test never opened the gate"
        self.published.extend((key, payload) for key, payload, _ in items)
        self.acked.extend(e.id for e in entries)
        self.tallies += tallies
        self.publishing.clear()

    def ack(self, entries: list[Entry]) -> None:
        self.acked.extend(e.id for e in entries)

    def dead_letter(self, entry: Entry, reason: str) -> None:
        self.dead.append((entry.id, reason))


def publisher(reader: RecordingReader) -> tuple[Publisher, Any]:
    pipeline, _ = make([0])
    return Publisher(Publishing(pipeline, cast(GroupReader, reader), Keys("t"), 100)), pipeline


def test_batches_are_published_in_order_and_close_drains_what_is_queued() -> None:
    reader = RecordingReader()
    pub, pipeline = publisher(reader)
    for seq in range(0, 12, 3):
        pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(seq + i) for i in range(3)])))
    assert pub.close(5.0)
    assert [decode(p, Result).seq for _, p in reader.published] == list(range(12))
    assert reader.acked == [f"1-{i}" for i in range(12)]
    assert pub.counts == {"results": 12, "stale": 0, "shed": 0, "dead": 0, "batches": 4}


def test_stale_frames_are_acked_with_results_and_tallied_per_stream_in_the_same_call() -> None:
    reader = RecordingReader()
    pipeline, _ = make([0], max_age_ms=1000)
    pub = Publisher(Publishing(pipeline, cast(GroupReader, reader), Keys("t"), 100))
    old = [decode(jpeg_entry(i).payload, Frame).model_copy(update={"capture_ts": time.time() - 5}) for i in (1, 2)]
    stale = [Entry("t:frames:cam", f"1-{f.seq}", encode(f)) for f in old]
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(0), *stale])))
    assert pub.close(5.0)
    assert reader.calls == 1 and sorted(reader.acked) == ["1-0", "1-1", "1-2"]
    assert reader.tallies == [Tally("t:stale:detector:p", {"cam": 2})]
    assert pub.counts == {"results": 1, "stale": 2, "shed": 0, "dead": 0, "batches": 1}


def test_shed_frames_are_acked_with_results_tallied_per_stream_and_counted_with_their_reason() -> None:
    reader = RecordingReader()
    pipeline, _ = make([0])
    pub = Publisher(Publishing(pipeline, cast(GroupReader, reader), Keys("t"), 100))
    before = {r: shed_metric("cam", r) for r in ("superseded", "skipped")}
    gathered = pipeline.gather([jpeg_entry(0)])
    gathered.shed = [Entry("t:frames:cam", "1-7", b"")]
    gathered.skipped = {"t:frames:cam": 5}  # skipped unread: tallied by the server, counted here for the metrics
    pub.put(pipeline.predict(pipeline.prepare(gathered)))
    assert pub.close(5.0)
    assert reader.calls == 1 and sorted(reader.acked) == ["1-0", "1-7"]
    assert reader.tallies == [Tally("t:shed:detector:p", {"cam": 1})]
    assert pub.counts == {"results": 1, "stale": 0, "shed": 6, "dead": 0, "batches": 1}
    assert shed_metric("cam", "superseded") - before["superseded"] == 1
    assert shed_metric("cam", "skipped") - before["skipped"] == 5
    [(_, published)] = reader.published
    assert decode(published, Result).behind is None  # not counted: gathered here, not by a shedding batcher


def shed_metric(stream: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("streamyolo_frames_shed_total", {"pool": "p", "stream": stream, "reason": reason})
    return value or 0.0


def test_the_next_batch_is_inferred_while_the_last_one_is_being_published() -> None:
    reader = RecordingReader()
    reader.gate = threading.Event()
    pub, pipeline = publisher(reader)
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(0)])))
    assert reader.publishing.wait(5)
    # Batch 0 is stuck in its publish; the inference loop still runs batch 1 and queues it.
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(1)])))
    assert reader.published == []
    reader.gate.set()
    assert pub.close(5.0)
    assert [decode(p, Result).seq for _, p in reader.published] == [0, 1]


def test_a_failed_publish_stops_the_loop_and_leaves_later_batches_pending() -> None:
    reader = RecordingReader(fail_on_call=1)
    pub, pipeline = publisher(reader)
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(0)])))
    with pytest.raises(RuntimeError, match="publishing results failed: the server went away"):
        for seq in range(1, 50):  # the failure surfaces on a later put (or at close)
            pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(seq)])))
        pub.close(5.0)
    assert reader.published == [] and reader.acked == []  # nothing acked: all of it is redelivered


def test_close_gives_up_after_its_timeout_when_publishing_hangs() -> None:
    reader = RecordingReader()
    reader.gate = threading.Event()
    pub, pipeline = publisher(reader)
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(0)])))
    pub.put(pipeline.predict(pipeline.prepare([jpeg_entry(1)])))
    assert not pub.close(0.3)
    reader.gate.set()
