"""The web view in a real browser: Debian's headless Chromium, driven by Selenium, on real processes.

The whole stack (two synthetic cameras, the detector with the bundled demo model, the web sink) runs on an
embedded server; the page must list both streams with their fps, switch between them, show frames with the boxes
drawn (found in a screenshot by their colour, which the synthetic frames never contain) and list the detections.
A second test feeds hostile labels straight into Redis: they must show as text, never as markup. A third drives a
tracker's tracks and events into Redis and logs in through the form: the grid shows each camera with its track ids
and boxes, the events list their snapshots (or why one is gone) and clips, and nothing is served without a session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import cv2
import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect, read_entry
from common.wire import (
    FIELD,
    BestShot,
    Detection,
    Event,
    Frame,
    Result,
    Timings,
    TrackedObject,
    Tracks,
    decode,
    encode,
)
from sink.web.auth import hash_password
from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(480)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODEL = ROOT / "detector" / "models" / "shapes"
SHAPES = {"circle", "square", "triangle"}
T = TypeVar("T")


def is_box_red(bgr: np.ndarray) -> np.ndarray:
    """Pixels of the boxes' colour (sink.draw.BOX_COLOUR, pure red), with room for JPEG and scaling."""
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    mask: np.ndarray = (r > 180) & (g < 70) & (b < 70)
    return mask


# ---------------------------------------------------------------------------------------------------- helpers
class Procs:
    """Service processes this test started, each logging to a file; whatever is left is killed at the end."""

    def __init__(self, tmp: Path, config: Path, url: str) -> None:
        self.tmp, self.config, self.url = tmp, config, url
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": self.url, "PYTHONUNBUFFERED": "1"}
        with (self.tmp / f"{name}.log").open("wb") as log:  # a file, not a pipe: a full pipe would stall it
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.config), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM (a drain), then the exit code."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's Chromium, headless, through its own chromedriver (set explicitly: Selenium Manager never
    downloads anything)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver (.ci/run installs them)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chrome'}",
                ):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, to check for errors
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, check: Callable[[WebDriver], T], what: str, timeout: float = 30) -> T:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def shown(driver: WebDriver) -> dict[str, Any]:
    """What the page shows now, read in one go."""
    state: dict[str, Any] = driver.execute_script(
        """
        const img = document.getElementById("frame");
        const text = (id) => document.getElementById(id).textContent;
        return {
          buttons: Array.from(document.querySelectorAll("#streams button")).map((b) => b.dataset.stream),
          pressed: Array.from(document.querySelectorAll("#streams button[aria-pressed=true]")).map((b) => b.id),
          title: text("stream-title"), fps: text("fps"), p50: text("latency-p50"), p99: text("latency-p99"),
          info: text("frame-info"), status: text("status"), hash: location.hash,
          src: img.getAttribute("src") || "", stream: img.dataset.stream || "",
          loaded: img.complete && img.naturalWidth > 0,
          labels: Array.from(document.querySelectorAll("#detections-body td:nth-child(3)")).map((c) => c.textContent),
        };
        """
    )
    return state


def number(text: str) -> float:
    try:
        return float(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return 0.0


def console_errors(driver: WebDriver) -> list[str]:
    """SEVERE console entries (a blocked script or style, a failed request), but the favicon nobody serves."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e["message"] for e in entries if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def api_ready(port: int, streams: set[str]) -> bool:
    try:
        listed = httpx.get(f"http://127.0.0.1:{port}/api/streams", timeout=2).json()["streams"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    live = {s["name"] for s in listed if s["fps"] > 0 and s["frame_id"] and s["detections"] > 0}
    return streams <= live


# ---------------------------------------------------------------------------------------------------- the stack
def stack_config(tmp: Path, port: int) -> Path:
    config = tmp / "stack.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {tmp}}}}}
        streams: {{prefix: web, frames_maxlen: 500}}
        ingest:
          cameras:
            - {{name: east, source: {{kind: synthetic, seed: 41, width: 320, height: 240, fps: 4, shapes: 3}}}}
            - {{name: west, source: {{kind: synthetic, seed: 42, width: 320, height: 240, fps: 4, shapes: 4}}}}
        detector:
          pools:
            - name: main
              model: {{folder: {MODEL}, input_size: 256}}
              max_batch: 4
              block_ms: 500
              ignore_labels: ["NULL"]
        sinks:
          - {{kind: web, name: view, port: {port}, block_ms: 300, window_s: 10}}
        """)
    )
    return config


def test_the_page_shows_both_streams_live_switches_between_them_and_draws_the_boxes(
    tmp_path: Path, chrome: WebDriver
) -> None:
    port = free_port()
    config = stack_config(tmp_path, port)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        procs = Procs(tmp_path, config, server.url)
        try:
            web = procs.start("web", "sink", "--sink", "view", "--duration", "400")
            detector = procs.start("detector", "detector", "--replica", "r0", "--duration", "400")
            ingest = procs.start("ingest", "ingest", "--duration", "400")
            deadline = time.monotonic() + 240  # the detector loads TensorFlow first: slow on a busy 2-core machine
            while not api_ready(port, {"east", "west"}):
                for name, proc in (("web", web), ("detector", detector), ("ingest", ingest)):
                    assert proc.poll() is None, f"{name} exited:\n{procs.log(name)}"
                assert time.monotonic() < deadline, f"no live results on the page's API:\n{procs.log('web')}"
                time.sleep(0.5)

            chrome.get(f"http://127.0.0.1:{port}/")
            now = wait(chrome, lambda d: (s := shown(d))["buttons"] == ["east", "west"] and s, "both streams listed")
            first = wait(chrome, lambda d: (s := shown(d))["loaded"] and number(s["fps"]) > 0 and s["labels"] and s,
                         "the first stream's frame, fps and detections")  # fmt: skip
            assert first["title"] == "east" and first["stream"] == "east" and first["pressed"] == ["stream-east"]
            assert first["src"].startswith("/api/streams/east/frame.jpg?frame=")
            assert number(first["p50"]) > 0 and number(first["p99"]) >= number(first["p50"]), first
            assert set(first["labels"]) <= SHAPES, first["labels"]
            assert first["status"] == "live" and now["title"] in ("", "east")

            chrome.find_element(By.ID, "stream-west").click()
            west = wait(chrome, lambda d: (s := shown(d))["title"] == "west" and s["loaded"] and s["stream"] == "west"
                        and ", 0 detections" not in s["info"] and s, "the switch to west")  # fmt: skip
            assert west["src"].startswith("/api/streams/west/frame.jpg?frame=") and west["src"] != first["src"]
            assert west["pressed"] == ["stream-west"] and west["hash"] == "#west"
            assert number(west["fps"]) > 0, west

            # The screenshot: the boxes' colour within the image's rectangle, against the same frame undrawn.
            client: Client = connect(server.url)
            for _ in range(10):  # the page may move on to a newer frame meanwhile: take it again
                before = shown(chrome)
                png = chrome.get_screenshot_as_png()
                after = shown(chrome)
                if before["src"] == after["src"] and after["loaded"] and after["stream"] == "west":
                    break
                time.sleep(0.3)
            else:
                pytest.fail("the frame never held still for a screenshot")
            (tmp_path / "web_view.png").write_bytes(png)
            chrome.save_screenshot(str(tmp_path / "web_view_full.png"))
            rect = chrome.find_element(By.ID, "frame").rect
            shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            x, y, w, h = (round(rect[k]) for k in ("x", "y", "width", "height"))
            image = shot[y : y + h, x : x + w]
            frame_id = parse_qs(urlparse(after["src"]).query)["frame"][0]
            raw = read_entry(client, Keys("web").frames("west"), frame_id)
            assert raw is not None, "the frame shown is still in its stream"
            frame = decode(raw, Frame)
            decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None
            undrawn = cv2.resize(decoded, (w, h))
            red, red_before = int(is_box_red(image).sum()), int(is_box_red(undrawn).sum())
            print(f"box-coloured pixels: {red} in the screenshot's image ({w}x{h}), {red_before} in the frame itself")
            assert w >= 320 and h >= 240 and red >= 500 and red_before < 50, (red, red_before)
            chrome.find_element(By.ID, "stream-east").click()
            wait(chrome, lambda d: shown(d)["stream"] == "east", "the switch back to east")
            assert console_errors(chrome) == []
            client.close()

            assert procs.stop(web) == 0, procs.log("web")  # the first SIGTERM drains: a clean exit
            assert "stopping (signal)" in procs.log("web")
            for proc in (ingest, detector):
                procs.stop(proc)
        finally:
            procs.kill_all()


# ---------------------------------------------------------------------------------------------------- escaping
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


def push(client: Client, stream: str, seq: int, labels: list[str]) -> None:
    """A real JPEG frame, and a result for it with the given labels."""
    keys = Keys("web")
    image = np.full((240, 320, 3), 90, np.uint8)
    frame = Frame(
        stream=stream, seq=seq, capture_ts=time.time(), width=320, height=240, encoding="jpeg", image_width=320,
        image_height=240, data=cv2.imencode(".jpg", image)[1].tobytes(),
    )  # fmt: skip
    frame_id = client.xadd(keys.frames(stream), {FIELD: encode(frame)}).decode()
    result = Result(
        frame_id=frame_id, stream=stream, seq=seq, capture_ts=frame.capture_ts, width=320, height=240, pool="main",
        replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=time.time(),
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=12),
        detections=[Detection(label=label, class_id=0, score=0.8, box=(40, 40, 120, 120)) for label in labels],
    )  # fmt: skip
    client.xadd(keys.results(stream), {FIELD: encode(result)})


def test_labels_are_shown_as_text_the_port_is_checked_and_the_bounded_mode_ends_by_itself(
    tmp_path: Path, chrome: WebDriver
) -> None:
    port = free_port()
    config = tmp_path / "stack.yaml"
    config.write_text(f"streams: {{prefix: web}}\nsinks: [{{kind: web, name: view, port: {port}, block_ms: 200}}]\n")
    with EmbeddedServer(tmp_path / "v.sock") as server:
        procs = Procs(tmp_path, config, server.url)
        client: Client = connect(server.url)
        feeding = threading.Event()

        def feed() -> None:
            seq = 0
            while not feeding.wait(0.2):
                push(client, "lobby", seq, [HOSTILE, "</td><td>x"])
                seq += 1

        feeder = threading.Thread(target=feed, daemon=True)
        try:
            web = procs.start("web", "sink", "--sink", "view", "--until-idle", "3", "--duration", "120")
            feeder.start()
            deadline = time.monotonic() + 60
            while not api_ready(port, {"lobby"}):
                assert web.poll() is None and time.monotonic() < deadline, procs.log("web")
                time.sleep(0.3)
            # A second web view on the same port fails at once, saying so.
            taken = procs.start("taken", "sink", "--sink", "view")
            assert taken.wait(60) == 1 and "cannot serve on 127.0.0.1" in procs.log("taken"), procs.log("taken")

            chrome.get(f"http://127.0.0.1:{port}/")
            state = wait(chrome, lambda d: (s := shown(d))["labels"] and s["loaded"] and s, "the hostile labels")
            assert set(state["labels"]) == {HOSTILE, "</td><td>x"}
            assert chrome.title == "streamyolo live view"  # the onerror handler never ran
            assert chrome.find_elements(By.CSS_SELECTOR, "#detections-body img, #detections-body td td") == []
            assert console_errors(chrome) == []
            for path in ("/api/streams/nope/frame.jpg", "/api/streams/a:b/detections"):
                assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code in (400, 404)
        finally:
            feeding.set()
            feeder.join(5)
        # Results stop: --until-idle ends the real loop by itself.
        assert web.wait(30) == 0, procs.log("web")
        assert "stopping (idle for 3 s)" in procs.log("web")
        client.close()
        procs.kill_all()


# ---------------------------------------------------------------------------------------------------- tracker, login
USERS_ENV = "STREAMYOLO_TEST_WEB_USERS"


class TrackerFeed:
    """Frames of two cameras, each with the tracks of two objects moving across and their events, written into a
    real server as the tracker sink would: a Tracks message per frame, a start event per object, a line crossing,
    and an event whose best frame was trimmed away long ago."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        first: dict[str, tuple[str, float]] = {}
        seq = 0
        while not self.stop.wait(0.25):
            for camera, track_ids in (("east", (1, 2)), ("west", (7, 8))):
                self.push(camera, seq, track_ids, first)
            seq += 1

    def push(self, camera: str, seq: int, track_ids: tuple[int, int], first: dict[str, tuple[str, float]]) -> None:
        now = time.time()
        image = np.full((240, 320, 3), 90, np.uint8)
        x = 20 + (seq * 6) % 200
        boxes = {track_ids[0]: (x, 40, x + 60, 120), track_ids[1]: (200 - x // 2, 130, 260 - x // 2, 220)}
        for x1, y1, x2, y2 in boxes.values():
            cv2.rectangle(image, (x1, y1), (x2, y2), (200, 200, 200), cv2.FILLED)
        frame = Frame(
            stream=camera, seq=seq, capture_ts=now, width=320, height=240, encoding="jpeg", image_width=320,
            image_height=240, data=cv2.imencode(".jpg", image)[1].tobytes(),
        )  # fmt: skip
        frame_id = self.client.xadd(self.keys.frames(camera), {FIELD: encode(frame)}, maxlen=500).decode()
        first.setdefault(camera, (frame_id, now))
        objects = [
            TrackedObject(track_id=t, label="person" if t % 2 else "car", class_id=0, score=0.9, box=box)
            for t, box in boxes.items()
        ]
        tracks = Tracks(tracker="trk", frame_id=frame_id, stream=camera, seq=seq, capture_ts=now, width=320,
                        height=240, objects=objects, untracked=0, skipped=0)  # fmt: skip
        self.client.xadd(self.keys.tracks("trk", camera), {FIELD: encode(tracks)})
        best_id, first_ts = first[camera]
        if seq in (1, 8):
            for obj in objects:
                n = 0 if seq == 1 else 1
                extra: dict[str, Any] = {"event": "start"} if n == 0 else {
                    "event": "update", "change": "line_cross", "line": "door", "direction": "in"}  # fmt: skip
                self.event(camera, obj, n, frame_id, seq, now, first_ts, best_id, extra)
        if seq == 2:  # its best frame is long gone from the frames stream
            ghost = TrackedObject(track_id=99, label="dog", class_id=0, score=0.7, box=(10, 10, 50, 50))
            self.event(camera, ghost, 0, frame_id, seq, now, first_ts, "1-0", {"event": "start"})

    def event(self, camera: str, obj: TrackedObject, n: int, frame_id: str, seq: int, now: float, first_ts: float,
              best_id: str, extra: dict[str, Any]) -> None:  # fmt: skip
        event = Event.model_validate({
            "event_id": f"trk:{camera}:{obj.track_id}:{n}", "tracker": "trk", "stream": camera,
            "track_id": obj.track_id, "label": obj.label, "class_id": 0, "frame_id": frame_id, "seq": seq,
            "capture_ts": now, "score": obj.score, "box": obj.box, "first_seen_ts": first_ts, "last_seen_ts": now,
            "duration_s": now - first_ts, "zones": [], "width": 320, "height": 240,
            "best": BestShot(frame_id=best_id, seq=0, capture_ts=first_ts, score=obj.score, box=obj.box), **extra,
        })  # fmt: skip
        self.client.xadd(self.keys.events("trk", camera), {FIELD: encode(event)})


def grid(driver: WebDriver) -> dict[str, Any]:
    """What the tracker's page shows now."""
    state: dict[str, Any] = driver.execute_script(
        """
        const tiles = Array.from(document.querySelectorAll("#grid figure"));
        return {
          tracking: !document.getElementById("tracking").hidden,
          single: !document.getElementById("single").hidden,
          tiles: tiles.map((t) => t.dataset.stream),
          ids: Object.fromEntries(tiles.map((t) => [t.dataset.stream, t.querySelector(".track-ids").textContent])),
          counts: Object.fromEntries(tiles.map((t) => [t.dataset.stream, t.querySelector(".counts").textContent])),
          loaded: tiles.every((t) => { const i = t.querySelector("img"); return i.complete && i.naturalWidth > 0; }),
          events: Array.from(document.querySelectorAll("#events-body tr")).map((r) =>
            Array.from(r.cells).slice(0, 7).map((c) => c.textContent)),
          shots: Array.from(document.querySelectorAll("#events-body img")).filter(
            (i) => i.complete && i.naturalWidth > 0).length,
          gone: Array.from(document.querySelectorAll("#events-body .gone")).map((g) => g.textContent),
          clips: Array.from(document.querySelectorAll("#events-body a.clip")).map((a) => a.getAttribute("href")),
          user: document.getElementById("user").textContent,
          logout: !document.getElementById("logout").hidden,
        };
        """
    )
    return state


def test_the_tracker_grid_behind_a_login(tmp_path: Path, chrome: WebDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv(USERS_ENV, f"ops:{hash_password('open sesame', n=2**14)}")
    config = tmp_path / "stack.yaml"
    config.write_text(textwrap.dedent(f"""\
        streams: {{prefix: web}}
        sinks:
          - {{kind: web, name: view, port: {port}, block_ms: 200, tracker: trk, trail: 8,
              auth: {{users_env: {USERS_ENV}}}}}
        """))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with EmbeddedServer(tmp_path / "v.sock") as server:
        procs = Procs(tmp_path, config, server.url)
        client: Client = connect(server.url)
        feed = TrackerFeed(client, Keys("web"))
        client.hset(Keys("web").counts("trk", "east"), mapping={"person:started": 1, "car:started": 1, "note": "x"})
        try:
            web = procs.start("web", "sink", "--sink", "view", "--duration", "200")
            feed.thread.start()
            deadline = time.monotonic() + 60
            while True:  # up once the login form answers
                assert web.poll() is None and time.monotonic() < deadline, procs.log("web")
                try:
                    if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            # Nothing but the form without a session: no API, no page, no static file, no frame.
            for path in ("/api/streams", "/api/events", "/api/streams/east/tracks.jpg", "/api/me"):
                assert httpx.get(base + path).status_code == 401, path
            for path in ("/", "/static/view.js"):
                refused = httpx.get(base + path)
                assert refused.status_code == 303 and refused.headers["location"] == "/login", path

            chrome.get(base + "/")
            wait(chrome, lambda d: d.current_url == base + "/login", "the redirect to the login page")
            chrome.find_element(By.ID, "user").send_keys("ops")
            chrome.find_element(By.ID, "password").send_keys("wrong")
            chrome.find_element(By.ID, "login").click()
            message = "const m = document.getElementById('message'); return m ? m.textContent : '';"  # no stale node
            wait(chrome, lambda d: "wrong user name or password" in d.execute_script(message),
                 "the wrong password refused")  # fmt: skip
            chrome.find_element(By.ID, "user").send_keys("ops")
            chrome.find_element(By.ID, "password").send_keys("open sesame")
            chrome.find_element(By.ID, "login").click()
            wait(chrome, lambda d: d.current_url == base + "/", "the page after the login")
            cookies = {c["name"]: c for c in chrome.get_cookies()}
            session = cookies["__Host-streamyolo-session"]
            assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"

            # The user's name comes from its own request (/api/me): waited for like the tiles, not raced.
            now = wait(chrome, lambda d: (s := grid(d))["tiles"] == ["east", "west"] and s["loaded"]
                       and "#1 person" in s["ids"]["east"] and "#8 car" in s["ids"]["west"] and s["user"] and s,
                       "the grid")  # fmt: skip
            assert now["tracking"] and not now["single"] and now["user"] == "ops" and now["logout"]
            events = wait(chrome, lambda d: (s := grid(d))["shots"] >= 4 and len(s["gone"]) == 2
                          and any("line cross" in " ".join(r) for r in s["events"]) and s, "the events")  # fmt: skip
            rows = {(r[1], r[4], r[2]) for r in events["events"]}
            assert {("east", "#1", "start"), ("west", "#8", "start"), ("east", "#2", "update: line cross")} <= rows
            assert ("west", "#99", "start") in rows and all("frames_maxlen" in g for g in events["gone"])
            counted = wait(chrome, lambda d: (s := grid(d))["counts"]["east"] and s, "the counts")
            assert counted["counts"] == {"east": "car:started 1 \u00b7 person:started 1", "west": ""}
            crossing = next(r for r in events["events"] if r[2] == "update: line cross")
            assert crossing[5] == "line door (in)" and crossing[6].endswith(" s")

            # The tiles' boxes, in the screenshot: red, which the frames never hold.
            tile = chrome.find_element(By.CSS_SELECTOR, "#tile-east img").rect
            png = chrome.get_screenshot_as_png()
            (tmp_path / "tracker_view.png").write_bytes(png)
            shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            x, y, w, h = (round(tile[k]) for k in ("x", "y", "width", "height"))
            assert w >= 200 and int(is_box_red(shot[y : y + h, x : x + w]).sum()) > 200

            # The clip of an event, fetched with the page's session: an MP4.
            href = next(h for h in events["clips"] if "/east/trk%3Aeast%3A1%3A0/" in h)
            fetched: dict[str, Any] = chrome.execute_async_script(
                """
                const done = arguments[arguments.length - 1];
                fetch(arguments[0]).then(async (r) => done({status: r.status, type: r.headers.get("content-type"),
                  head: Array.from(new Uint8Array(await r.arrayBuffer()).slice(4, 8))}));
                """,
                href,
            )  # fmt: skip
            assert fetched == {"status": 200, "type": "video/mp4", "head": list(b"ftyp")}, fetched
            # But the wrong password's 401 and the 404s of the snapshots whose frames are gone, nothing failed.
            expected = (f"{base}/login - ", "trk%3Aeast%3A99%3A0/snapshot.jpg", "trk%3Awest%3A99%3A0/snapshot.jpg")
            assert [e for e in console_errors(chrome) if not any(x in e for x in expected)] == []

            chrome.find_element(By.CSS_SELECTOR, "#logout button").click()
            wait(chrome, lambda d: d.current_url == base + "/login", "the logout")
            chrome.get(base + "/api/streams")
            assert "log in first" in chrome.find_element(By.TAG_NAME, "body").text
        finally:
            feed.stop.set()
            feed.thread.join(5)
            procs.kill_all()
            client.close()
