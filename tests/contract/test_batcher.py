"""Cross-stream batching against a real server: size, deadline, quiet streams, overflow; and graceful overload:
live frames shed past ``shed_behind`` (skipped unread on the server, or superseded in hand), counted, freshest
first; a recording's frames never shed."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest
import redis

from common.keys import Keys
from common.redis_io import GroupReader, stream_keys
from common.wire import Frame, decode, encode
from detector.batcher import Batcher
from detector.pipeline import Gathered

pytestmark = pytest.mark.contract


def batcher(
    client: redis.Redis,
    prefix: str,
    max_batch: int,
    max_wait_ms: int,
    block_ms: int = 2000,
    names: tuple[str, ...] = ("*",),
    shed_behind: int | None = None,
    count: int | None = None,
    max_age_ms: int | None = None,
) -> Batcher:
    keys = Keys(prefix)
    reader = GroupReader(
        client, group="detector:p", consumer="c", dead_letters=keys.dead_letters, block_ms=block_ms,
        count=count or max_batch, rescan_s=0.05,
        discover=lambda: stream_keys(client, keys.stage("frames"), list(names)),
    )  # fmt: skip
    return Batcher(reader, keys, max_batch, max_wait_ms, max_age_ms, shed_behind)


def frame(stream: str, seq: int, live: bool = True) -> bytes:
    return encode(Frame(stream=stream, seq=seq, capture_ts=time.time(), width=8, height=8, encoding="jpeg",
                        image_width=8, image_height=8, data=b"\xff\xd8", live=live))  # fmt: skip


def push(client: redis.Redis, prefix: str, stream: str, n: int, live: bool = True, start: int = 0) -> list[str]:
    key = Keys(prefix).frames(stream)
    return [str(client.xadd(key, {"msg": frame(stream, start + i, live)}).decode()) for i in range(n)]


def names(batch: Gathered) -> list[str]:
    return [f"{h.frame.stream}-{h.frame.seq}" for h in batch.held]


def seqs(batch: Gathered, stream: str) -> list[int]:
    return sorted(h.frame.seq for h in batch.held if h.frame.stream == stream)


def test_a_full_batch_spans_streams_and_closes_at_max_batch(client: redis.Redis, prefix: str) -> None:
    for s in ("a", "b", "c"):
        push(client, prefix, s, 3)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=5000)
    stop = threading.Event()
    first = b.next(stop)
    assert len(first.held) == 4
    got = names(first) + names(b.next(stop)) + names(b.next(stop))
    assert sorted(got) == sorted(f"{s}-{i}" for s in "abc" for i in range(3))  # overflow carried, none lost


def test_a_partial_batch_closes_at_the_deadline_from_its_first_frame(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "busy", 2)
    push(client, prefix, "quiet", 0)
    b = batcher(client, prefix, max_batch=64, max_wait_ms=300)
    stop = threading.Event()
    started = time.monotonic()
    batch = b.next(stop)
    waited = time.monotonic() - started
    assert len(batch.held) == 2
    assert waited < 1.9  # closed by max_wait_ms, not by the 2 s block: the quiet stream held nothing back


def test_a_frame_arriving_within_the_deadline_joins_the_batch(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 1)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=1500, names=("a", "b"))  # b exists, silent so far
    stop = threading.Event()
    threading.Timer(0.3, push, args=(client, prefix, "b", 1)).start()
    assert sorted(names(b.next(stop))) == ["a-0", "b-0"]


def test_nothing_to_read_returns_an_empty_batch_after_the_block_time(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 0)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=10, block_ms=200)
    batch = b.next(threading.Event())
    assert (batch.held, batch.failed, batch.stale, batch.shed, batch.skipped) == ([], [], [], [], {})


def test_a_message_that_does_not_decode_is_failed_with_the_reason(client: redis.Redis, prefix: str) -> None:
    client.xadd(Keys(prefix).frames("a"), {"msg": b"junk"})
    push(client, prefix, "a", 1)
    batch = batcher(client, prefix, max_batch=8, max_wait_ms=10).next(threading.Event())
    assert names(batch) == ["a-0"]
    [(_, why)] = batch.failed
    assert why.startswith("WireError: not a msgpack message")


# ---------------------------------------------------------------------------------------------------- shedding
def shed_tally(client: redis.Redis, prefix: str) -> dict[str, int]:
    tally: Any = client.hgetall(Keys(prefix).tallies("shed", "detector:p")[0])
    return {k.decode(): int(v) for k, v in tally.items()}


def test_a_live_backlog_is_skipped_on_the_server_to_the_newest_frames(client: redis.Redis, prefix: str) -> None:
    """A read that comes back full has newer frames behind it: the catch-up skips all but the newest
    shed_behind + 1 unread (tallied by the server), and the full read's own frames are shed as superseded."""
    push(client, prefix, "a", 30)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=1)
    batch = b.next(threading.Event())
    assert seqs(batch, "a") == [28, 29]  # the newest two, nothing older
    assert {h.frame.seq: h.behind for h in batch.held} == {28: 1, 29: 0}
    assert len(batch.shed) == 4  # the first read's four (seq 0-3), superseded in hand
    assert batch.skipped == {Keys(prefix).frames("a"): 24}  # seq 4-27, never delivered
    assert shed_tally(client, prefix) == {"a": 24}  # the in-hand ones are tallied when the batch is acked
    group = next(g for g in client.xinfo_groups(Keys(prefix).frames("a")) if g["name"] == b"detector:p")
    assert group["lag"] == 0 and group["pending"] == 4 + 2  # the shed four are acked with the batch, not here
    assert group["entries-read"] == 30


def test_the_catch_up_counts_skipped_frames_when_redis_cannot_tell_the_lag(client: redis.Redis, prefix: str) -> None:
    """An entry deleted from the middle of the stream leaves Redis unable to tell the lag: the script counts."""
    ids = push(client, prefix, "a", 12)
    b = batcher(client, prefix, max_batch=2, max_wait_ms=10, shed_behind=0)
    b.reader.read(block_ms=0)  # creates the group (from the start) and reads seq 0-1
    client.xdel(Keys(prefix).frames("a"), ids[5])
    client.xgroup_setid(Keys(prefix).frames("a"), "detector:p", ids[1])  # forget entries-read: lag unknown
    assert client.xinfo_groups(Keys(prefix).frames("a"))[0]["lag"] is None
    batch = b.next(threading.Event())
    assert seqs(batch, "a") == [11]
    assert batch.skipped == {Keys(prefix).frames("a"): 6}  # seq 4-10 but 5; seq 2-3 came in the full read, shed
    assert len(batch.shed) == 2


def test_frames_in_hand_are_superseded_by_newer_ones_of_their_stream(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 2)
    b = batcher(client, prefix, max_batch=1, max_wait_ms=10, shed_behind=0, count=8)
    first = b.next(threading.Event())
    assert seqs(first, "a") == [1] and len(first.shed) == 1  # seq 0 was behind seq 1 in the same read
    push(client, prefix, "b", 1)
    push(client, prefix, "a", 1, start=2)
    second = b.next(threading.Event())
    assert len(second.held) == 1 and not second.shed


def test_batches_take_the_freshest_live_frames_first_then_recordings_in_order(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "rec", 5, live=False)
    for s in ("old", "mid", "new"):
        push(client, prefix, s, 1)
        time.sleep(0.005)  # entry ids a few ms apart
    b = batcher(client, prefix, max_batch=2, max_wait_ms=10, shed_behind=2)
    stop = threading.Event()
    assert names(b.next(stop)) == ["new-0", "mid-0"]
    assert names(b.next(stop)) == ["old-0", "rec-0"]
    rest = names(b.next(stop)) + names(b.next(stop))
    assert rest == ["rec-1", "rec-2", "rec-3", "rec-4"]


def test_a_recording_is_never_shed_however_far_behind(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "rec", 40, live=False)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=10, shed_behind=0)
    stop = threading.Event()
    got: list[int] = []
    for _ in range(6):
        batch = b.next(stop)
        assert not batch.shed and not batch.skipped
        got += [h.frame.seq for h in batch.held]
    assert got == list(range(40))
    assert shed_tally(client, prefix) == {}


def test_without_shed_behind_every_live_frame_is_batched_in_order(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 20)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=10, shed_behind=None)
    stop = threading.Event()
    got = [h.frame.seq for _ in range(3) for h in b.next(stop).held]
    assert got == list(range(20))


def test_frames_in_hand_past_max_age_are_stale_not_batched(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 1)
    push(client, prefix, "b", 1)
    b = batcher(client, prefix, max_batch=1, max_wait_ms=10, shed_behind=2, max_age_ms=200)
    first = b.next(threading.Event())
    assert len(first.held) == 1
    time.sleep(0.3)
    second = b.next(threading.Event())
    assert not second.held and len(second.stale) == 1


def test_two_consumers_catching_up_at_once_never_serve_the_same_frame(client: redis.Redis, prefix: str) -> None:
    """The catch-up is one step on the server: two replicas racing over one backlog split it, skip it once."""
    push(client, prefix, "a", 50)
    one = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=1)
    two = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=1)
    two.reader.consumer = "d"
    results: list[Gathered] = []
    threads = [threading.Thread(target=lambda b=b: results.append(b.next(threading.Event()))) for b in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    served = [h.frame.seq for g in results for h in g.held]
    assert len(served) == len(set(served))
    settled = len(served) + sum(len(g.shed) for g in results) + sum(shed_tally(client, prefix).values())
    assert settled == 50  # every frame read once or skipped once
    assert max(served) == 49


def test_the_results_carry_how_far_behind_the_frame_was(client: redis.Redis, prefix: str) -> None:
    push(client, prefix, "a", 3)
    batch = batcher(client, prefix, max_batch=8, max_wait_ms=10, shed_behind=2).next(threading.Event())
    assert sorted((h.frame.seq, h.behind) for h in batch.held) == [(0, 2), (1, 1), (2, 0)]
    assert decode(frame("a", 0), Frame).live


def test_a_recording_in_hand_is_not_read_further_until_batched(client: redis.Redis, prefix: str) -> None:
    """What a recording's pacing counts is frames not read yet: a stream is not read again while the hand holds a
    read's worth of it, so a recording waiting behind live frames keeps its frames in Redis (and its ingest paced)."""
    push(client, prefix, "rec", 30, live=False)
    b = batcher(client, prefix, max_batch=2, max_wait_ms=10, shed_behind=1, count=4)
    stop = threading.Event()
    batched = 0
    for i in range(3):
        push(client, prefix, "live", 4, start=4 * i)
        batch = b.next(stop)
        order = [h.frame.stream for h in batch.held]
        assert order[0] == "live" and order == sorted(order)  # live first while there is any ("live" < "rec")
        assert b.held <= 7 + 2  # under two reads' worth of the recording, two live (shed_behind 1), never more
        batched += order.count("rec")
    group = next(g for g in client.xinfo_groups(Keys(prefix).frames("rec")) if g["name"] == b"detector:p")
    # Not read again while a read's worth (4) is in hand: fewer than two reads' worth ever held, the rest waits.
    assert group["entries-read"] <= batched + 2 * 4 - 1 and group["lag"] == 30 - group["entries-read"]


def test_a_dead_consumers_claimed_frames_are_shed_when_newer_ones_wait(client: redis.Redis, prefix: str) -> None:
    """Claimed frames were read long ago: how far behind they are is not known from the claim, so their stream is
    caught up, and they are shed when newer frames wait."""
    push(client, prefix, "a", 3)
    dead = batcher(client, prefix, max_batch=8, max_wait_ms=10)
    dead.reader.consumer = "dead"
    assert len(dead.next(threading.Event()).held) == 3  # read, never acked: the consumer dies
    push(client, prefix, "a", 4, start=3)
    alive = batcher(client, prefix, max_batch=8, max_wait_ms=10, shed_behind=1)
    alive.reader.claim_idle_ms = 100
    time.sleep(0.2)
    batch = alive.next(threading.Event())
    assert seqs(batch, "a") == [5, 6]  # the newest two, not the claimed 0-2
    assert sorted(decode(e.payload, Frame).seq for e in batch.shed) == [0, 1, 2]
    assert batch.skipped == {Keys(prefix).frames("a"): 2}  # seq 3-4


# ---------------------------------------------------------------------------------------------------- overload
def test_past_capacity_live_streams_are_taken_in_turn_and_the_host_reads_about_what_it_infers(
    client: redis.Redis, prefix: str
) -> None:
    """Reading every frame that arrives costs the host per frame pushed: past capacity the batcher takes the live
    streams in turn instead, each one's newest frame read and the rest skipped on the server."""
    streams = [f"s{i:02}" for i in range(40)]
    for s in streams:
        push(client, prefix, s, 3)
    b = batcher(client, prefix, max_batch=8, max_wait_ms=10, shed_behind=0)
    stop = threading.Event()
    first = b.next(stop)  # one read of everything: 120 frames for a batch of 8
    assert b.overloaded and len(first.held) == 8
    served, read_before = 0, b.reader.stats.read
    for round_ in range(10):
        for s in streams:
            push(client, prefix, s, 5, start=3 + 5 * round_)
        batch = b.next(stop)
        assert len(batch.held) == 8 and all(h.behind == 0 for h in batch.held)
        served += len(batch.held)
        b.reader.ack([h.entry for h in batch.held] + batch.shed + batch.stale)
    # About one frame read per frame inferred (each stream's newest), not the 2,000 pushed meanwhile.
    assert b.reader.stats.read - read_before <= 2 * served + 32, (b.reader.stats.read - read_before, served)
    assert b.overloaded
    tally = shed_tally(client, prefix)
    assert sum(tally.values()) > 1000  # skipped on the server, counted per stream
    assert set(tally) <= set(streams)


def read_ages_in_turn(
    client: redis.Redis, prefix: str, streams: int, max_batch: int, every: float, paced: bool = True, fps: float = 5
) -> list[float]:
    """Cameras at ``fps`` with their phases spread over the interval, ``max_batch`` frames taken every ``every`` s
    (``paced``), or ``every`` s after the last batch came (a feeder's way): past capacity. How old each frame taken
    was when read, once the cameras' pace is learnt."""
    names = [f"s{i}" for i in range(streams)]
    for s in names:  # a backlog: the first read is past capacity
        push(client, prefix, s, 3)
    b = batcher(client, prefix, max_batch=max_batch, max_wait_ms=10, shed_behind=0)
    stop = threading.Event()
    b.next(stop)
    assert b.overloaded
    interval, start = 1 / fps, time.time()
    due = {s: start + i * interval / len(names) for i, s in enumerate(names)}
    seq = dict.fromkeys(names, 3)
    ages: list[float] = []
    next_batch = start
    while time.time() < start + 1.0 + 10 * interval:
        now = time.time()
        for s in names:
            if now >= due[s]:
                push(client, prefix, s, 1, start=seq[s])
                seq[s] += 1
                due[s] += interval
        if now >= next_batch:
            batch = b.next(stop)
            if now > start + 1.0 + 3 * interval:  # time to learn the cameras' pace (a backlog tells none)
                ages += [h.read_at - h.frame.capture_ts for h in batch.held]
            b.reader.ack([h.entry for h in batch.held] + batch.shed + batch.stale)
            next_batch = max(next_batch + every, time.time()) if paced else time.time() + every
        time.sleep(0.002)
    assert b.overloaded
    return sorted(ages)


def test_in_turn_the_streams_whose_newest_frame_just_landed_are_visited_first(client: redis.Redis, prefix: str) -> None:
    """8 cameras, 2 frames taken every 80 ms (25 frames/s of 40): in turn, a frame is read soon after it lands (a
    fixed rotation would read it at any age up to the interval, 0.1 s typical)."""
    ages = read_ages_in_turn(client, prefix, 8, 2, 0.08)
    assert len(ages) >= 20 and ages[len(ages) // 2] < 0.06, [round(a, 3) for a in ages]


def test_in_turn_a_frame_about_to_be_superseded_is_shed_for_the_next(client: redis.Redis, prefix: str) -> None:
    """100 cameras at 2 fps, 4 frames taken 30 ms after each batch (about 120 frames/s of 200): a stream's frame
    often loses to fresher ones until late in its life, or the visit comes just before the next lands; taken then,
    it would be served nearly an interval old just as a fresh one lands. It is shed and the next taken: no frame is
    read older than three quarters of the interval (0.375 s; before, up to 0.5 s)."""
    ages = read_ages_in_turn(client, prefix, 100, 4, 0.03, paced=False, fps=2)
    assert len(ages) >= 200 and ages[-1] < 0.375, [round(a, 3) for a in ages[-20:]]


def test_the_turns_end_when_a_whole_turn_skips_nothing(client: redis.Redis, prefix: str) -> None:
    streams = [f"s{i}" for i in range(12)]
    for s in streams:
        push(client, prefix, s, 2)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=1)
    stop = threading.Event()
    b.next(stop)
    assert b.overloaded
    for _ in range(8):  # nothing new arrives: the hand empties, a whole turn finds nothing to skip
        b.next(stop)
    assert not b.overloaded


def test_a_recording_is_never_skipped_even_when_asked_to_catch_up(client: redis.Redis, prefix: str) -> None:
    """The catch-up tells a recording's frame by its encoded ``live: false``: it reads the oldest, skips none."""
    assert b"\xa4live\xc2" in frame("r", 0, live=False) and b"\xa4live\xc2" not in frame("r", 0)
    push(client, prefix, "rec", 10, live=False)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=0)
    b.reader.read(block_ms=0, skip=[Keys(prefix).frames("rec")])  # rescans: creates the group
    got, skipped = b.reader.read_newest(
        {Keys(prefix).frames("rec"): "rec"}, 2, functools.partial(Keys(prefix).shed, "detector:p")
    )
    assert [decode(e.payload, Frame).seq for e in got] == [0, 1] and skipped == {}


def test_one_catch_up_run_serves_many_streams_and_a_stream_without_its_group_fails_alone(
    client: redis.Redis, prefix: str
) -> None:
    """Past capacity a batch visits dozens of streams: one script run catches up with them all, each as if alone (a
    live one skipped to its newest, a recording read in order, one with nothing new read empty); a stream whose group
    is gone is logged and left for the rescan to mend, not the end of the others."""
    keys = Keys(prefix)
    push(client, prefix, "live", 10)
    push(client, prefix, "rec", 10, live=False)
    push(client, prefix, "quiet", 1)
    push(client, prefix, "gone", 3)
    b = batcher(client, prefix, max_batch=4, max_wait_ms=10, shed_behind=0)
    streams = ["live", "rec", "quiet", "gone"]
    b.reader.read(block_ms=0, skip=[keys.frames(s) for s in streams])  # rescans: creates the groups
    b.reader.read_newest({keys.frames("quiet"): "quiet"}, 1, functools.partial(keys.shed, "detector:p"))
    client.xgroup_destroy(keys.frames("gone"), "detector:p")
    got, skipped = b.reader.read_newest(
        {keys.frames(s): s for s in streams}, 2, functools.partial(keys.shed, "detector:p")
    )
    read = {s: [decode(e.payload, Frame).seq for e in got if e.key == keys.frames(s)] for s in streams}
    assert read == {"live": [8, 9], "rec": [0, 1], "quiet": [], "gone": []}
    assert skipped == {keys.frames("live"): 8}
    assert client.hget(keys.shed("detector:p", "live"), "live") == b"8"
