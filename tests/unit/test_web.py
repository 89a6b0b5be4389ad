"""The web view's state and app, without a server: rates and latency from results on a fake clock, the API's
answers (unknown streams, refused names), and frames drawn with their boxes (read back through fakeredis); with a
tracker, the trails, the events list, the grid's tiles, the events' snapshots and clips. (The login: test_web_auth.)"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import cv2
import fakeredis
import numpy as np
import pytest
from starlette.testclient import TestClient

import sink.web
from common.config import ConfigError, parse_config
from common.keys import Keys
from common.redis_io import frame_reader
from common.wire import (
    FIELD,
    BestShot,
    Box,
    Detection,
    Event,
    EventType,
    Frame,
    Result,
    Timings,
    TrackedObject,
    Tracks,
    encode,
)
from sink.clips import ClipError
from sink.draw import BOX_COLOUR
from sink.web import WebSinkConfig
from sink.web.app import ClipMaker, Counts, clip_span, create_app
from sink.web.view import View

PREFIX = "webt"
STATIC = Path(sink.web.__file__).with_name("static")
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(
    stream: str = "cam1",
    seq: int = 0,
    *,
    e2e_ms: float = 10.0,
    labels: tuple[str, ...] = ("circle",),
    frame_id: str | None = None,
    capture_ts: float | None = None,
) -> Result:
    return Result(
        frame_id=frame_id or f"{1700000000000 + seq}-0", stream=stream, seq=seq,
        capture_ts=T0 + seq * 0.1 if capture_ts is None else capture_ts, width=640, height=480, pool="main",
        replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=T0 + 1,
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=e2e_ms),
        detections=[Detection(label=label, class_id=0, score=0.9, box=(100, 100, 300, 300)) for label in labels],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- view
def test_fps_and_latency_percentiles_come_from_the_results_of_the_window() -> None:
    clock = Clock()
    view = View(window_s=10, history=50, clock=clock)
    for seq in range(10):  # 10 frames captured 0.1 s apart: 10 fps; latencies 10, 20, ... 100 ms
        view.add(result(seq=seq, e2e_ms=10.0 * (seq + 1)))
        clock.now += 0.05  # arrival spacing does not matter: the stream's own capture clock does
    (s,) = view.summary()
    assert s["name"] == "cam1" and s["results"] == 10 and s["seq"] == 9
    assert s["fps"] == pytest.approx(10.0)
    assert s["latency_p50_ms"] == 50.0  # nearest rank: the 5th of 10
    assert s["latency_p99_ms"] == 100.0
    clock.now += 10.1  # every result is now older than the window: nothing to rate
    (s,) = view.summary()
    assert s["fps"] == 0.0 and s["latency_p50_ms"] is None and s["latency_p99_ms"] is None
    assert s["seq"] == 9 and s["results"] == 10  # the latest frame is still shown


def test_a_single_result_has_a_latency_but_no_rate_and_streams_are_apart() -> None:
    view = View(window_s=10, history=50, clock=Clock())
    view.add(result("b", 0, e2e_ms=42))
    for seq in range(3):
        view.add(result("a", seq, e2e_ms=5))
    by_name = {s["name"]: s for s in view.summary()}
    assert list(by_name) == ["a", "b"] and view.names() == ["a", "b"]
    assert by_name["b"]["fps"] == 0.0 and by_name["b"]["latency_p50_ms"] == 42.0
    assert by_name["a"]["fps"] == pytest.approx(10.0) and by_name["a"]["latency_p99_ms"] == 5.0
    assert view.take_arrivals() == 4 and view.take_arrivals() == 0


def test_results_read_back_at_start_show_a_frame_but_count_in_no_rate() -> None:
    view = View(window_s=10, history=50, clock=Clock())
    view.add(result(seq=7), live=False)
    (s,) = view.summary()
    assert s["seq"] == 7 and s["results"] == 0 and s["latency_p50_ms"] is None
    assert view.take_arrivals() == 0


def test_detections_are_newest_first_and_bounded_and_an_older_result_never_replaces_the_latest() -> None:
    view = View(window_s=10, history=4, clock=Clock())
    view.add(result(seq=0, labels=("circle", "square")))
    view.add(result(seq=1, labels=("triangle", "square", "circle")))
    view.add(result(seq=2, labels=()))
    rows = view.detections("cam1")
    assert [(d["seq"], d["label"]) for d in rows] == [(1, "circle"), (1, "square"), (1, "triangle"), (0, "square")]
    assert rows[0]["box"] == [100, 100, 300, 300] and rows[0]["frame_id"] == "1700000000001-0"
    view.add(result(seq=1, capture_ts=T0))  # a replica publishing late
    latest = view.latest("cam1")
    assert latest is not None and latest.seq == 2
    with pytest.raises(KeyError):
        view.detections("nope")


def test_a_result_whose_stream_name_could_not_be_a_key_is_skipped() -> None:
    view = View(window_s=10, history=4, clock=Clock())
    view.add(result(stream="a:b"))
    view.add(result(stream="<script>"))
    assert view.names() == []


# ---------------------------------------------------------------------------------------------------- app
def jpeg_frame(stream: str = "cam1") -> Frame:
    """A 640x480 camera frame carried as a 320x240 image of flat grey."""
    image = np.full((240, 320, 3), 128, np.uint8)
    return Frame(
        stream=stream, seq=0, capture_ts=T0, width=640, height=480, encoding="jpeg", image_width=320,
        image_height=240, data=cv2.imencode(".jpg", image)[1].tobytes(),
    )  # fmt: skip


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def app_with(fake: fakeredis.FakeRedis, view: View) -> TestClient:
    return TestClient(create_app(view, frame_reader(fake, Keys(PREFIX)), jpeg_quality=95))


def push_frame(fake: fakeredis.FakeRedis, stream: str = "cam1") -> str:
    return fake.xadd(Keys(PREFIX).frames(stream), {FIELD: encode(jpeg_frame(stream))}).decode()


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def test_the_frame_is_served_with_its_boxes_drawn_read_back_from_the_frames_stream(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=50)
    frame_id = push_frame(fake)
    view.add(result(frame_id=frame_id))
    with app_with(fake, view) as http:
        response = http.get("/api/streams/cam1/frame.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-frame-id"] == frame_id and response.headers["cache-control"] == "no-store"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    # The box (100, 100)-(300, 300) of the 640x480 frame is (50, 50)-(150, 150) in the 320x240 image.
    assert close_to(image[100, 50], BOX_COLOUR) and close_to(image[150, 100], BOX_COLOUR)
    assert close_to(image[100, 100], (128, 128, 128)) and close_to(image[200, 250], (128, 128, 128))


def test_a_frame_trimmed_away_leaves_the_last_one_drawn_or_a_404(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=50)
    view.add(result(seq=0, frame_id="1-0"))  # its frame was never (or is no longer) in the frames stream
    with app_with(fake, view) as http:
        gone = http.get("/api/streams/cam1/frame.jpg")
        assert gone.status_code == 404 and "no frame" in gone.text
        first = push_frame(fake)
        view.add(result(seq=1, frame_id=first))
        assert http.get("/api/streams/cam1/frame.jpg").headers["x-frame-id"] == first
        view.add(result(seq=2, frame_id="2-0"))
        assert http.get("/api/streams/cam1/frame.jpg").headers["x-frame-id"] == first


def test_a_frame_that_cannot_be_decoded_is_missing_not_a_server_error(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=50)
    bad = jpeg_frame().model_copy(update={"data": b"\xff\xd8 not a jpeg"})
    view.add(result(frame_id=fake.xadd(Keys(PREFIX).frames("cam1"), {FIELD: encode(bad)}).decode()))
    view.add(result("cam2", frame_id=fake.xadd(Keys(PREFIX).frames("cam2"), {FIELD: b"junk"}).decode()))
    with app_with(fake, view) as http:
        assert http.get("/api/streams/cam1/frame.jpg").status_code == 404
        assert http.get("/api/streams/cam2/frame.jpg").status_code == 404


def test_streams_and_detections_as_json(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=7, history=50)
    view.add(result("cam1", 0, labels=("square",)))
    view.add(result("cam1", 1, labels=("<b>x</b>",)))
    view.add(result("cam2", 0, labels=()))
    with app_with(fake, view) as http:
        listed = http.get("/api/streams").json()
        dets = http.get("/api/streams/cam1/detections").json()
    assert listed["window_s"] == 7
    assert [(s["name"], s["detections"], s["results"]) for s in listed["streams"]] == [("cam1", 1, 2), ("cam2", 0, 1)]
    assert dets["stream"] == "cam1" and [d["label"] for d in dets["detections"]] == ["<b>x</b>", "square"]


@pytest.mark.parametrize("path", ["detections", "frame.jpg"])
def test_unknown_streams_are_404_and_names_that_are_not_stream_names_are_refused_before_any_lookup(path: str) -> None:
    view = View(window_s=10, history=50)
    view.add(result("cam1"))
    calls: list[tuple[str, str]] = []

    def fetch(stream: str, frame_id: str) -> Frame | None:
        calls.append((stream, frame_id))
        return None

    with TestClient(create_app(view, fetch)) as http:
        assert http.get(f"/api/streams/cam9/{path}").status_code == 404
        for bad in ("a:b", "*", ".x", "-x", "%2A", "a%20b", "x" * 129):
            response = http.get(f"/api/streams/{bad}/{path}")
            assert response.status_code == 400 and response.text == "not a stream name", bad
        for elsewhere in ("a%2Fb", ".."):  # neither is one path segment: no route matches
            assert http.get(f"/api/streams/{elsewhere}/{path}").status_code == 404
    assert all(stream == "cam1" for stream, _ in calls)


def test_the_page_and_its_files_come_from_the_package_and_run_nothing_inline(fake: fakeredis.FakeRedis) -> None:
    with app_with(fake, View(window_s=10, history=50)) as http:
        page = http.get("/")
        files = {name: http.get(f"/static/{name}") for name in ("index.html", "view.css", "view.js")}
        missing = [http.get(f"/static/{name}").status_code for name in ("nope.js", "..%2Fapp.py", "__init__.py")]
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store" and page.headers["x-content-type-options"] == "nosniff"
    for anchor in ('id="streams"', 'id="frame"', 'id="fps"', 'id="latency-p99"', 'id="detections-body"'):
        assert anchor in page.text
    assert page.content == (STATIC / "index.html").read_bytes()
    for name, media in (("view.css", "text/css"), ("view.js", "text/javascript")):
        served = files[name]
        assert served.status_code == 200 and served.headers["content-type"] == f"{media}; charset=utf-8"
        assert served.headers["cache-control"] == "no-store" and served.headers["x-content-type-options"] == "nosniff"
        assert served.content == (STATIC / name).read_bytes()
    assert missing == [404, 404, 404]
    # Nothing inline: the page links its stylesheet and script, and has no style or event attributes.
    assert '<link rel="stylesheet" href="/static/view.css">' in page.text
    assert '<script src="/static/view.js"></script>' in page.text
    assert not re.search(r"<style|<script>|\sstyle=|\son[a-z]+=|javascript:", page.text, re.I)
    assert not any(url in text for text in (page.text, files["view.js"].text) for url in ("http://", "https://"))
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["require-trusted-types-for"] == "'script'" and csp["trusted-types"] == "'none'"
    assert "unsafe" not in page.headers["content-security-policy"]  # no unsafe-inline, no unsafe-eval
    script = files["view.js"].text
    assert ".textContent" in script and ".innerHTML" not in script  # labels and names are never markup


def test_errors_are_plain_text_never_stored_nor_sniffed(fake: fakeredis.FakeRedis) -> None:
    with app_with(fake, View(window_s=10, history=50)) as http:
        for path, code in (("/api/streams/a:b/detections", 400), ("/api/streams/cam9/frame.jpg", 404), ("/x", 404)):
            response = http.get(path)
            assert response.status_code == code and response.headers["content-type"].startswith("text/plain")
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------------------------------------------- config
def test_the_web_sink_config_has_defaults_and_bounds() -> None:
    cfg = parse_config("sinks: [{kind: web, name: view}]", environ={})
    web = cfg.sink("view")
    assert isinstance(web, WebSinkConfig)
    assert (web.host, web.port, web.streams, web.history, web.window_s) == ("127.0.0.1", 8080, ["*"], 50, 10.0)
    bad = textwrap.dedent("""\
        sinks:
          - {kind: web, name: view, port: 70000, history: 0, group: x}
          - {kind: web, name: other, host: "a b"}
        """)
    with pytest.raises(ConfigError) as err:
        parse_config(bad, source="s.yaml", environ={})
    text = "\n".join(err.value.problems)
    for field in ("sinks[0].web.port", "sinks[0].web.history", "sinks[0].web.group", "sinks[1].web.host"):
        assert field in text
    with pytest.raises(ConfigError, match="must exceed the longest block_ms"):
        parse_config("redis: {socket_timeout_s: 2}\nsinks: [{kind: web, name: v, block_ms: 5000}]", environ={})


# ---------------------------------------------------------------------------------------------------- tracker
def tracks(
    stream: str = "cam1", seq: int = 0, objects: tuple[tuple[int, str, Box], ...] = (), frame_id: str | None = None
) -> Tracks:
    return Tracks(
        tracker="trk", frame_id=frame_id or f"{1700000000000 + seq}-0", stream=stream, seq=seq,
        capture_ts=T0 + seq * 0.1, width=640, height=480, untracked=1, skipped=0,
        objects=[TrackedObject(track_id=t, label=label, class_id=0, score=0.8, box=box) for t, label, box in objects],
    )  # fmt: skip


def event(
    stream: str = "cam1",
    track_id: int = 1,
    n: int = 0,
    seq: int = 0,
    *,
    kind: EventType = "start",
    best_frame: str = "1-0",
    **more: object,
) -> Event:
    fields: dict[str, object] = {
        "event_id": f"trk:{stream}:{track_id}:{n}", "tracker": "trk", "stream": stream, "event": kind,
        "track_id": track_id, "label": "person", "class_id": 0, "frame_id": f"{1700000000000 + seq}-0", "seq": seq,
        "capture_ts": T0 + seq * 0.1, "score": 0.9, "box": (100, 100, 300, 300), "first_seen_ts": T0,
        "last_seen_ts": T0 + seq * 0.1, "duration_s": seq * 0.1, "zones": [], "width": 640, "height": 480,
        "best": BestShot(frame_id=best_frame, seq=0, capture_ts=T0, score=0.95, box=(100, 100, 300, 300)), **more,
    }  # fmt: skip
    return Event.model_validate(fields)


def test_tracks_keep_a_bounded_trail_of_centres_per_track_and_skip_old_or_repeated_ones() -> None:
    view = View(window_s=10, history=10, tracker="trk", trail=3)
    for seq in range(5):  # track 1 moves right 10 px a frame; track 2 appears at seq 3
        objects = [(1, "person", (10.0 * seq, 0.0, 10.0 * seq + 20, 20.0))]
        if seq >= 3:
            objects.append((2, "car", (100.0, 100.0, 140.0, 120.0)))
        view.add_tracks(tracks(seq=seq, objects=tuple(objects)))
    view.add_tracks(tracks(seq=2, objects=((1, "person", (0, 0, 2, 2)),)))  # older: ignored
    view.add_tracks(tracks(seq=4, objects=((1, "person", (0, 0, 2, 2)),)))  # the same frame again: ignored
    shown, trails = view.tracked("cam1")
    assert shown is not None and shown.seq == 4
    assert trails == {1: [(30.0, 10.0), (40.0, 10.0), (50.0, 10.0)], 2: [(120.0, 110.0), (120.0, 110.0)]}
    view.add_tracks(tracks(seq=5, objects=((2, "car", (100, 100, 140, 120)),)))
    assert set(view.tracked("cam1")[1]) == {2}  # track 1 is not in the frame shown: no trail drawn
    view.add_tracks(tracks(seq=6, objects=((1, "person", (60, 0, 80, 20)),)))
    assert view.tracked("cam1")[1][1][-2:] == [(50.0, 10.0), (70.0, 10.0)]  # back within 30 s: the same trail
    view.add_tracks(tracks(seq=400, objects=((1, "person", (0, 0, 20, 20)),)))  # 39 s later: a fresh trail
    assert view.tracked("cam1")[1] == {1: [(10.0, 10.0)]}
    (s,) = view.summary()
    assert s["tracks"]["seq"] == 400 and s["tracks"]["objects"] == [{"track_id": 1, "label": "person", "score": 0.8}]
    assert s["frame_id"] is None and s["results"] == 0  # a camera with tracks and no results seen yet
    plain = View(window_s=10, history=10)
    plain.add(result())
    assert "tracks" not in plain.summary()[0]
    view.add_tracks(tracks(stream="a:b", objects=((1, "x", (0, 0, 1, 1)),)))
    assert view.names() == ["cam1"]


def test_events_are_newest_first_across_cameras_kept_once_and_bounded_per_camera() -> None:
    view = View(window_s=10, history=10, tracker="trk", events=3)
    for n in range(4):
        view.add_event(event("cam1", 1, n, seq=n * 10))
    view.add_event(event("cam2", 7, 0, seq=15, kind="update", change="line_cross", line="door", direction="in"))
    view.add_event(event("cam2", 7, 0, seq=15, kind="update"))  # published again: kept once
    rows = view.events(limit=10)
    assert [(r["stream"], r["event_id"]) for r in rows] == [
        ("cam1", "trk:cam1:1:3"), ("cam1", "trk:cam1:1:2"), ("cam2", "trk:cam2:7:0"), ("cam1", "trk:cam1:1:1")
    ]  # fmt: skip
    assert rows[2]["change"] == "line_cross" and rows[2]["line"] == "door" and rows[2]["direction"] == "in"
    assert rows[0]["best"] == {"frame_id": "1-0", "capture_ts": T0, "score": 0.95} and rows[0]["duration_s"] == 3.0
    assert [r["event_id"] for r in view.events(limit=2)] == ["trk:cam1:1:3", "trk:cam1:1:2"]
    assert view.event("cam2", "trk:cam2:7:0").line == "door"
    with pytest.raises(KeyError):
        view.event("cam1", "trk:cam1:1:0")  # pushed out by newer events of its camera
    with pytest.raises(KeyError):
        view.event("cam2", "trk:cam1:1:3")  # an event of another camera


def tracker_app(
    fake: fakeredis.FakeRedis, view: View, clip: ClipMaker | None = None, counts: Counts | None = None
) -> TestClient:
    return TestClient(create_app(view, frame_reader(fake, Keys(PREFIX)), jpeg_quality=95, clip=clip, counts=counts))


def amber_or_red(image: np.ndarray) -> tuple[int, int]:
    b, g, r = (image[..., i].astype(int) for i in range(3))
    red = (r > 180) & (g < 70) & (b < 70)
    amber = (r > 180) & (g > 150) & (b < 120)  # JPEG blends its colour with the grey around it
    return int(amber.sum()), int(red.sum())


def test_the_tile_shows_the_tracked_boxes_and_their_trails_drawn_on_the_frame(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=10, tracker="trk")
    frame_id = push_frame(fake)
    with tracker_app(fake, view) as http:
        assert http.get("/api/streams/cam1/tracks.jpg").status_code == 404  # no stream yet
        view.add_tracks(tracks(seq=0, frame_id="5-0", objects=((4, "person", (100, 100, 200, 200)),)))
        assert http.get("/api/streams/cam1/tracks.jpg").status_code == 404  # its frame is not kept
        for seq in range(1, 6):
            x = 100.0 + 40 * seq
            f = frame_id if seq == 5 else f"{seq}-1"
            view.add_tracks(tracks(seq=seq, frame_id=f, objects=((4, "person", (x, 100, x + 100, 200)),)))
        response = http.get("/api/streams/cam1/tracks.jpg")
        listed = http.get("/api/streams").json()
    assert response.status_code == 200 and response.headers["x-frame-id"] == frame_id
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    # The box (300, 100)-(400, 200) is (150, 50)-(200, 100) in the 320x240 image; the trail runs along y = 75.
    assert close_to(image[100, 175], BOX_COLOUR) and close_to(image[75, 150], BOX_COLOUR)
    trail = image[70:81, 90:150]
    assert amber_or_red(trail)[0] > 50 and close_to(image[150, 100], (128, 128, 128))
    assert listed["tracker"] == "trk" and listed["streams"][0]["tracks"]["frame_id"] == frame_id


def test_events_their_snapshots_and_what_a_trimmed_frame_says(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=10, tracker="trk")
    kept = push_frame(fake)
    view.add_event(event(track_id=3, best_frame=kept))
    view.add_event(event(track_id=4, best_frame="1-0", seq=5))  # its best frame is gone from the frames stream
    with tracker_app(fake, view) as http:
        listed = http.get("/api/events").json()
        shot = http.get("/api/events/cam1/trk:cam1:3:0/snapshot.jpg")
        gone = http.get("/api/events/cam1/trk%3Acam1%3A4%3A0/snapshot.jpg")
        unknown = http.get("/api/events/cam1/trk:cam1:9:0/snapshot.jpg")
        bad = http.get("/api/events/a:b/trk:cam1:3:0/snapshot.jpg")
        limits = [http.get(f"/api/events?limit={v}").status_code for v in ("0", "1001", "x", "1")]
    assert listed["tracker"] == "trk" and [e["track_id"] for e in listed["events"]] == [4, 3]
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/jpeg"
    assert shot.headers["x-frame-id"] == kept
    image = cv2.imdecode(np.frombuffer(shot.content, np.uint8), cv2.IMREAD_COLOR)
    # The box (50, 50)-(150, 150) of the 320x240 image, with half its size around it: (0, 0)-(200, 200).
    assert image.shape == (200, 200, 3) and close_to(image[100, 50], BOX_COLOUR)
    assert gone.status_code == 404 and "is gone" in gone.text and "frames_maxlen" in gone.text
    assert unknown.status_code == 404 and "no such event" in unknown.text
    assert bad.status_code == 400 and limits == [400, 400, 400, 200]


def test_an_events_clip_is_served_as_mp4_and_a_clip_that_cannot_be_made_says_why(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=10, tracker="trk")
    view.add_event(event(track_id=3, seq=20, kind="end"))
    asked: list[Event] = []

    def clip(e: Event) -> bytes:
        asked.append(e)
        if e.track_id == 3 and len(asked) > 1:
            raise ClipError("no frames of camera 'cam1' from ... are kept any more")
        return b"\x00\x00\x00\x18ftypmp42"

    with tracker_app(fake, view, clip) as http:
        made = http.get("/api/events/cam1/trk:cam1:3:0/clip.mp4")
        refused = http.get("/api/events/cam1/trk:cam1:3:0/clip.mp4")
        unknown = http.get("/api/events/cam1/trk:cam1:3:1/clip.mp4")
    assert made.status_code == 200 and made.headers["content-type"] == "video/mp4"
    assert (
        made.content.startswith(b"\x00\x00\x00\x18ftyp")
        and "cam1-track3-end.mp4" in made.headers["content-disposition"]
    )
    assert refused.status_code == 404 and refused.text == "no frames of camera 'cam1' from ... are kept any more"
    assert unknown.status_code == 404 and [e.event_id for e in asked] == ["trk:cam1:3:0"] * 2
    with tracker_app(fake, view) as http:
        assert http.get("/api/events/cam1/trk:cam1:3:0/clip.mp4").status_code == 404  # no clip maker


def test_counts_come_from_the_trackers_hash(fake: fakeredis.FakeRedis) -> None:
    view = View(window_s=10, history=10, tracker="trk")
    view.add_tracks(tracks())
    with tracker_app(fake, view, counts=lambda stream: {"person:started": 3}) as http:
        assert http.get("/api/streams/cam1/counts").json() == {"stream": "cam1", "counts": {"person:started": 3}}
        assert http.get("/api/streams/cam2/counts").status_code == 404
    with tracker_app(fake, view) as http:
        assert http.get("/api/streams/cam1/counts").status_code == 404


def test_a_clip_runs_from_the_first_sighting_to_the_event_and_keeps_its_end_when_too_long() -> None:
    e = event(seq=100, kind="end")  # first seen at T0, last at T0 + 10
    assert clip_span(e, 2, 3, 60) == (T0, T0 + 13, 2)
    start, end, pre = clip_span(e, 2, 3, 12)
    assert (start, end, pre) == (T0 + 1, T0 + 13, 0)
    start, end, pre = clip_span(e, 2, 3, 14)
    assert (start, end) == (T0, T0 + 13) and pre == pytest.approx(1)


def test_the_page_has_the_grid_and_the_events_list(fake: fakeredis.FakeRedis) -> None:
    with app_with(fake, View(window_s=10, history=10)) as http:
        page = http.get("/").text
        me = http.get("/api/me").json()
    for anchor in ('id="tracking" hidden', 'id="grid"', 'id="events-body"', 'id="logout"', 'action="/logout"'):
        assert anchor in page
    assert me == {"user": None, "auth": None, "logout": False}


def test_the_tracker_settings() -> None:
    web = parse_config("sinks: [{kind: web, name: view, tracker: trk}]", environ={}).sink("view")
    assert isinstance(web, WebSinkConfig) and web.tracker == "trk" and web.trail == 20 and web.events == 100
    assert (web.clip_pre_roll_s, web.clip_post_roll_s, web.clip_max_s) == (2.0, 2.0, 60.0)
    with pytest.raises(ConfigError) as err:
        parse_config("sinks: [{kind: web, name: view, tracker: 'a:b', trail: -1, clip_max_frames: 1}]", environ={})
    text = "\n".join(err.value.problems)
    for field in ("sinks[0].web.tracker", "sinks[0].web.trail", "sinks[0].web.clip_max_frames"):
        assert field in text
